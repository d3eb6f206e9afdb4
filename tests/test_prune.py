import pytest
import torch
from torch import nn

from gancompress.errors import BudgetError
from gancompress.method.pruning import (
    _removal_plan,
    apply_plan,
    architecture_record,
    prune_to_budget,
    rebuild,
    score_groups,
)
from gancompress.method.sparsity import penalised_parameters, proximal_l1_step
from gancompress.metrics.macs import count_macs
from gancompress.nets.unet import UnetGenerator


def _unet(seed=0):
    torch.manual_seed(seed)
    g = UnetGenerator(3, 3, num_downs=5, ngf=8).eval()
    for m in g.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.0, 1.0)
            m.running_mean.uniform_(-0.1, 0.1)
    return g


X = torch.randn(1, 3, 32, 32)


def test_unet_shapes_and_published_counts():
    g = UnetGenerator(3, 3, num_downs=5, ngf=8)
    assert g(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert len(g.convs()) == 10
    big = UnetGenerator(3, 3, num_downs=8, ngf=64)
    m = count_macs(big, torch.zeros(1, 3, 256, 256))
    assert m.params == 54_413_955            # pix2pix unet_256
    assert abs(m.thop / 1e9 - 18.15) < 0.01  # the published 18.15 GMACs


@pytest.mark.parametrize("method", ["slimming", "l1"])
def test_prune_hits_budget_keeps_shape(method):
    g = _unet()
    full = count_macs(g, X).complete
    res = prune_to_budget(g, X, method=method, budget_macs=int(0.5 * full), tolerance=0.03)
    assert abs(res.macs - 0.5 * full) <= 0.03 * 0.5 * full
    assert count_macs(res.model, X).complete == res.macs < full
    assert res.model(X).shape == X.shape
    # image channels untouched, at least one channel everywhere
    convs = res.model.convs()
    assert convs[0].in_channels == 3 and convs[-1].out_channels == 3
    assert all(c.out_channels >= 1 for c in convs)


def test_pruning_zeroed_channels_keeps_the_output():
    """Zero the channels the plan removes first: the pruned net computes the same function."""
    g = _unet()
    groups = score_groups(g, X, "slimming")
    offsets = [0]
    for grp in groups:
        offsets.append(offsets[-1] + grp.width)
    order = torch.argsort(torch.cat([grp.scores for grp in groups]), stable=True)
    plan = _removal_plan(groups, order.numel() // 2, order, offsets, 1)
    modules = dict(g.named_modules())
    with torch.no_grad():
        for gi, idxs in plan.items():
            # the group's root is the conv; its BN follows in the same block: zero scale and shift
            root = modules[groups[gi].root_name]
            block = next(b for b in list(g.downs) + list(g.ups) if any(m is root for m in b))
            bn = next(m for m in block if isinstance(m, nn.BatchNorm2d))
            bn.weight[idxs] = 0.0
            bn.bias[idxs] = 0.0
    before = g(X)
    pruned = apply_plan(g, X, groups, plan)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in g.parameters())
    assert torch.allclose(pruned(X), before, atol=1e-5)


def test_unreachable_budget_says_the_nearest():
    g = _unet()
    with pytest.raises(BudgetError, match="smallest reachable"):
        prune_to_budget(g, X, method="l1", budget_macs=10, tolerance=0.02)
    with pytest.raises(BudgetError, match="above the model's own"):
        prune_to_budget(g, X, method="l1", budget_macs=10 ** 12, tolerance=0.02)


def test_round_to_keeps_widths_multiples():
    g = UnetGenerator(3, 3, num_downs=5, ngf=16).eval()
    full = count_macs(g, X).complete
    res = prune_to_budget(g, X, method="l1", budget_macs=int(0.5 * full), tolerance=0.1, round_to=8)
    widths = [c.out_channels for c in res.model.convs()[:-1]]
    assert all(w % 8 == 0 for w in widths), widths


def test_architecture_record_rebuilds_pruned_model():
    g = _unet()
    res = prune_to_budget(g, X, method="slimming", budget_macs=int(0.4 * count_macs(g, X).complete), tolerance=0.05)
    record = architecture_record(res.model)
    fresh = rebuild(UnetGenerator(3, 3, num_downs=5, ngf=8), record)
    fresh.load_state_dict(res.model.state_dict())
    fresh.eval()
    assert torch.equal(fresh(X), res.model(X))


def test_l1_penalty_skips_image_layers():
    g = _unet()
    first, last = g.convs()[0], g.convs()[-1]
    params = penalised_parameters(g, "l1", X)
    assert all(p is not first.weight and p is not last.weight for p in params)
    assert len(params) == len(g.convs()) - 2
    slim = penalised_parameters(g, "slimming", X)
    assert all(p.dim() == 1 for p in slim) and len(slim) == 7


def test_proximal_step_soft_thresholds_by_the_threshold():
    w = torch.nn.Parameter(torch.tensor([0.5, -0.5, 0.003, -0.001, 0.0]))
    proximal_l1_step([w], 0.004)
    assert torch.allclose(w.detach(), torch.tensor([0.496, -0.496, 0.0, 0.0, 0.0]))
    proximal_l1_step([w], 0.0)  # no penalty, no change
    assert torch.allclose(w.detach(), torch.tensor([0.496, -0.496, 0.0, 0.0, 0.0]))
