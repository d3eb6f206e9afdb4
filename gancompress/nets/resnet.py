"""CycleGAN's ResNet generator and its depthwise-separable (mobile) variant.

``ResnetGenerator`` reproduces the ``resnet_9blocks`` generator of
junyanz/pytorch-CycleGAN-and-pix2pix module for module, under the same attribute names
(``model``, ``conv_block``), so a checkpoint of that code loads with ``load_state_dict``; at
1x3x256x256 with ngf 64 thop counts 56.86 GMACs (11.38 M parameters).
``MobileResnetGenerator`` swaps every 3x3 residual convolution for a depthwise 3x3 + norm +
pointwise 1x1, as GAN Compression's ``mobile_resnet_9blocks``. Both are plain module trees
that torch-pruning traces: the residual adds tie the trunk channels into one group, and
depthwise convolutions tie their input to their output.

CycleGAN's discriminator is the 70x70 PatchGAN of :mod:`gancompress.nets.patchgan`, re-exported
here so that a family finds its generator and discriminator in one place.
"""
from __future__ import annotations

import torch
from torch import nn

from .patchgan import PatchDiscriminator

__all__ = ["ResnetGenerator", "MobileResnetGenerator", "ResnetBlock", "SeparableConv2d",
           "PatchDiscriminator"]

_NORMS = ("instance", "instance_affine", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "instance_affine":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (valid: {', '.join(_NORMS)})")


def _uses_bias(norm: str) -> bool:
    # BatchNorm's shift makes a conv bias redundant; the pix2pix code keeps the bias otherwise.
    return norm != "batch"


class SeparableConv2d(nn.Module):
    """Depthwise ``kernel_size`` conv, norm, pointwise 1x1 conv (GAN Compression's layer).

    Args:
        in_channels: input channels; the depthwise conv keeps this width (groups=in_channels).
        out_channels: output channels of the pointwise conv.
        kernel_size, stride, padding: of the depthwise conv.
        norm: norm between the two convs, as in :func:`ResnetGenerator`.
        bias: whether both convs carry a bias.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H', W').
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, norm: str = "instance", bias: bool = True):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels,
                      bias=bias),
            _norm(norm, in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResnetBlock(nn.Module):
    """Residual block ``x + norm(conv(relu(norm(conv(x)))))`` with reflection padding.

    Args:
        dim: channels in and out (tied to the trunk by the residual add).
        norm: see :class:`ResnetGenerator`.
        dropout: dropout 0.5 after the first ReLU.
        separable: use :class:`SeparableConv2d` instead of a dense 3x3 conv (mobile variant).

    The block's output (after the add) is its distillation tap.

    Shapes: (N, dim, H, W) -> (N, dim, H, W).
    """

    def __init__(self, dim: int, norm: str = "instance", dropout: bool = False,
                 separable: bool = False):
        super().__init__()
        bias = _uses_bias(norm)

        def conv() -> nn.Module:
            if separable:
                return SeparableConv2d(dim, dim, 3, norm=norm, bias=bias)
            return nn.Conv2d(dim, dim, 3, bias=bias)

        layers: list[nn.Module] = [nn.ReflectionPad2d(1), conv(), _norm(norm, dim), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), conv(), _norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: 7x7 stem, two stride-2 downs, residual blocks, two
    transposed-conv ups, 7x7 conv + Tanh.

    Args:
        input_nc: channels of the input image.
        output_nc: channels of the output image.
        ngf: stem width; the residual trunk runs at 4*ngf.
        n_blocks: number of residual blocks (9 for 256x256 CycleGAN).
        norm: 'instance' (CycleGAN: no affine, no running stats), 'instance_affine',
            'batch' or 'none'. Convs carry a bias unless the norm is 'batch'.
        dropout: dropout 0.5 inside each residual block.

    Shapes: (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]; H, W multiples of 4.
    """

    _separable = False

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False):
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        _norm(norm, 1)  # validate the name before building anything
        bias = _uses_bias(norm)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3),
                                   nn.Conv2d(input_nc, ngf, 7, bias=bias),
                                   _norm(norm, ngf), nn.ReLU()]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                       _norm(norm, 2 * c), nn.ReLU()]
        self._first_block = len(layers)
        for _ in range(n_blocks):
            layers.append(ResnetBlock(4 * ngf, norm, dropout, separable=self._separable))
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=bias),
                       _norm(norm, c // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.n_blocks = n_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def tail(self) -> nn.Sequential:
        """The output layers (ReflectionPad2d(3), 7x7 conv, Tanh), the last three that forward runs.

        They map the last up block's output (N, C, H, W) to the image (N, output_nc, H, W); C is
        ngf, fewer once pruned. GLeaD reconstructs through them
        (``gancompress.method.discriminators.glead``). The result is a new Sequential over the last three
        modules of ``self.model``, which stay there so that state dicts keep the pix2pix code's
        keys (``model.26.weight``); forward runs them inside ``self.model``, never through the
        returned Sequential, so hooks belong on its layers.
        """
        return self.model[-3:]

    def residual_blocks(self) -> list[ResnetBlock]:
        """The residual blocks in forward order."""
        return [m for m in self.model if isinstance(m, ResnetBlock)]

    def convs(self) -> list[nn.Module]:
        """Every Conv2d / ConvTranspose2d in forward order (24 for 9 dense blocks: stem, 2 downs,
        2 per block, 2 ups, output conv; 42 for the mobile variant, whose blocks hold 4)."""
        return [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]

    def output_conv(self) -> nn.Conv2d:
        """The image output conv, which pruning must leave alone."""
        return self.convs()[-1]

    def distill_points(self) -> list[nn.Module]:
        """Modules whose outputs are distilled (GCC Table II: convs 3, 9, 15, 21 of 24).

        Counting convs in forward order (stem 1, downs 2-3, block b holds convs 2b+2 and 2b+3,
        ups 2n+4 and 2n+5, output conv 2n+6), conv 3 is the second down, whose ReLU is taken;
        convs 9, 15, 21 are the last convs of blocks 3, 6 and 9, whose outputs after the residual
        add are taken, as the official GCC code taps them.
        For other ``n_blocks`` the blocks are n//3, 2n//3 and n (at least 1, duplicates dropped).
        The mobile variant uses the same positions: its blocks hold 4 convs each, but the block
        boundaries are the same.
        """
        down2_relu = self.model[self._first_block - 1]
        blocks = self.residual_blocks()
        n = len(blocks)
        points: list[nn.Module] = [down2_relu]
        for b in (max(1, n // 3), max(1, 2 * n // 3), n):
            tap = blocks[b - 1]
            if all(tap is not p for p in points):
                points.append(tap)
        return points


class MobileResnetGenerator(ResnetGenerator):
    """:class:`ResnetGenerator` whose residual convs are depthwise-separable
    (:class:`SeparableConv2d`), as GAN Compression's ``mobile_resnet_9blocks``.

    Same arguments and shapes as :class:`ResnetGenerator`. The stem, downs, ups and output
    conv stay dense. Each depthwise conv has groups == channels, so torch-pruning prunes its
    input and output together with the trunk (or inner) group that feeds it.
    """

    _separable = True
