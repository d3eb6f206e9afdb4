"""SRResNet generator and SRGAN discriminator (sgrvinod/a-PyTorch-Tutorial-to-Super-Resolution
layout), with the sub-pixel upsampling block as one module that ``gancompress.method.layer_pruners`` prunes.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SubPixelBlock(nn.Module):
    """Conv to ``out_channels * scale**2`` channels, PixelShuffle(scale), per-channel PReLU.

    PixelShuffle builds output channel c from conv channels ``c*scale**2 ... c*scale**2 +
    scale**2 - 1``, so pruning output channel c removes those filters, their bias entries and
    PReLU parameter c (``gancompress.method.layer_pruners.SubPixelPruner``).

    Args:
        in_channels: input channels.
        out_channels: channels after the shuffle.
        scale: upscaling factor of this block.
        kernel_size: of the conv (padding keeps the size).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, scale*H, scale*W).
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * scale ** 2, kernel_size,
                              padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(scale)
        self.prelu = nn.PReLU(out_channels)

    @property
    def scale(self) -> int:
        return self.shuffle.upscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.shuffle(self.conv(x)))

    def channel_scores(self, method: str) -> torch.Tensor:
        """Importance of each output channel, shape (out_channels,).

        Args:
            method: 'l1': mean |w| over the scale**2 filters that the shuffle folds into the
                channel; 'slimming' is not defined (the block has no norm) and raises ValueError.
        """
        if method == "l1":
            w = self.conv.weight.detach()
            return w.abs().reshape(w.shape[0] // self.scale ** 2, -1).mean(1)
        if method == "slimming":
            raise ValueError("SubPixelBlock has no norm layer, so it has no slimming score")
        raise ValueError(f"unknown scoring method {method!r} (valid: l1, slimming)")


class SRResidualBlock(nn.Module):
    """``x + BN(conv3(PReLU(BN(conv3(x)))))``.

    Args:
        channels: channels in and out (tied to the trunk by the add).

    The block's output (after the add) is its distillation tap.

    Shapes: (N, channels, H, W) -> (N, channels, H, W).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                   nn.BatchNorm2d(channels), nn.PReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                   nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class SRResNet(nn.Module):
    """SRResNet: 9x9 conv + PReLU, residual blocks, conv3 + BN + global skip, log2(scale)
    :class:`SubPixelBlock` (x2 each), 9x9 conv + Tanh.

    Args:
        scale: upscaling factor, a power of 2.
        ngf: trunk width.
        n_blocks: number of residual blocks (16 in SRResNet).

    Shapes: (N, 3, H, W) -> (N, 3, scale*H, scale*W) in [-1, 1].

    ``tail`` (the 9x9 conv + Tanh after upsampling) maps the upsampled features (N, C, scale*H,
    scale*W), C = ngf or fewer once pruned, to the image; GLeaD reconstructs through it
    (``gancompress.method.discriminators.glead``), as through the other generators' ``tail``.
    """

    def __init__(self, scale: int = 4, ngf: int = 64, n_blocks: int = 16):
        super().__init__()
        n_up = int(round(math.log2(scale)))
        if scale < 2 or 2 ** n_up != scale:
            raise ValueError(f"scale must be a power of 2 (2, 4, 8), got {scale}")
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        self.head = nn.Sequential(nn.Conv2d(3, ngf, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*[SRResidualBlock(ngf) for _ in range(n_blocks)])
        self.body_out = nn.Sequential(nn.Conv2d(ngf, ngf, 3, padding=1), nn.BatchNorm2d(ngf))
        self.upsample = nn.Sequential(*[SubPixelBlock(ngf, ngf, 2) for _ in range(n_up)])
        self.tail = nn.Sequential(nn.Conv2d(ngf, 3, 9, padding=4), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.body_out(self.blocks(h))
        return self.tail(self.upsample(h))

    def output_conv(self) -> nn.Conv2d:
        """The image output conv, which pruning must leave alone."""
        return self.tail[0]

    def distill_points(self) -> list[nn.Module]:
        """Modules whose outputs are distilled (GCC Table II: convs 9, 17, 25, 33 of 37).

        Counting convs in forward order (head 1, block b holds convs 2b and 2b+1, body conv
        2n+2, one per sub-pixel block, tail), convs 9, 17, 25, 33 are the second convs of blocks
        4, 8, 12 and 16; the blocks' outputs, after the residual add, are taken, as the official
        GCC code taps them. For other ``n_blocks`` the blocks are n//4, n//2, 3n//4 and n (at
        least 1, duplicates dropped).
        """
        n = len(self.blocks)
        points: list[nn.Module] = []
        for b in (max(1, n // 4), max(1, n // 2), max(1, 3 * n // 4), n):
            tap = self.blocks[b - 1]
            if all(tap is not p for p in points):
                points.append(tap)
        return points


class SRDiscriminator(nn.Module):
    """SRGAN discriminator: 3x3 conv blocks with LeakyReLU 0.2 (BatchNorm in all but the first),
    strides 1, 2, 1, 2, ..., widths ndf, ndf, 2ndf, 2ndf, 4ndf, ...; then a head of one of two forms:

    - ``fc > 0`` (SRGAN, sgrvinod's tutorial): adaptive average pool, Linear -> fc, LeakyReLU 0.2,
      Linear -> 1;
    - ``fc == 0`` (GCC's SRGAN D, appendix Table II: 4 conv layers in all): global average pool
      and a single Linear -> 1, no hidden layer.

    Args:
        ndf: width of the first block.
        n_blocks: number of conv blocks (8 in SRGAN, 4 in GCC).
        fc: width of the hidden linear layer; 0 for the pooled single-linear head.
        input_size: side of the images D will see; with ``fc > 0`` the pool's output side is the
            feature map's side at that size, capped at 6 (so 6, a no-op pool, for 96 and 8 blocks
            as SRGAN). The single-linear head pools to 1x1 whatever the size.

    Shapes: (N, 3, H, W) -> (N, 1) logits.
    """

    def __init__(self, ndf: int = 64, n_blocks: int = 8, fc: int = 1024, input_size: int = 96):
        super().__init__()
        if fc < 0:
            raise ValueError(f"fc must be >= 0 (0: a single linear layer after global pooling), got {fc}")
        blocks = []
        in_ch, out_ch = 3, ndf
        for i in range(n_blocks):
            if i % 2 == 0 and i > 0:
                out_ch = in_ch * 2
            layers = [nn.Conv2d(in_ch, out_ch, 3, stride=1 + i % 2, padding=1)]
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2))
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        if fc == 0:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out_ch, 1))
        else:
            pool = max(1, min(6, math.ceil(input_size / 2 ** (n_blocks // 2))))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                                      nn.Linear(out_ch * pool * pool, fc), nn.LeakyReLU(0.2),
                                      nn.Linear(fc, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for b in self.blocks:
            h = b(h)
        return self.head(h)

    def mask_points(self) -> list[nn.Module]:
        """Modules whose outputs the selective discriminator masks: every block."""
        return list(self.blocks)

    def feature_points(self) -> list[nn.Module]:
        """Modules whose outputs the D-feature distillation terms read: every block's output."""
        return list(self.blocks)
