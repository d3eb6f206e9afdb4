"""DMD: retardation metric, the on/off schedule and the three mask placements."""
import copy

import pytest
import torch

from gancompress.errors import RecipeError
from gancompress.method.discriminators.dmd import DMDDiscriminator, DMDSchedule, retardation, widen_head
from gancompress.nets.patchgan import PatchDiscriminator
from gancompress.nets.srresnet import SRDiscriminator


@pytest.fixture(autouse=True)
def one_thread():
    """These nets are tiny: one thread runs them fastest, and several slow down on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# --- what R_t measures, and the random control ---------------------------------------------------

def _r(net, measure, x, placement="feature"):
    dmd = DMDDiscriminator(net, net.mask_points()[1], placement, mask_ratio=0.3, seed=5, measure=measure)
    dmd.new_mask(x)  # the same seed draws the same mask for every net of these shapes
    return dmd.retardation(x).item(), dmd.mask


def test_feature_r_is_sqrt_of_the_kept_share_for_any_d_but_output_r_depends_on_d():
    """The appendix's R_t (features) is ~sqrt(1 - mask_ratio) whatever D's weights, so lambda 0.84
    decides on the mask's draw; R_t on D's outputs differs between two Ds for the same mask."""
    x = torch.randn(8, 6, 32, 32, generator=torch.Generator().manual_seed(1))
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(PatchDiscriminator(6, ndf=8, n_layers=3, norm="batch"))
    feats = [_r(n, "features", x) for n in nets]
    outs = [_r(n, "output", x) for n in nets]
    assert torch.equal(feats[0][1], feats[1][1]) and torch.equal(feats[0][1], outs[1][1])  # one mask
    kept = float(feats[0][1].mean()) ** 0.5
    assert all(abs(r - kept) < 0.02 for r, _ in feats)
    assert abs(outs[0][0] - outs[1][0]) > 0.1


def test_output_r_compares_d_outputs_with_and_without_the_mask():
    x = _x()
    # feature: the masked features go through D's later layers (eval mode: fixed statistics, so
    # the references below are exact)
    net = _net().eval()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "feature", mask_ratio=0.5, seed=0, measure="output")
    dmd.new_mask(x)
    with torch.no_grad():
        full = net(x)
        dmd.active = True
        masked = dmd(x)
        dmd.active = False
    expected = torch.nn.functional.cosine_similarity(masked.flatten(), full.flatten(), dim=0)
    assert dmd.retardation(x).item() == pytest.approx(expected.item(), abs=1e-6)
    assert not dmd.active
    # input: D on the masked input
    net = _net().eval()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "input", mask_ratio=0.5, seed=0, measure="output")
    dmd.new_mask(x)
    with torch.no_grad():
        expected = torch.nn.functional.cosine_similarity(net(x * dmd.mask).flatten(), net(x).flatten(), dim=0)
    assert dmd.retardation(x).item() == pytest.approx(expected.item(), abs=1e-6)
    # head: the masked mean of the k logits against the mean of all
    net = _net().eval()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "head", heads=4, seed=0, measure="output")
    dmd.mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    with torch.no_grad():
        k = net(x)
    expected = torch.nn.functional.cosine_similarity(k[:, [0, 2, 3]].mean(1).flatten(), k.mean(1).flatten(), dim=0)
    assert dmd.retardation(x).item() == pytest.approx(expected.item(), abs=1e-6)


def test_output_r_of_a_one_logit_d_is_not_just_a_sign():
    net = SRDiscriminator(ndf=4, n_blocks=4, fc=0, input_size=16)
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    dmd = DMDDiscriminator(net, net.mask_points()[1], "feature", mask_ratio=0.5, seed=0, measure="output")
    dmd.new_mask(x)
    r = dmd.retardation(x).item()
    assert -1.0 < r < 1.0 and abs(r) < 1 - 1e-4


def _on_sequence(seed, checks, rate=0.3, state=None):
    net = _net()
    dmd = DMDDiscriminator(net, net.mask_points()[1], "feature", seed=seed)
    if state is not None:
        dmd.set_extra_state(state)
    sched = DMDSchedule(threshold=2.0, interval=1, samples=2, schedule="random", on_rate=rate)
    x = _x(2)
    seq = []
    for step in range(checks):
        sched.after_step(dmd, step, x)
        seq.append(dmd.active)
    return seq, dmd


def test_random_schedule_switches_at_its_rate_whatever_r_says():
    # threshold 2 is above any cosine: the retardation rule would never switch the mask on
    seq, dmd = _on_sequence(seed=3, checks=60)
    assert 0 < sum(seq) < 60 and dmd.last_r is not None  # R_t is still measured (and logged)
    sched = DMDSchedule(threshold=2.0, interval=1, samples=2, schedule="random", on_rate=0.3)
    draws = [sched.decide(dmd, torch.tensor(0.0)) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(0.3, abs=0.03)
    never = DMDSchedule(threshold=-2.0, interval=1, samples=2, schedule="random", on_rate=0.0)
    assert not any(never.decide(dmd, torch.tensor(1.0)) for _ in range(100))


def test_random_schedule_is_reproducible_from_the_seed_and_across_a_resume():
    a, _ = _on_sequence(seed=3, checks=40)
    b, _ = _on_sequence(seed=3, checks=40)
    c, _ = _on_sequence(seed=4, checks=40)
    assert a == b and a != c
    first, dmd = _on_sequence(seed=3, checks=15)
    rest, _ = _on_sequence(seed=99, checks=25, state=copy.deepcopy(dmd.get_extra_state()))
    assert first + rest == a


def test_unknown_measure_and_schedule_are_recipe_errors():
    net = _net()
    with pytest.raises(RecipeError, match="dmd.measure"):
        DMDDiscriminator(net, net.mask_points()[1], "feature", measure="logits")
    with pytest.raises(RecipeError, match="dmd.schedule"):
        DMDSchedule(0.8, 10, 4, schedule="sometimes")


def test_recipe_keys_reach_the_wrapper_and_the_schedule(tiny_raw):
    from types import SimpleNamespace

    from gancompress.families.recipe import recipe_from_dict
    from gancompress.method.discriminators.modes import make_mode

    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", ["discriminator.mode=dmd", "discriminator.dmd.measure=output",
                                                      "discriminator.dmd.schedule=random",
                                                      "discriminator.dmd.random_on_rate=0.25"])
    mode = make_mode(recipe.discriminator, seed=recipe.seed)
    net = _net()
    d = mode.wrap(net, net.mask_points(), "pix2pix")
    assert isinstance(d, DMDDiscriminator) and d.measure == "output"
    mode.attach(SimpleNamespace(s_discs={"G": d}))
    assert mode.schedules["G"].schedule == "random" and mode.schedules["G"].on_rate == 0.25
    with pytest.raises(RecipeError, match=r"discriminator\.dmd\.measure"):
        recipe_from_dict(tiny_raw, "tiny.yaml", ["discriminator.dmd.measure=logits"])
