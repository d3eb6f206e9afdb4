"""Stage 2: prune a generator to a MACs budget with one global threshold (METHOD 1.2).

Channels are scored (|gamma| for network slimming, mean |w| of the producing filters for L1-norm
pruning), ordered globally, and the lowest are removed physically with torch-pruning's
dependency graph, which keeps coupled layers (concatenation skips, residual adds, transposed
convolutions) consistent. The number of removed channels is found by binary search so that the
pruned generator's MACs land within a tolerance of the budget.

The pruned architecture is described by :func:`architecture_record` (every module's shape
attributes and every tensor's shape), which :func:`rebuild` applies to a freshly built full-width
generator, so a checkpoint can be loaded without repeating the search.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as tpf

from ..errors import BudgetError
from ..metrics.macs import count_macs
from ..nets.layers import CONV_TYPES, NORM_TYPES, io_layers

log = logging.getLogger(__name__)

_OUT_FNS_CONV = (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels)
_OUT_FN_NAME = "prune_out_channels"


# ----------------------------------------------------------------------------------------------
# Channel importance: one class per criterion, each scoring a torch-pruning group.

class _ProducerImportance(tp.importance.Importance):
    """Mean over the group's channel producers of a per-channel score; None if it has none."""

    def layer_scores(self, layer: nn.Module, prune_fn: Callable, idxs: list) -> torch.Tensor | None:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor | None:
        total = None
        count = None
        for i, (dep, idxs) in enumerate(group):
            root_idxs = group[i].root_idxs
            if any(r is None for r in root_idxs):
                continue
            scores = self.layer_scores(dep.layer, dep.pruning_fn, idxs)
            if scores is None:
                continue
            if total is None:
                n = len(group[0][1])
                total = torch.zeros(n, dtype=torch.float64)
                count = torch.zeros(n, dtype=torch.float64)
            index = torch.tensor(root_idxs)
            total.scatter_add_(0, index, scores.double().cpu())
            count.scatter_add_(0, index, torch.ones_like(scores, dtype=torch.float64).cpu())
        if total is None:
            return None
        return total / count.clamp_min(1)


class NormScaleImportance(_ProducerImportance):
    """Network slimming: |gamma| of the norm layers (BatchNorm, affine InstanceNorm, ...) that
    the group's channels pass through. Custom leaf modules may answer ``channel_scores('slimming')``."""

    def layer_scores(self, layer, prune_fn, idxs):
        if getattr(prune_fn, "__name__", "") != _OUT_FN_NAME:
            return None
        if isinstance(layer, NORM_TYPES):
            weight = getattr(layer, "weight", None)
            return None if weight is None else weight.detach().abs()[idxs]
        if callable(getattr(layer, "channel_scores", None)):
            try:
                return layer.channel_scores("slimming")[idxs]
            except ValueError:
                return None
        return None


class FilterL1Importance(_ProducerImportance):
    """L1-norm filter pruning: the mean |w| of each filter that produces the channel.

    The mean rather than the sum keeps filters of layers with different fan-in comparable under
    one global threshold (a 4x4x512 filter would otherwise always outscore a 4x4x3 one).
    """

    def layer_scores(self, layer, prune_fn, idxs):
        if prune_fn in _OUT_FNS_CONV:
            w = layer.weight.detach()
            if isinstance(layer, CONV_TYPES) and layer.transposed:
                w = w.transpose(0, 1)
            return w[idxs].flatten(1).abs().mean(1)
        if getattr(prune_fn, "__name__", "") == _OUT_FN_NAME and callable(getattr(layer, "channel_scores", None)):
            return layer.channel_scores("l1")[idxs]
        return None


IMPORTANCE = {"slimming": NormScaleImportance, "l1": FilterL1Importance}


def get_importance(method: str) -> tp.importance.Importance:
    try:
        return IMPORTANCE[method]()
    except KeyError:
        raise ValueError(f"unknown pruning method {method!r} (valid: {', '.join(IMPORTANCE)})") from None


# ----------------------------------------------------------------------------------------------
# Scoring every prunable group once, on the original model.

@dataclass
class _Group:
    root_name: str          # module name of the group's root layer
    scores: torch.Tensor    # (C,) one score per root channel

    @property
    def width(self) -> int:
        return self.scores.numel()


def _build_graph(model: nn.Module, example: torch.Tensor, custom_pruners: dict):
    return tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                 customized_pruners=dict(custom_pruners or {}))


def _root_types(custom_pruners: dict) -> tuple:
    return (nn.Conv2d, nn.ConvTranspose2d, nn.Linear) + tuple(custom_pruners or {})


def score_groups(model: nn.Module, example: torch.Tensor, method: str,
                 custom_pruners: dict | None = None) -> list[_Group]:
    """Score every prunable channel group of ``model``.

    The layer writing the output image is never a root, so image channels are kept; the input
    image has no producer, so its channels are never scored.
    """
    importance = get_importance(method)
    graph = _build_graph(model, example, custom_pruners)
    _, out_layer = io_layers(model, example)
    names = {m: n for n, m in model.named_modules()}
    groups = []
    for group in graph.get_all_groups(ignored_layers=[out_layer], root_module_types=_root_types(custom_pruners)):
        scores = importance(group)
        if scores is None:
            continue
        groups.append(_Group(names[group[0][0].target.module], scores.float()))
    return groups


def _removal_plan(groups: list[_Group], k: int, order: torch.Tensor, offsets: list[int],
                  round_to: int) -> dict[int, list[int]]:
    """Channels to remove when the ``k`` lowest-scored channels (globally) go.

    Each group keeps at least one channel (its best); with ``round_to`` > 1 each kept width is
    rounded up to a multiple of it (or the full width) by keeping the next-best channels.
    """
    chosen = order[:k].tolist()
    plan: dict[int, list[int]] = {}
    bounds = torch.tensor(offsets[1:])
    for flat in chosen:
        gi = int(torch.searchsorted(bounds, flat, right=True))
        plan.setdefault(gi, []).append(flat - offsets[gi])
    for gi, idxs in list(plan.items()):
        width = groups[gi].width
        keep = width - len(idxs)
        target_keep = max(1, keep)
        if round_to > 1:
            target_keep = min(width, int(math.ceil(target_keep / round_to) * round_to))
        if target_keep != keep:
            by_score = sorted(idxs, key=lambda c: float(groups[gi].scores[c]))  # lowest first
            idxs = by_score[: width - target_keep]
        if idxs:
            plan[gi] = sorted(idxs)
        else:
            del plan[gi]
    return plan


def apply_plan(model: nn.Module, example: torch.Tensor, groups: list[_Group], plan: dict[int, list[int]],
               custom_pruners: dict | None = None) -> nn.Module:
    """A pruned deep copy of ``model`` with the planned channels removed."""
    work = copy.deepcopy(model)
    graph = _build_graph(work, example, custom_pruners)
    modules = dict(work.named_modules())
    for gi, idxs in sorted(plan.items()):
        root = modules[groups[gi].root_name]
        pruner = graph.get_pruner_of_module(root)
        group = graph.get_pruning_group(root, pruner.prune_out_channels, idxs)
        group.prune()
    return work


class Candidates:
    """The pruned generators one global threshold can make: candidate ``k`` removes the ``k``
    lowest-scored channels of ``model`` (0 <= k <= :attr:`total`), with ``round_to`` applied.

    Channels are scored once, on ``model``; each candidate is built on demand as a pruned deep
    copy. Candidates that round to the same widths share one :meth:`key`, so a search can
    measure each width vector once.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, *, method: str, round_to: int = 1,
                 custom_pruners: dict | None = None):
        self.model, self.example = model.eval(), example
        self.round_to, self.custom_pruners = round_to, custom_pruners
        self.groups = score_groups(self.model, example, method, custom_pruners)
        if not self.groups:
            raise BudgetError(f"no prunable channel group found for sparse.method '{method}' (slimming needs "
                              "norm layers with scales; try sparse.method: l1)")
        self.offsets = [0]
        for g in self.groups:
            self.offsets.append(self.offsets[-1] + g.width)
        flat = torch.cat([g.scores for g in self.groups])
        self.order = torch.argsort(flat, stable=True)
        self.total = flat.numel()

    def plan(self, k: int) -> dict[int, list[int]]:
        return _removal_plan(self.groups, k, self.order, self.offsets, self.round_to)

    def key(self, k: int) -> tuple:
        """The kept width of every group at candidate ``k``: equal keys, equal architectures."""
        plan = self.plan(k)
        return tuple(g.width - len(plan.get(i, ())) for i, g in enumerate(self.groups))

    def build(self, k: int) -> nn.Module:
        return apply_plan(self.model, self.example, self.groups, self.plan(k), self.custom_pruners)

    def removed(self, k: int) -> int:
        return sum(len(v) for v in self.plan(k).values())


def bisect_count(value: Callable[[int], float], lo: int, hi: int, threshold: float,
                 accept: Callable[[float], bool] | None = None) -> int:
    """The smallest removal count in (lo, hi] whose ``value`` is at most ``threshold``, by bisection.

    ``value`` falls as more channels go; the caller knows ``value(lo) > threshold >= value(hi)``.
    With ``accept``, the search stops at the first count whose value it accepts.
    """
    while hi - lo > 1:
        mid = (lo + hi) // 2
        v = value(mid)
        if accept is not None and accept(v):
            return mid
        if v > threshold:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class PruneResult:
    model: nn.Module
    macs: int               # complete MACs of the pruned model at the example shape
    budget: int
    removed: int            # channels removed in all
    total: int              # prunable channels before pruning
    evaluations: int
    latency_ms: float | None = None  # measured latency of the result, for a latency budget


def macs_counter(candidates: Candidates, macs_fn: Callable[[nn.Module, torch.Tensor], int] | None = None
                 ) -> Callable[[int], int]:
    """``k -> MACs`` of candidate ``k`` (complete count unless ``macs_fn``), counted once per width vector."""
    macs_fn = macs_fn or (lambda m, x: count_macs(m, x).complete)
    cache: dict[tuple, int] = {}

    def macs(k: int) -> int:
        key = candidates.key(k)
        if key not in cache:
            cache[key] = int(macs_fn(candidates.build(k), candidates.example))
        return cache[key]

    macs.cache = cache
    return macs


def prune_to_budget(model: nn.Module, example: torch.Tensor, *, method: str, budget_macs: int,
                    tolerance: float = 0.02, round_to: int = 1, custom_pruners: dict | None = None,
                    macs_fn: Callable[[nn.Module, torch.Tensor], int] | None = None) -> PruneResult:
    """Remove the globally least important channels until MACs are within tolerance of the budget.

    Args:
        model: the (sparse) generator; not modified.
        example: an input batch of 1 at the shape MACs are counted at.
        method: 'slimming' or 'l1'.
        budget_macs: target MACs (complete count, see ``metrics.macs``).
        tolerance: accepted relative distance of the result to the budget.
        round_to: keep every pruned width a multiple of this (tensor-core friendly widths).
        custom_pruners: torch-pruning pruners for leaf modules it cannot trace through.
        macs_fn: counts MACs of a model; defaults to the complete count.

    Raises:
        BudgetError: the budget cannot be reached within tolerance; says the nearest MACs.
    """
    cands = Candidates(model, example, method=method, round_to=round_to, custom_pruners=custom_pruners)
    evaluate = macs_counter(cands, macs_fn)
    total = cands.total
    lo_ok, hi_ok = budget_macs * (1 - tolerance), budget_macs * (1 + tolerance)
    full = evaluate(0)
    if full <= hi_ok:
        if full < lo_ok:
            raise BudgetError(f"the budget {budget_macs / 1e9:.4g} GMACs is above the model's own "
                              f"{full / 1e9:.4g} GMACs: raise prune.budget's denominator or lower the budget")
        return PruneResult(cands.build(0), full, budget_macs, 0, total, 1)
    floor = evaluate(total)
    if floor > hi_ok:
        raise BudgetError(f"prune.budget {budget_macs / 1e9:.4g} GMACs is below the smallest reachable "
                          f"{floor / 1e9:.4g} GMACs (one channel kept per layer): raise prune.budget")
    best = bisect_count(evaluate, 0, total, hi_ok)
    if evaluate(best) < lo_ok:
        # MACs need not fall smoothly with k (rounding, coupled groups): look around the boundary.
        for k in range(max(0, best - 8), min(total, best + 8) + 1):
            if abs(evaluate(k) - budget_macs) < abs(evaluate(best) - budget_macs):
                best = k
    macs = evaluate(best)
    if not lo_ok <= macs <= hi_ok:
        nearest = min(evaluate.cache.values(), key=lambda v: abs(v - budget_macs))
        raise BudgetError(
            f"cannot reach {budget_macs / 1e9:.4g} GMACs within {tolerance:.1%}: the nearest reachable is "
            f"{nearest / 1e9:.4g} GMACs; raise prune.tolerance or lower prune.round_to")
    removed = cands.removed(best)
    log.info("pruned %d of %d channels: %.4g -> %.4g GMACs (budget %.4g, %d evaluations)",
             removed, total, full / 1e9, macs / 1e9, budget_macs / 1e9, len(evaluate.cache))
    return PruneResult(cands.build(best), macs, budget_macs, removed, total, len(evaluate.cache))


# ----------------------------------------------------------------------------------------------
# Describing a pruned architecture so it can be rebuilt.

_ATTR_TYPES = (int, float, bool, str)


def _plain_attrs(module: nn.Module) -> dict:
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, _ATTR_TYPES) or (isinstance(value, tuple) and all(isinstance(v, _ATTR_TYPES) for v in value)):
            out[key] = value
    return out


def architecture_record(model: nn.Module) -> dict:
    """Every module's plain attributes and every tensor's shape: enough to rebuild the widths.

    Returns plain data (dicts, lists, numbers, strings) loadable with ``weights_only=True``.
    """
    attrs = {name: _plain_attrs(m) for name, m in model.named_modules()}
    shapes = {}
    for name, m in model.named_modules():
        for key, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is not None:
                shapes[f"{name}.{key}" if name else key] = list(t.shape)
    return {"attrs": attrs, "shapes": shapes}


def rebuild(model: nn.Module, record: dict) -> nn.Module:
    """Resize a freshly built full-width ``model`` in place to the recorded architecture.

    Tensors get the recorded shapes (uninitialised: load a state dict afterwards); modules get the
    recorded attributes (``in_channels``, ``num_features``, ...).
    """
    modules = dict(model.named_modules())
    missing = [n for n in record["attrs"] if n not in modules]
    if missing:
        raise ValueError(f"the recorded architecture has modules this model lacks: {missing[:3]}")
    for name, attrs in record["attrs"].items():
        module = modules[name]
        for key, value in attrs.items():
            setattr(module, key, tuple(value) if isinstance(value, list) else value)
        for store in (module._parameters, module._buffers):
            for key, t in list(store.items()):
                full = f"{name}.{key}" if name else key
                if t is None or full not in record["shapes"]:
                    continue
                shape = torch.Size(record["shapes"][full])
                if t.shape != shape:
                    new = torch.empty(shape, dtype=t.dtype, device=t.device)
                    store[key] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
    return model


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every conv / linear / custom leaf, by module name, for reports."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, CONV_TYPES):
            widths[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            widths[name] = m.out_features
    return widths
