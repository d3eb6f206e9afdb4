"""GLeaD: a generator-leading reconstruction task for the discriminator (METHOD 6).

D gets a light decoder h of 1x1 convolutions (the GLeaD appendix, Table S2: a feature-pyramid
top-down path over D's multi-level features) that predicts a feature map; the generator's fixed
*tail* turns it into an image, and D (with h) is trained to make that reconstruction match D's
own input, real or fake. G's loss is unchanged.

A generator declares its tail as an attribute ``tail``: an ``nn.Sequential`` of the layers its
forward runs last, in order, on one feature map, whose output is G's output (U-Net: the outermost
up block; ResNet: pad + 7x7 conv + Tanh; SRResNet: the 9x9 conv + Tanh after upsampling; SAGAN:
the last transposed conv + Tanh). Pruning narrows the tail's input channels, so the decoder's
output shape is measured on an example forward (:func:`tail_input_shape`), never assumed.

GLeaD reconstructs through a StyleGAN generator whose tail is also modulated by latent codes w;
our generators' tails take a feature map alone, so h predicts the spatial representation only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import RecipeError
from ...nets.layers import frozen_call, probe_forward

DISTANCES = ("pixel", "perceptual")


class GLeaDUnsupported(RecipeError):
    """The recipe asks for ``discriminator.mode: glead`` with a generator that has no tail."""


def generator_tail(generator: nn.Module, family: str | None = None) -> nn.Sequential:
    """The generator's tail: the layers that map its last feature map to the image.

    Args:
        generator: a generator of ``gancompress.nets`` (possibly pruned).
        family: the family's name, for the error message (default: the generator's class name).

    Raises:
        GLeaDUnsupported: the generator declares no ``tail``.
    """
    tail = getattr(generator, "tail", None)
    if not isinstance(tail, nn.Sequential) or len(tail) == 0:
        who = family or type(generator).__name__
        raise GLeaDUnsupported(f"discriminator.mode glead: the {who} generator declares no tail; "
                               "use selective, plain or dmd")
    return tail


def tail_input_shape(generator: nn.Module, example: torch.Tensor) -> tuple[int, int, int]:
    """(C, H, W) of the feature map entering the generator's tail, for an input like ``example``.

    Measured with a forward pre-hook on the tail's first layer during one forward of ``example``
    in eval mode without gradients (the training mode is restored afterwards). The first layer is
    hooked rather than the tail itself because a tail may be a view over layers that forward runs
    inside a larger Sequential (the ResNet generator's), so the view itself is never called.

    Args:
        generator: the generator, full width or pruned.
        example: a generator input batch, e.g. ``family.example_input(name, 1)``.

    Raises:
        GLeaDUnsupported: the generator declares no tail.
        RuntimeError: the forward pass never ran the tail.
    """
    entry = generator_tail(generator)[0]
    seen: list[torch.Size] = []
    # The tail runs last, so when its first layer runs more than once the last call is the tail's.
    handle = entry.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].shape))
    try:
        probe_forward(generator, example)
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{type(generator).__name__}.forward never ran the first layer of its tail "
                           f"({type(entry).__name__}); its tail attribute is wrong")
    c, h, w = seen[-1][1:]
    return int(c), int(h), int(w)


class GLeaDDecoder(nn.Module):
    """GLeaD's decoder h: 1x1 convs with a feature-pyramid top-down path (appendix Table S2).

    Every level gets a lateral 1x1 conv to ``width`` channels. Starting from the deepest level,
    the running map goes through a 1x1 conv, is upsampled (bilinear) to the next shallower
    level's size and added to that level's lateral map; after the shallowest level a 1x1 conv
    maps ``width`` to the tail's C channels and the result is resized (bilinear) to (H, W).
    As in Table S2 there is no activation: D's features are already non-linear, and the decoder
    stays a light read-out of them.

    Args:
        feature_channels: channels C_i of D's feature maps, shallow to deep.
        out_shape: (C, H, W) of the tail's input (see :func:`tail_input_shape`).
        width: channels of the pyramid's 1x1 convs (Table S2 uses 512 for a 512-wide D).

    Shapes: a list of (N, C_i, H_i, W_i), shallow to deep (H_i non-increasing) -> (N, C, H, W).
    """

    def __init__(self, feature_channels: list[int] | tuple[int, ...], out_shape: tuple[int, int, int],
                 width: int = 64):
        super().__init__()
        if not feature_channels:
            raise ValueError("GLeaDDecoder needs at least one discriminator feature level")
        if len(out_shape) != 3 or min(out_shape) < 1:
            raise ValueError(f"out_shape must be (C, H, W) with positive sizes, got {tuple(out_shape)}")
        self.feature_channels = tuple(int(c) for c in feature_channels)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.width = int(width)
        self.lateral = nn.ModuleList([nn.Conv2d(c, width, 1) for c in self.feature_channels])
        # top_down[i] transforms the running map before it joins level i (levels 0 .. L-2).
        self.top_down = nn.ModuleList([nn.Conv2d(width, width, 1) for _ in self.feature_channels[1:]])
        self.out = nn.Conv2d(width, self.out_shape[0], 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        if len(feats) != len(self.lateral):
            raise ValueError(f"GLeaDDecoder was built for {len(self.lateral)} feature levels, got {len(feats)}")
        h = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            up = F.interpolate(self.top_down[i](h), size=feats[i].shape[-2:], mode="bilinear",
                               align_corners=False)
            h = up + self.lateral[i](feats[i])
        # A 1x1 conv commutes with bilinear resizing, so project first, at the smaller size.
        out = self.out(h)
        if out.shape[-2:] != self.out_shape[1:]:
            out = F.interpolate(out, size=self.out_shape[1:], mode="bilinear", align_corners=False)
        return out


def make_glead_head(generator: nn.Module, feature_channels: list[int], example: torch.Tensor,
                    width: int = 64, family: str | None = None) -> GLeaDDecoder:
    """The decoder for ``generator``'s tail: its output shape measured on ``example``.

    Args:
        generator: the generator whose tail reconstructs D's input (full width or pruned).
        feature_channels: channels of the D feature maps the decoder reads, shallow to deep
            (e.g. ``gancompress.method.taps.tap_channels(D, D.mask_points(), d_example)``).
        example: a generator input batch (``family.example_input(name, 1)``).
        width: channels of the decoder's 1x1 convs (``discriminator.glead.width``).
        family: the family's name, for the error message.

    Raises:
        GLeaDUnsupported: the generator declares no tail.
    """
    generator_tail(generator, family)
    return GLeaDDecoder(feature_channels, tail_input_shape(generator, example), width)


def reconstruction_loss(decoder: GLeaDDecoder, tail: nn.Module, feats: list[torch.Tensor],
                        image: torch.Tensor, distance: str = "pixel", vgg: nn.Module | None = None) -> torch.Tensor:
    """GLeaD's reconstruction term for D: ``dist(tail(decoder(feats)), image)``.

    The gradient reaches the decoder and, through ``feats``, D; the generator's tail is applied
    with detached parameters, so the generator receives none whatever its ``requires_grad``.
    The tail runs in its current train/eval mode.

    Args:
        decoder: the :class:`GLeaDDecoder`.
        tail: the generator's tail (:func:`generator_tail`).
        feats: D's feature maps for this batch, shallow to deep, each (N, C_i, H_i, W_i).
        image: D's input image (N, 3, H, W) in [-1, 1] without any condition channels (for
            pix2pix, the real or generated photo, not concat(A, photo)); it is the target and
            is detached.
        distance: 'pixel' (L1) or 'perceptual' (L1 between ``vgg`` feature maps).
        vgg: for 'perceptual', a frozen feature extractor for images in [-1, 1], e.g.
            ``gancompress.nets.vgg.VGGFeatures``.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: unknown distance, 'perceptual' without ``vgg``, or a reconstruction whose
            shape differs from ``image``'s.
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown GLeaD distance {distance!r} (valid: {', '.join(DISTANCES)})")
    if distance == "perceptual" and vgg is None:
        raise ValueError("GLeaD's perceptual distance needs a feature extractor (vgg)")
    recon = frozen_call(tail, decoder(feats))
    if recon.shape[1:] != image.shape[1:]:
        raise ValueError(
            f"GLeaD: the generator's tail makes {tuple(recon.shape[1:])} images but D's input image is "
            f"{tuple(image.shape[1:])}; pass the image without condition channels, at the generator's "
            "output size (a family whose D sees resized images is not supported)")
    target = image.detach()
    # float32 distances: under autocast the reconstruction may be half precision.
    if distance == "pixel":
        return F.l1_loss(recon.float(), target.float())
    with torch.no_grad():
        target_feats = vgg(target)
    return F.l1_loss(vgg(recon).float(), target_feats.float())


class GLeaDTask:
    """GLeaD's reconstruction task for the student discriminators (``discriminator.mode: glead``).

    Each student D gets a decoder over the features of its mask points; D's loss gains
    ``weight * dist(tail(decoder(D features)), image)`` on real and fake inputs, the tail being
    the student generator's own (applied with detached weights: G's loss is unchanged).

    Args:
        family: the family adapter (its generator names, example inputs and D inputs).
        gens: the student generators by name (their tails reconstruct).
        discs: the student discriminators by name.
        weight, distance, width: ``discriminator.glead``'s settings.
        vgg: for the 'perceptual' distance, the frozen VGG feature extractor.
        device: where the decoders live.
    """

    def __init__(self, family, gens: nn.ModuleDict, discs: nn.ModuleDict, *, weight: float, distance: str,
                 width: int, vgg: nn.Module | None, device: torch.device):
        from ..taps import FeatureTap, tap_channels

        self.weight, self.distance, self.vgg = weight, distance, vgg
        self.gens = gens
        names = family.generator_names
        inputs = {n: family.example_input(n, 1, device) for n in names}
        self.decoders = nn.ModuleDict()
        self.taps = {}
        for n in names:
            generator_tail(gens[n], family.name)
            points = discs[n].mask_points()
            was = gens[n].training
            gens[n].eval()
            with torch.no_grad():
                d_example = family.d_input(n, inputs, gens[n](inputs[n]))
            gens[n].train(was)
            channels = tap_channels(discs[n], points, d_example)
            self.decoders[n] = make_glead_head(gens[n], channels, inputs[n], width, family.name).to(device)
            self.taps[n] = FeatureTap(points)
        self._total: list[torch.Tensor] = []

    def term(self, name: str, image: torch.Tensor) -> torch.Tensor:
        """The weighted reconstruction of ``image`` from the features D ``name`` just computed."""
        loss = reconstruction_loss(self.decoders[name], generator_tail(self.gens[name]), self.taps[name].outputs,
                                   image, self.distance, self.vgg)
        self._total.append(loss.detach())
        return self.weight * loss

    def pop_total(self) -> torch.Tensor:
        """The unweighted reconstruction losses since the last call, summed (for the log)."""
        total = torch.stack(self._total).sum()
        self._total = []
        return total
