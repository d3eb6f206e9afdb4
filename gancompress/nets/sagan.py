"""SAGAN for 64x64 images (heykeetae/Self-Attention-GAN layout) and spectral-norm utilities.

Spectral norm is torch's parametrization (``torch.nn.utils.parametrizations.spectral_norm``),
applied to the four hidden transposed convs of G and the four hidden convs of D; the output
layers and the attention convs are plain, as in heykeetae's code. torch-pruning cannot prune a
parametrized weight, so pruning runs between :func:`strip_spectral_norm` and
:func:`restore_spectral_norm`.

Semantics of strip + restore (what the tests check):

- ``strip_spectral_norm`` replaces each parametrized weight by the tensor the module uses in
  eval mode, ``W / sigma_hat`` with ``sigma_hat = u^T W v`` from the stored power-iteration
  vectors; no power iteration runs. The stripped net computes exactly what the parametrized net
  computes in eval mode.
- ``restore_spectral_norm`` re-applies spectral norm to that stored weight ``W'``, starting its
  power iteration at the exact top singular pair, so the next forward uses ``W' / sigma(W')``
  with the true ``sigma``. Since ``W'`` was already normalised, ``sigma(W') ~= 1``: exactly 1
  when the stripped net's u, v had converged (as right after a restore), otherwise
  ``sigma_true(W) / sigma_hat(W) >= 1``, the error that training's power iteration had left.
  An unpruned, converged net therefore computes the same function after strip + restore.
- A PRUNED weight has ``sigma <= 1`` (removing rows or columns cannot raise the largest
  singular value), so restoring scales it back up to spectral norm 1: the layer's output grows
  by ``1 / sigma(W'_pruned)``. That is what spectral norm means (its output does not depend on
  the weight's scale), so no stored weight could preserve the pruned function exactly. In G
  the BatchNorm after each such conv absorbs the scale in training mode; in D it scales the
  block's pre-attention output.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``out = gamma * attn(x) + x``.

    ``attn(x) = value(x) @ softmax(query(x)^T key(x))^T`` over the H*W positions, with 1x1 convs
    query, key: C -> C//8 and value: C -> C; ``gamma`` is a scalar initialised to 0, so the block
    starts as the identity.

    Args:
        channels: C, the input and output channels (tied by the residual term).

    Shapes: (N, C, H, W) -> (N, C, H, W); the attention map is (N, H*W, H*W).

    torch-pruning sees this block as one custom leaf (``gancompress.method.layer_pruners``): its input and
    output channels are one set, and the query/key width is not pruned.
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)
        self.query_conv = nn.Conv2d(channels, inner, 1)
        self.key_conv = nn.Conv2d(channels, inner, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        q = self.query_conv(x).flatten(2)  # (N, C', HW)
        k = self.key_conv(x).flatten(2)  # (N, C', HW)
        v = self.value_conv(x).flatten(2)  # (N, C, HW)
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (N, HW, HW)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(n, -1, h, w)
        return self.gamma * out + x

    def extra_macs(self, inputs: tuple, output: torch.Tensor) -> int:
        """MACs of the two batched matmuls, which thop does not see (its 1x1 convs it does).

        ``q^T k`` costs N*HW*HW*C' and ``v attn^T`` costs N*HW*HW*C, counted over the batch as
        thop counts convs.
        """
        x = inputs[0]
        n, _, h, w = x.shape
        positions = h * w
        return int(n * positions * positions
                   * (self.query_conv.out_channels + self.value_conv.out_channels))


def _sn_block(conv: nn.Module, norm: nn.Module | None, act: nn.Module) -> nn.Sequential:
    layers = [spectral_norm(conv)]
    if norm is not None:
        layers.append(norm)
    layers.append(act)
    return nn.Sequential(*layers)


class SAGANGenerator(nn.Module):
    """SAGAN generator for 64x64 images.

    Layout (heykeetae, imsize 64): l1 z -> 8*ngf at 4x4, l2 -> 4*ngf at 8x8, l3 -> 2*ngf at
    16x16, attn1, l4 -> ngf at 32x32, attn2, last -> 3 at 64x64 + Tanh. l1..l4 are spectral-norm
    transposed convs (kernel 4; stride 2, padding 1 after l1) + BatchNorm + ReLU; ``last`` is a
    plain transposed conv.

    Args:
        z_dim: latent size.
        ngf: width of l4; l1 has 8*ngf channels.

    Shapes: z (N, z_dim) or (N, z_dim, 1, 1) -> (N, 3, 64, 64) in [-1, 1].
    """

    def __init__(self, z_dim: int = 128, ngf: int = 64):
        super().__init__()
        up = dict(kernel_size=4, stride=2, padding=1)
        self.l1 = _sn_block(nn.ConvTranspose2d(z_dim, ngf * 8, 4), nn.BatchNorm2d(ngf * 8),
                            nn.ReLU())
        self.l2 = _sn_block(nn.ConvTranspose2d(ngf * 8, ngf * 4, **up), nn.BatchNorm2d(ngf * 4),
                            nn.ReLU())
        self.l3 = _sn_block(nn.ConvTranspose2d(ngf * 4, ngf * 2, **up), nn.BatchNorm2d(ngf * 2),
                            nn.ReLU())
        self.attn1 = SelfAttention(ngf * 2)
        self.l4 = _sn_block(nn.ConvTranspose2d(ngf * 2, ngf, **up), nn.BatchNorm2d(ngf), nn.ReLU())
        self.attn2 = SelfAttention(ngf)
        self.last = nn.Sequential(nn.ConvTranspose2d(ngf, 3, **up), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z.reshape(z.shape[0], -1, 1, 1)
        h = self.l3(self.l2(self.l1(h)))
        h = self.attn2(self.l4(self.attn1(h)))
        return self.last(h)

    @property
    def tail(self) -> nn.Sequential:
        """``last`` (transposed conv to RGB + Tanh), the last module forward runs.

        It maps attn2's output (N, C, 32, 32) to the image (N, 3, 64, 64); C is ngf, fewer once
        pruned. GLeaD reconstructs through it (``gancompress.method.discriminators.glead``).
        """
        return self.last

    def output_conv(self) -> nn.ConvTranspose2d:
        """The image output layer, which pruning must leave alone."""
        return self.last[0]

    def distill_points(self) -> list[nn.Module]:
        """Modules whose outputs are distilled (GCC Table II: convs 2 and 4 of 5).

        The 5 convs in forward order are l1, l2, l3, l4, last (attention convs not counted);
        conv 2 is followed by a ReLU, which is taken; conv 4's block is followed by attn2, whose
        output is taken, as the official GCC code taps it: ``[l2 ReLU, attn2]`` (4*ngf and ngf
        channels).
        """
        return [self.l2[-1], self.attn2]


class SAGANDiscriminator(nn.Module):
    """SAGAN discriminator for 64x64 images.

    Four blocks of spectral-norm conv (kernel 4, stride 2, padding 1) + LeakyReLU(0.1), widths
    ndf, 2ndf, 4ndf, 8ndf; blocks 3 and 4 end with a :class:`SelfAttention`; the head is a plain
    4x4 conv to one logit.

    Args:
        ndf: width of the first block.

    Shapes: (N, 3, 64, 64) -> (N, 1) logits.
    """

    def __init__(self, ndf: int = 64):
        super().__init__()
        widths = [3, ndf, ndf * 2, ndf * 4, ndf * 8]
        blocks = []
        for i in range(4):
            block = _sn_block(nn.Conv2d(widths[i], widths[i + 1], 4, 2, 1), None, nn.LeakyReLU(0.1))
            if i >= 2:
                block.append(SelfAttention(widths[i + 1]))
            blocks.append(block)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(ndf * 8, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for b in self.blocks:
            h = b(h)
        return self.head(h).flatten(1)

    def mask_points(self) -> list[nn.Module]:
        """Modules whose outputs the selective discriminator masks: the LeakyReLU after each
        spectral-norm conv (so in blocks 3 and 4 the mask acts before the attention)."""
        return [b[1] for b in self.blocks]

    def feature_points(self) -> list[nn.Module]:
        """Modules whose outputs the D-feature distillation terms read: the mask points (the
        convs have no norm layer)."""
        return self.mask_points()


def _spectral_norm_of(module: nn.Module) -> _SpectralNorm | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    found = [p for p in module.parametrizations.weight if isinstance(p, _SpectralNorm)]
    if not found:
        return None
    if len(module.parametrizations.weight) > 1:
        raise ValueError(f"{type(module).__name__} has parametrizations besides spectral norm on "
                         "its weight; strip_spectral_norm would drop them")
    return found[0]


@torch.no_grad()
def strip_spectral_norm(model: nn.Module) -> list[nn.Module]:
    """Replace every spectral-norm parametrization in ``model`` by a plain weight.

    The kept weight is the one the module uses in eval mode (no power iteration runs), so the
    stripped model computes what the parametrized one computes in eval mode. Optimisers holding
    the old ``parametrizations.weight.original`` tensors must be rebuilt.

    Args:
        model: any module tree.

    Returns:
        The modules that had spectral norm, in ``model.modules()`` order, to hand to
        :func:`restore_spectral_norm`.
    """
    modules = [m for m in model.modules() if _spectral_norm_of(m) is not None]
    for m in modules:
        _spectral_norm_of(m).eval()
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return modules


@torch.no_grad()
def restore_spectral_norm(modules: list[nn.Module], n_power_iterations: int = 5) -> None:
    """Re-apply spectral norm to ``modules`` (after pruning, say) with an accurate sigma.

    Each module gets ``spectral_norm(m)`` with torch's defaults (one power iteration per
    training forward, as SAGAN; dim 1 for transposed convs, else 0). Its power-iteration vectors
    u, v are then set to the exact top singular pair of the weight matrix (an SVD; the matrices
    are at most a few hundred by a few thousand) and ``n_power_iterations`` of torch's own power
    iterations follow, so the next forward divides by the true largest singular value. (From
    torch's random start, 20 iterations still left sigma up to 4% off on a 64-wide SAGAN D,
    changing its logits by several percent; the exact start removes that error, and the
    iterations after it only confirm the fixed point.) See the module docstring for what this
    does to the computed function.

    Args:
        modules: modules with a plain ``weight``, e.g. the list from
            :func:`strip_spectral_norm`.
        n_power_iterations: power iterations run after the exact start.
    """
    for m in modules:
        spectral_norm(m)
        sn = _spectral_norm_of(m)
        weight_mat = sn._reshape_weight_to_matrix(m.parametrizations.weight.original)
        u, _, vh = torch.linalg.svd(weight_mat, full_matrices=False)
        sn._u.copy_(u[:, 0])
        sn._v.copy_(vh[0])
        sn._power_method(weight_mat, n_power_iterations)


def fold_spectral_norm(model: nn.Module) -> list[nn.Module]:
    """Fold spectral norm into plain weights for export; same as :func:`strip_spectral_norm`."""
    return strip_spectral_norm(model)
