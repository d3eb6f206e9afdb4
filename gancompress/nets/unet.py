"""The pix2pix U-Net generator, written as flat lists of blocks instead of recursion.

The layer layout, and so the parameter and MACs counts, match the ``unet_256`` generator of the
pix2pix code (``num_downs`` 8, 54.4 M parameters and 18.15 GMACs with thop at 256x256 for ngf 64);
only the module tree differs, which lets torch-pruning trace the concatenation skips and lets a
family name its distillation points as modules.
"""
from __future__ import annotations

import torch
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "instance_affine":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (valid: batch, instance, instance_affine, none)")


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` stride-2 downsamplings and concatenation skips.

    Args:
        input_nc: channels of the input image.
        output_nc: channels of the output image.
        num_downs: number of downsamplings; an input of side 2**num_downs reaches 1x1.
        ngf: width of the outermost layer; widths double down to 8*ngf.
        norm: 'batch' (pix2pix), 'instance', 'instance_affine' or 'none'.
        dropout: dropout 0.5 in the three innermost-but-one decoder blocks, as pix2pix.

    Shapes: (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]; H and W multiples of
    2**num_downs.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: bool = True):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        widths = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        use_bias = norm not in ("batch",)
        downs = []
        for i, out_ch in enumerate(widths):
            in_ch = input_nc if i == 0 else widths[i - 1]
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.LeakyReLU(0.2))
            layers.append(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=use_bias))
            if 0 < i < num_downs - 1:  # neither the outermost nor the innermost down has a norm
                layers.append(_norm(norm, out_ch))
            downs.append(nn.Sequential(*layers))
        self.downs = nn.ModuleList(downs)

        ups = []
        for j in range(num_downs):
            level = num_downs - 1 - j  # the down block this up block mirrors
            in_ch = widths[level] if j == 0 else widths[level] * 2
            out_ch = output_nc if level == 0 else widths[level - 1]
            layers = [nn.ReLU()]
            if level == 0:
                layers += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1), nn.Tanh()]
            else:
                layers += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=use_bias), _norm(norm, out_ch)]
                # pix2pix puts dropout in the blocks between the innermost and the ngf*4 level
                if dropout and 0 < j < num_downs - 4:
                    layers.append(nn.Dropout(0.5))
            ups.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList(ups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for down in self.downs:
            h = down(h)
            skips.append(h)
        h = self.ups[0](skips[-1])
        for j in range(1, len(self.ups)):
            h = self.ups[j](torch.cat([skips[-1 - j], h], 1))
        return h

    @property
    def tail(self) -> nn.Sequential:
        """The outermost up block (ReLU, ConvTranspose2d, Tanh), the last module forward runs.

        It maps concat(outermost down's output, up path) (N, C, H/2, W/2) to the image
        (N, output_nc, H, W); C is 2*ngf, fewer once pruned. GLeaD reconstructs through it
        (``gancompress.method.discriminators.glead``). A property, not a submodule: the block stays
        registered as ``ups.<n-1>`` only, so state dicts are unchanged.
        """
        return self.ups[-1]

    def convs(self) -> list[nn.Module]:
        """The 2*num_downs convolutions in forward order (8 down then 8 up for unet_256)."""
        return [next(m for m in block if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
                for block in list(self.downs) + list(self.ups)]

    def distill_points(self) -> list[nn.Module]:
        """Outputs distilled (GCC Table II): after convs 2, 4, 2n-4, 2n-2 of 2n (2,4,12,14 of 16).

        Each point is the normalised output of that conv (the activation follows in the next
        block), the appendix's "otherwise the normalization": the block's norm layer, before the
        block's Dropout where it has one, so a teacher and its student see the same thing there
        (the official GCC code taps before the dropout too).
        """
        blocks = list(self.downs) + list(self.ups)
        n = len(blocks)
        return [_before_dropout(b) for b in (blocks[1], blocks[3], blocks[n - 5], blocks[n - 3])]


def _before_dropout(block: nn.Sequential) -> nn.Module:
    """The last module of ``block`` that is not a Dropout."""
    layers = list(block)
    while isinstance(layers[-1], nn.Dropout):
        layers.pop()
    return layers[-1]
