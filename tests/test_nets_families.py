"""Shapes, layouts, MACs and tap points of the ResNet, SAGAN and SRResNet families."""
import copy

import pytest
import thop
import torch
from torch import nn

from gancompress.nets.resnet import MobileResnetGenerator, PatchDiscriminator, ResnetGenerator
from gancompress.nets.sagan import (
    SAGANDiscriminator,
    SAGANGenerator,
    SelfAttention,
    fold_spectral_norm,
    restore_spectral_norm,
    strip_spectral_norm,
)
from gancompress.nets.srresnet import SRDiscriminator, SRResNet, SubPixelBlock

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _forward_order(model: nn.Module, *inputs) -> list[nn.Module]:
    """Leaf modules and convs (spectral-norm ones have children) in the order the forward pass
    calls them."""
    order, hooks = [], []
    for m in model.modules():
        if isinstance(m, CONVS) or not list(m.children()):
            hooks.append(m.register_forward_hook(lambda mod, i, o: order.append(mod)))
    with torch.no_grad():
        model(*inputs)
    for h in hooks:
        h.remove()
    return order


def _last_conv(module: nn.Module) -> nn.Module:
    return [m for m in module.modules() if isinstance(m, CONVS)][-1]


def _conv_index_before(order: list[nn.Module], tap: nn.Module, skip=()) -> int:
    """1-based index, among convs in forward order, of the last conv called before ``tap``."""
    convs = [m for m in order[: order.index(tap) + 1]
             if isinstance(m, CONVS) and not any(m in s.modules() for s in skip)]
    return len(convs)


@pytest.mark.parametrize("cls", [ResnetGenerator, MobileResnetGenerator])
@pytest.mark.parametrize("norm", ["instance", "instance_affine", "batch"])
def test_resnet_generators_keep_shape(cls, norm):
    g = cls(ngf=4, n_blocks=2, norm=norm).eval()
    x = torch.randn(1, 3, 64, 64)
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1


def test_resnet_generator_matches_cyclegan_macs():
    g = ResnetGenerator(ngf=64, n_blocks=9)
    assert len(g.convs()) == 24
    assert sum(p.numel() for p in g.parameters()) == 11_378_179  # pix2pix code's count
    macs, _ = thop.profile(copy.deepcopy(g), inputs=(torch.randn(1, 3, 256, 256),), verbose=False)
    assert macs == pytest.approx(56.9e9, rel=0.01)


def test_resnet_distill_points_follow_table_ii():
    g = ResnetGenerator(ngf=4, n_blocks=9)
    order = _forward_order(g, torch.randn(1, 3, 32, 32))
    points = g.distill_points()
    # the residual blocks' outputs after the add (the official GCC code's taps): their last convs
    assert [_conv_index_before(order, _last_conv(p)) for p in points[1:]] == [9, 15, 21]
    assert _conv_index_before(order, points[0]) == 3 and isinstance(points[0], nn.ReLU)
    blocks = g.residual_blocks()
    assert points[1:] == [blocks[2], blocks[5], blocks[8]]
    m = MobileResnetGenerator(ngf=4, n_blocks=9)
    assert len(m.convs()) == 42
    blocks = m.residual_blocks()
    assert m.distill_points()[1:] == [blocks[2], blocks[5], blocks[8]]
    assert len(ResnetGenerator(ngf=4, n_blocks=2).distill_points()) == 3  # duplicates dropped


def test_mobile_blocks_are_depthwise_separable():
    m = MobileResnetGenerator(ngf=4, n_blocks=1)
    block = m.residual_blocks()[0]
    dw = [c for c in block.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    pw = [c for c in block.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1)]
    assert len(dw) == 2 and len(pw) == 2
    assert all(c.groups == c.in_channels == c.out_channels == 16 for c in dw)


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_patch_discriminator_layout(norm):
    d = PatchDiscriminator(3, ndf=8, n_layers=3, norm=norm)
    assert len(d.blocks) == 4 and isinstance(d.head, nn.Conv2d)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    assert not any(isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) for m in d.blocks[0])
    assert d.mask_points() == list(d.blocks)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)


def test_sagan_shapes_and_layout():
    g = SAGANGenerator(z_dim=128, ngf=8)
    y = g(torch.randn(2, 128))
    assert y.shape == (2, 3, 64, 64)
    d = SAGANDiscriminator(ndf=8)
    assert d(y).shape == (2, 1)
    assert len(d.blocks) == 4 and isinstance(d.head, nn.Conv2d)
    points = d.mask_points()
    assert all(isinstance(p, nn.LeakyReLU) for p in points) and len(points) == 4
    assert sum(isinstance(m, SelfAttention) for m in d.modules()) == 2
    assert sum(isinstance(m, SelfAttention) for m in g.modules()) == 2


def test_sagan_distill_points_follow_table_ii():
    g = SAGANGenerator(z_dim=16, ngf=4).eval()
    order = _forward_order(g, torch.randn(1, 16))
    attn = [m for m in g.modules() if isinstance(m, SelfAttention)]
    points = g.distill_points()
    assert _conv_index_before(order, points[0], skip=attn) == 2 and isinstance(points[0], nn.ReLU)
    assert points[1] is g.attn2  # after conv 4 and its attention, as the official GCC code taps
    assert _conv_index_before(order, g.l4[-1], skip=attn) == 4


def test_srresnet_shapes_and_distill_points():
    g = SRResNet(scale=4, ngf=8, n_blocks=16).eval()
    x = torch.randn(1, 3, 24, 24)
    assert g(x).shape == (1, 3, 96, 96)
    order = _forward_order(g, x)
    assert sum(isinstance(m, CONVS) for m in order) == 37
    points = g.distill_points()
    assert [_conv_index_before(order, _last_conv(p)) for p in points] == [9, 17, 25, 33]
    assert all(p in list(g.blocks) for p in points)  # block outputs, after the residual add
    assert sum(isinstance(m, SubPixelBlock) for m in g.modules()) == 2


def test_sr_discriminator_shape():
    d = SRDiscriminator(ndf=8, n_blocks=8, fc=32, input_size=96)
    assert d(torch.randn(2, 3, 96, 96)).shape == (2, 1)
    assert len(d.blocks) == 8 and d.mask_points() == list(d.blocks)
    assert [b[0].stride[0] for b in d.blocks] == [1, 2] * 4
    assert [b[0].out_channels for b in d.blocks] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert not isinstance(d.blocks[0][1], nn.BatchNorm2d)
    assert all(isinstance(b[1], nn.BatchNorm2d) for b in d.blocks[1:])


def test_self_attention_extra_macs():
    a = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert a(x).shape == x.shape
    assert a.extra_macs((x,), a(x)) == 2 * 64 * 64 * (2 + 16)


def _sn_matrix(m: nn.Module) -> torch.Tensor:
    w = m.weight.detach()
    if isinstance(m, nn.ConvTranspose2d):  # torch's spectral norm uses dim 1 for these
        w = w.transpose(0, 1)
    return w.flatten(1)


@pytest.mark.parametrize("net", ["G", "D"])
def test_spectral_norm_strip_restore_keeps_function(net):
    torch.manual_seed(0)
    if net == "G":
        model, x = SAGANGenerator(z_dim=16, ngf=8), torch.randn(2, 16)
    else:
        model, x = SAGANDiscriminator(ndf=8), torch.randn(2, 3, 64, 64)
    for m in model.modules():
        if isinstance(m, SelfAttention):
            m.gamma.data.fill_(0.5)
    # a converged state, as training leaves it: after one restore u, v are exact
    restore_spectral_norm(strip_spectral_norm(model))
    model.eval()
    with torch.no_grad():
        y0 = model(x)
        mods = strip_spectral_norm(model)
        assert len(mods) == 4
        assert not any(hasattr(m, "parametrizations") for m in model.modules())
        assert torch.equal(model(x), y0)  # stripping keeps the eval-mode weight exactly
        restore_spectral_norm(mods)
        assert all(hasattr(m, "parametrizations") for m in mods)
        torch.testing.assert_close(model(x), y0, rtol=1e-4, atol=1e-5)
        for m in mods:
            assert torch.linalg.matrix_norm(_sn_matrix(m), 2) == pytest.approx(1.0, abs=1e-4)
        assert len(fold_spectral_norm(model)) == 4
