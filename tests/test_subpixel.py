"""Transposed convolutions rewritten as ordinary ones (export/subpixel.py) compute the same function."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gancompress.export.subpixel import (
    SubpixelConvTranspose2d,
    convertible,
    without_transposed_convs,
)
from gancompress.nets.resnet import ResnetGenerator
from gancompress.nets.sagan import SAGANGenerator
from gancompress.nets.unet import UnetGenerator

GEOMETRIES = [
    {"kernel_size": 4, "stride": 2, "padding": 1},  # pix2pix's U-Net, SAGAN's ups
    {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},  # CycleGAN's ResNet ups
    {"kernel_size": 4, "stride": 1, "padding": 0},  # SAGAN's l1 (1x1 -> 4x4)
    {"kernel_size": 2, "stride": 2, "padding": 0, "bias": False},
    {"kernel_size": (4, 3), "stride": (2, 1), "padding": (1, 1)},  # unequal strides per axis
    {"kernel_size": 5, "stride": 2, "padding": 2, "output_padding": 1},  # phases with unequal tap counts
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "k{kernel_size}s{stride}p{padding}".format(**g))
def test_the_rewrite_equals_the_transposed_convolution(geometry):
    torch.manual_seed(0)
    source = nn.ConvTranspose2d(5, 7, **geometry)
    assert convertible(source)
    rewritten = SubpixelConvTranspose2d(source)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    for size in ((1, 1), (3, 5), (8, 8)):
        x = torch.randn(2, 5, *size)
        expected = source(x)
        got = rewritten(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_rewrite_keeps_the_macs_where_the_kernel_is_a_multiple_of_the_stride():
    source = nn.ConvTranspose2d(8, 6, 4, 2, 1)
    conv = SubpixelConvTranspose2d(source).conv
    # 4 phases x (2x2 taps) = the 4x4 kernel: no zero taps, so no extra multiply-adds
    assert conv.weight.shape == (4 * 6, 8, 2, 2)
    assert int((conv.weight == 0).sum()) == int((source.weight == 0).sum())


def test_layers_it_cannot_stand_in_for_are_left_alone():
    assert not convertible(nn.ConvTranspose2d(4, 4, 3, 2, 1))  # output 2H-1: not a multiple of 2
    assert not convertible(nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2))
    assert not convertible(nn.ConvTranspose2d(4, 4, 4, 2, 1, dilation=2))
    assert not convertible(nn.Conv2d(4, 4, 3))


@pytest.mark.parametrize("build, inputs, expected_count", [
    (lambda: UnetGenerator(3, 3, 5, 4), lambda: torch.randn(2, 3, 32, 32), 5),
    (lambda: ResnetGenerator(3, 3, 4, 2), lambda: torch.randn(2, 3, 16, 16), 2),
    (lambda: SAGANGenerator(8, 4), lambda: torch.randn(2, 8), 5),  # spectral norm parametrized
], ids=["unet", "resnet", "sagan"])
def test_every_family_generator_is_the_same_function_after_the_rewrite(build, inputs, expected_count):
    torch.manual_seed(0)
    net = build()
    with torch.no_grad():  # running statistics that are not the defaults, so norms matter
        net.train()
        net(inputs())
    net.eval()
    rewritten, count = without_transposed_convs(net)
    assert count == expected_count
    assert any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())  # the original is untouched
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in rewritten.modules())
    x = inputs()
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), net(x), atol=1e-5, rtol=1e-4)
