"""DMD: retardation metric, the on/off schedule and the three mask placements."""
import copy

import pytest
import torch

from gancompress.discriminators.dmd import DMDDiscriminator, DMDSchedule, retardation, widen_head
from gancompress.errors import RecipeError
from gancompress.nets.patchgan import PatchDiscriminator
from gancompress.nets.srresnet import SRDiscriminator


def _net(seed=0):
    torch.manual_seed(seed)
    return PatchDiscriminator(6, ndf=4, n_layers=3, norm="batch")


def _x(n=4, seed=1):
    return torch.randn(n, 6, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_retardation_is_mean_cosine_similarity():
    full = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert retardation(full, full).item() == pytest.approx(1.0)
    masked = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # orthogonal to row 0, 45 degrees to row 1
    assert retardation(masked, full).item() == pytest.approx((0.0 + 2 ** -0.5) / 2)


def test_switches_exactly_when_r_crosses_threshold():
    net = _net()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "feature", mask_ratio=0.5, seed=3)
    x = _x()
    r = dmd.retardation(x).item()
    assert 0.0 < r < 1.0
    mask = dmd.mask.clone()

    # Just below R: the check at the end of the block switches masking on and keeps the mask.
    sched = DMDSchedule(threshold=r - 1e-4, interval=3, samples=4)
    assert sched.after_step(dmd, 0, x) is None and sched.after_step(dmd, 1, x) is None
    assert not dmd.active  # not a check step: nothing changes
    measured = sched.after_step(dmd, 2, x)
    assert measured.item() == pytest.approx(r, abs=1e-6)
    assert dmd.active and torch.equal(dmd.mask, mask)

    # Just above R: masking goes off and a fresh mask is drawn for next time.
    sched = DMDSchedule(threshold=r + 1e-4, interval=3, samples=4)
    sched.after_step(dmd, 5, x)
    assert not dmd.active
    assert not torch.equal(dmd.mask, mask)


def test_measuring_leaves_batchnorm_statistics_alone():
    net = _net()
    dmd = DMDDiscriminator(net, net.mask_points()[2], "input", seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    dmd.retardation(_x())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("placement", ["feature", "input"])
def test_inactive_wrapper_is_the_discriminator(placement):
    net = _net()
    reference = copy.deepcopy(net)
    dmd = DMDDiscriminator(net, net.mask_points()[1], placement, seed=0)
    dmd.new_mask(_x())
    x = _x()
    assert torch.equal(dmd(x), reference(x))
    dmd.active = True
    assert not torch.allclose(dmd(x), reference(x))


def test_feature_placement_masks_layer_d_output():
    net = _net()
    layer = net.mask_points()[1]
    dmd = DMDDiscriminator(net, layer, "feature", mask_ratio=0.5, seed=0)
    x = _x()
    seen = {}
    layer.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))  # runs after DMD's hook
    with torch.no_grad():
        net.eval()
        dmd(x)
        unmasked = seen["out"].clone()
        dmd.new_mask(x)
        dmd.active = True
        dmd(x)
    mask = dmd.mask
    assert mask.shape == unmasked.shape[1:]
    assert torch.equal(seen["out"], unmasked * mask)
    assert (seen["out"][:, mask == 0] == 0).all()


def test_input_placement_masks_real_and_fake_inputs():
    net = _net()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "input", mask_ratio=0.5, seed=0)
    x = _x()
    dmd.new_mask(x)
    dmd.active = True
    seen = {}
    net.blocks[0].register_forward_pre_hook(lambda m, i: seen.__setitem__("in", i[0]))
    dmd(x)
    assert dmd.mask.shape == (1, 32, 32)
    assert torch.equal(seen["in"], x * dmd.mask)


def test_head_placement_averages_the_kept_logits():
    net = _net()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "head", heads=4, seed=0)
    assert net.head.out_channels == 4
    x = _x()
    net.eval()
    with torch.no_grad():
        k_logits = net(x)
        assert torch.allclose(dmd(x), k_logits.mean(1, keepdim=True))  # off: every head
        dmd.mask = torch.tensor([1.0, 0.0, 0.0, 1.0])
        dmd.active = True
        assert torch.allclose(dmd(x), (k_logits[:, 0] + k_logits[:, 3]).unsqueeze(1) / 2)
        # R_t compares masked and unmasked logits
        expected = retardation(k_logits * dmd.mask.view(1, 4, 1, 1), k_logits)
        assert dmd.retardation(x).item() == pytest.approx(expected.item(), abs=1e-6)


def test_head_placement_widens_a_linear_head():
    net = SRDiscriminator(ndf=4, n_blocks=4, fc=16, input_size=16)
    widen_head(net, 3)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 3)


def test_head_placement_refuses_a_head_without_one_logit_layer():
    net = _net()
    net.head = torch.nn.Identity()
    with pytest.raises(RecipeError, match="placement feature or input"):
        widen_head(net, 4)


@pytest.mark.parametrize("placement", ["feature", "input", "head"])
def test_gradients_reach_d_through_a_masked_layer(placement):
    net = _net()
    dmd = DMDDiscriminator(net, net.mask_points()[1], placement, mask_ratio=0.5, seed=0)
    x = _x()
    dmd.new_mask(x)
    dmd.active = True
    dmd(x).mean().backward()
    first, last = net.blocks[0][0].weight.grad, net.blocks[-1][0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert last is not None and last.abs().sum() > 0


def test_state_round_trip_repeats_the_next_mask():
    net = _net()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "feature", seed=7)
    x = _x()
    dmd.new_mask(x)
    dmd.active = True
    state = copy.deepcopy(dmd.get_extra_state())
    dmd.new_mask(x)
    expected = dmd.mask.clone()

    other_net = _net()
    other = DMDDiscriminator(other_net, other_net.mask_points()[1], "feature", seed=123)
    other.set_extra_state(state)
    assert other.active
    other.new_mask(x)
    assert torch.equal(other.mask, expected)
