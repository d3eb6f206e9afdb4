"""GLeaD: generator tails, the decoder h and the reconstruction loss (METHOD 6)."""
from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import nn

from gancompress.errors import GanCompressError
from gancompress.method.discriminators.glead import (
    GLeaDDecoder,
    GLeaDUnsupported,
    generator_tail,
    make_glead_head,
    reconstruction_loss,
    tail_input_shape,
)
from gancompress.method.pruning import prune_to_budget
from gancompress.method.taps import FeatureTap, tap_channels
from gancompress.metrics.macs import count_macs
from gancompress.nets.patchgan import PatchDiscriminator
from gancompress.nets.resnet import MobileResnetGenerator, ResnetGenerator
from gancompress.nets.sagan import SAGANGenerator
from gancompress.nets.srresnet import SRResNet
from gancompress.nets.unet import UnetGenerator


@functools.lru_cache(maxsize=1)
def _pruned_unet_once() -> UnetGenerator:
    torch.manual_seed(0)
    g = UnetGenerator(3, 3, num_downs=5, ngf=8).eval()
    with torch.no_grad():
        g.ups[-2][1].weight[:, :5] *= 1e-4
    x = torch.randn(1, 3, 32, 32)
    budget = int(0.85 * count_macs(g, x).complete)
    return prune_to_budget(g, x, method="l1", budget_macs=budget, tolerance=0.05).model


def _pruned_unet() -> UnetGenerator:
    """A U-Net pruned to 85% of its MACs after making 5 of the 8 channels of the up block
    feeding the tail the least important, so pruning narrows the tail's input (a fresh copy of
    one pruning search)."""
    return copy.deepcopy(_pruned_unet_once())


def _make(kind: str):
    """(generator, example input, expected tail input (C, H, W), output side)."""
    torch.manual_seed(0)
    if kind == "unet":
        return UnetGenerator(3, 3, num_downs=5, ngf=8), torch.randn(1, 3, 32, 32), (16, 16, 16), 32
    if kind == "unet-pruned":
        g = _pruned_unet()
        return g, torch.randn(1, 3, 32, 32), (g.tail[1].in_channels, 16, 16), 32
    if kind == "resnet":
        return ResnetGenerator(3, 3, ngf=4, n_blocks=1), torch.randn(1, 3, 32, 32), (4, 32, 32), 32
    if kind == "mobile-resnet":
        return MobileResnetGenerator(3, 3, ngf=4, n_blocks=1), torch.randn(1, 3, 16, 16), (4, 16, 16), 16
    if kind == "srresnet":
        return SRResNet(scale=2, ngf=4, n_blocks=1), torch.randn(1, 3, 16, 16), (4, 32, 32), 32
    if kind == "sagan":
        return SAGANGenerator(z_dim=8, ngf=4), torch.randn(1, 8), (4, 32, 32), 64
    raise KeyError(kind)


KINDS = ["unet", "unet-pruned", "resnet", "mobile-resnet", "srresnet", "sagan"]


def _images(n: int, size: int) -> torch.Tensor:
    """A fixed batch of smooth RGB images in [-0.8, 0.8], (n, 3, size, size)."""
    t = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([0.8 * torch.stack([torch.sin((i + 1) * xx * math.pi / 2),
                                           torch.cos((i + 1) * yy * math.pi / 2), xx * yy])
                        for i in range(n)])


@pytest.mark.slow
def test_pruning_narrowed_the_unet_tail():
    g = _pruned_unet()
    assert g.tail[1].in_channels < 16
    assert g(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kind", KINDS)
def test_tail_input_shape_is_measured(kind):
    g, x, expected, _ = _make(kind)
    g.train()
    assert tail_input_shape(g, x) == expected
    assert g.training  # the measuring pass restores the mode


@pytest.mark.parametrize("kind", KINDS)
def test_tail_is_what_forward_runs(kind):
    """G's output is the tail applied to the feature map entering it, and changing the tail's
    output changes G's output."""
    g, x, _, _ = _make(kind)
    g.eval()
    tail = generator_tail(g)
    seen = []
    handle = tail[0].register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    with torch.no_grad():
        out = g(x)
        handle.remove()
        assert torch.allclose(tail(seen[-1]), out)
        handle = tail[-1].register_forward_hook(lambda _m, _i, output: torch.zeros_like(output))
        replaced = g(x)
        handle.remove()
    assert out.abs().max() > 0 and torch.equal(replaced, torch.zeros_like(out))


def test_tails_add_no_state_dict_keys():
    """The tail is a view of layers already registered: existing checkpoints keep loading."""
    for kind in ("unet", "resnet", "sagan"):
        g, _, _, _ = _make(kind)
        assert not any(k.startswith("tail.") for k in g.state_dict())
        tail_params = {id(p) for p in g.tail.parameters()}
        assert tail_params <= {id(p) for p in g.parameters()}


def test_generator_without_tail_is_refused_with_a_readable_error():
    plain = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh())
    with pytest.raises(GLeaDUnsupported) as info:
        make_glead_head(plain, [8], torch.zeros(1, 3, 8, 8), family="mynet")
    assert isinstance(info.value, GanCompressError)
    assert str(info.value) == ("discriminator.mode glead: the mynet generator declares no tail; "
                               "use selective, plain or dmd")


def test_decoder_shapes_follow_features_and_target():
    dec = GLeaDDecoder([8, 16, 32], (5, 20, 20), width=6)
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 7, 7), torch.randn(2, 32, 3, 3)]
    assert dec(feats).shape == (2, 5, 20, 20)
    assert all(m.kernel_size == (1, 1) for m in dec.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="3 feature levels"):
        dec(feats[:2])


def _toy(kind: str, distance: str = "pixel", vgg: nn.Module | None = None):
    """A generator, a small PatchGAN D with a feature tap on its blocks, its decoder, images."""
    g, x, _, side = _make(kind)
    images = _images(4, side)
    torch.manual_seed(1)
    d = PatchDiscriminator(3, ndf=8, n_layers=3, norm="none")
    decoder = make_glead_head(g, tap_channels(d, d.mask_points(), images[:1]), x, width=16)
    tap = FeatureTap(d.mask_points())

    def loss():
        tap.reset()
        d(images)
        return reconstruction_loss(decoder, generator_tail(g), tap.outputs, images, distance, vgg)

    return g, d, decoder, loss


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["unet", "unet-pruned", "resnet"])
def test_decoder_and_d_learn_to_reconstruct_but_g_gets_no_gradient(kind):
    g, d, decoder, loss = _toy(kind)
    g.train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    opt = torch.optim.Adam(list(d.parameters()) + list(decoder.parameters()), lr=3e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(30):
        value = loss()
        opt.zero_grad()
        value.backward()
        if not losses:
            # G is trainable (requires_grad) yet receives nothing; the decoder and D do.
            assert all(p.requires_grad and p.grad is None for p in g.parameters())
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())
            assert d.blocks[0][0].weight.grad.abs().sum() > 0
        opt.step()
        losses.append(value.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())


@pytest.mark.slow
def test_perceptual_distance_uses_the_given_extractor():
    torch.manual_seed(2)
    extractor = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)).requires_grad_(False)
    g, d, decoder, loss = _toy("unet", "perceptual", extractor)
    value = loss()
    value.backward()
    assert all(p.grad is None for p in g.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())

    # The same number by hand: L1 between the extractor's maps of the reconstruction and image.
    tap = FeatureTap(d.mask_points())
    images = _images(4, 32)
    with torch.no_grad():
        d(images)
        recon = g.tail(decoder(tap.outputs))
        expected = (extractor(recon) - extractor(images)).abs().mean()
        assert torch.allclose(value, expected, atol=1e-6)
        assert not torch.allclose(value, (recon - images).abs().mean())

    opt = torch.optim.Adam(list(d.parameters()) + list(decoder.parameters()), lr=3e-3, betas=(0.5, 0.999))
    first = None
    for _ in range(20):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
        first = value.item() if first is None else first
    assert value.item() < first


def test_loss_refuses_mismatched_images_and_missing_extractor():
    g, x, _, _ = _make("unet")
    decoder = make_glead_head(g, [8], x, width=4)
    feats = [torch.randn(2, 8, 16, 16)]
    with pytest.raises(ValueError, match="without condition channels"):
        reconstruction_loss(decoder, g.tail, feats, torch.zeros(2, 6, 32, 32))  # concat(A, B)
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        reconstruction_loss(decoder, g.tail, feats, torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="feature extractor"):
        reconstruction_loss(decoder, g.tail, feats, torch.zeros(2, 3, 32, 32), distance="perceptual")
    with pytest.raises(ValueError, match="valid: pixel, perceptual"):
        reconstruction_loss(decoder, g.tail, feats, torch.zeros(2, 3, 32, 32), distance="l2")


def test_tail_buffers_are_left_alone():
    """A tail holding BatchNorm in training mode does not move G's running statistics."""
    tail = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1), nn.Tanh()).train()
    decoder = GLeaDDecoder([4], (4, 8, 8), width=4)
    before = tail[0].running_mean.clone()
    reconstruction_loss(decoder, tail, [torch.randn(2, 4, 8, 8) + 3], torch.zeros(2, 3, 8, 8)).backward()
    assert torch.equal(tail[0].running_mean, before)
    assert tail[0].weight.grad is None


FAMILY_RAWS = {
    "pix2pix": {"model": {"num_downs": 5, "ngf_teacher": 8, "ngf_student": 8, "ndf": 8},
                "data": {"crop_size": 32, "load_size": 32}},
    "cyclegan": {"model": {"n_blocks": 1, "ngf_teacher": 4, "ngf_student": 4, "ndf": 8},
                 "data": {"crop_size": 16, "load_size": 16}, "sparse": {"method": "l1"}},
    "sagan": {"model": {"z_dim": 8, "ngf_teacher": 4, "ngf_student": 4, "ndf": 4}},
    "srgan": {"model": {"n_blocks": 1, "ngf_teacher": 4, "ngf_student": 4, "ndf": 4, "lr_crop": 8,
                        "content_loss": "mse"}},
}


@pytest.mark.parametrize("family_name", sorted(FAMILY_RAWS))
def test_every_family_generator_has_a_measurable_tail(family_name):
    """The generators the families build (not only the nets above) support GLeaD."""
    from gancompress.families import get_family
    from gancompress.families.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "t", "family": family_name, **FAMILY_RAWS[family_name]})
    family = get_family(family_name)(recipe)
    for name in family.generator_names:
        g = family.build_generator(name, family.cfg.ngf_student)
        example = family.example_input(name, 1)
        decoder = make_glead_head(g, [8, 16], example, width=4, family=family_name)
        first_conv = next(m for m in generator_tail(g) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
        assert decoder.out_shape[0] == first_conv.in_channels
        image = g(example).detach()
        feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
        assert reconstruction_loss(decoder, generator_tail(g), feats, image).ndim == 0
