"""The PatchGAN discriminator of pix2pix and CycleGAN (70x70 receptive field for n_layers 3)."""
from __future__ import annotations

import torch
from torch import nn


def _d_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (valid: batch, instance, none)")


class PatchDiscriminator(nn.Module):
    """Conv blocks with stride 2 (n_layers of them), one with stride 1, then a 1-channel logit conv.

    Args:
        input_nc: input channels (pix2pix: input + output image channels).
        ndf: width of the first block; doubles per block up to 8*ndf.
        n_layers: stride-2 blocks after the first (3 gives 5 convolutions in all).
        norm: 'batch', 'instance' or 'none' (never on the first block).

    Shapes: (N, input_nc, H, W) -> (N, 1, H', W') patch logits (30x30 for 256x256 input).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        use_bias = norm != "batch"
        blocks = [nn.Sequential(nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2))]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=use_bias),
                                        _d_norm(norm, ndf * mult), nn.LeakyReLU(0.2)))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(ndf * mult, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def mask_points(self) -> list[nn.Module]:
        """Every conv block but the logit head: where the selective discriminator's masks attach."""
        return list(self.blocks)

    def feature_points(self) -> list[nn.Module]:
        """Where the D-feature distillation terms read: each block's normalised output, before
        its LeakyReLU (the first block, without a norm, its conv), as the official GCC code taps."""
        return [block[1] if len(block) > 2 else block[0] for block in self.blocks]
