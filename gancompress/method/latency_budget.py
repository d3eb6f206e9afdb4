"""Stage 2 to a latency budget: the global removal count searched by measured latency.

A latency budget (``prune.budget: "6ms@onnxruntime:b1"``) is met the way a MACs budget is, with
one global threshold (:class:`~gancompress.method.pruning.Candidates`), but candidate ``k`` is
judged by its measured latency. Timing is slow and noisy, so the search measures as few
candidates as it can and each only once:

1. the unpruned model (``k = 0``) and the smallest net (every channel but one, or ``round_to``,
   per group) bound what is reachable; a target outside them is a one-line :class:`BudgetError`;
2. the start is the count whose MACs the target implies at the unpruned model's measured
   ms per MAC (MACs are cheap to count), and the bracket grows from there in doubling steps;
3. bisection on ``k`` inside the bracket stops at the first candidate within the tolerance.

Latency is cached per width vector (counts that round to the same widths are one net). The
core, :func:`search_latency`, takes a ``measure(k) -> ms`` callable and knows nothing of nets,
so it can be driven by a model of latency; :func:`prune_to_latency` feeds it pruned nets.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import BudgetError
from .pruning import Candidates, PruneResult, bisect_count, macs_counter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencySearch:
    """Where :func:`search_latency` ended: removal count ``k``, its latency ``ms`` and every
    count it measured (``measured``: k -> ms, in the order measured)."""

    k: int
    ms: float
    measured: dict[int, float]


def search_latency(measure: Callable[[int], float], *, total: int, target_ms: float, tolerance: float,
                   start: Callable[[], int] | None = None, what: str = "") -> LatencySearch:
    """The removal count whose latency lies within ``tolerance`` of ``target_ms``.

    Args:
        measure: k -> measured ms of the candidate that removes k channels (0 <= k <= total);
            expected to fall as k grows, up to noise; called at most once per k.
        total: the largest count (every group down to its last channels).
        target_ms: the latency budget.
        tolerance: accepted relative distance of the result's latency from ``target_ms``.
        start: () -> a first guess of the count, asked once the target is known to be reachable.
        what: where the latency is measured ('on onnxruntime at batch 1'), for the messages.

    Raises:
        BudgetError: the unpruned model already meets the target, the smallest net does not, or no
            measured count lies within the tolerance (the message names the nearest).
    """
    cache: dict[int, float] = {}

    def ms(k: int) -> float:
        if k not in cache:
            cache[k] = float(measure(k))
        return cache[k]

    lo_ok, hi_ok = target_ms * (1 - tolerance), target_ms * (1 + tolerance)
    where = f" {what}" if what else ""
    full = ms(0)
    if full <= hi_ok:
        raise BudgetError(f"prune.budget: the unpruned model already runs in {full:.3g} ms{where}, no slower than "
                          f"the target {target_ms:g} ms + {tolerance:.0%}: nothing to prune; lower the target or give "
                          "a MACs budget")
    floor = ms(total)
    if floor > hi_ok:
        raise BudgetError(f"prune.budget: the target {target_ms:g} ms{where} is faster than the smallest prunable "
                          f"net's {floor:.3g} ms (unpruned {full:.3g} ms): raise the target")

    def within(v: float) -> bool:
        return lo_ok <= v <= hi_ok

    lo, hi = 0, total  # invariant: ms(lo) > hi_ok >= ms(hi)
    if start is not None:
        guess = min(max(int(start()), 1), total - 1)
        found, lo, hi = _bracket(ms, guess, total, hi_ok, within)
        if found is not None:
            return LatencySearch(found, cache[found], dict(cache))
    best = bisect_count(ms, lo, hi, hi_ok, accept=within)
    if not within(ms(best)):
        nearest = min(cache, key=lambda k: abs(cache[k] - target_ms))
        raise BudgetError(f"prune.budget: cannot reach {target_ms:g} ms{where} within {tolerance:.0%}: the nearest "
                          f"measured net runs in {cache[nearest]:.3g} ms; raise prune.latency_tolerance or lower "
                          "prune.round_to")
    return LatencySearch(best, cache[best], dict(cache))


def _bracket(ms: Callable[[int], float], guess: int, total: int, hi_ok: float,
             within: Callable[[float], bool]) -> tuple[int | None, int, int]:
    """(a count within the tolerance or None, lo, hi) with ms(lo) > hi_ok >= ms(hi), found by
    stepping out from ``guess`` in doubling steps (ms(0) > hi_ok >= ms(total) is known)."""
    step = max(1, total // 32)
    v = ms(guess)
    if within(v):
        return guess, 0, total
    if v > hi_ok:  # too slow: more channels must go
        lo, hi = guess, min(total, guess + step)
        while hi < total:
            v = ms(hi)
            if within(v):
                return hi, lo, hi
            if v <= hi_ok:
                break
            lo, step = hi, step * 2
            hi = min(total, hi + step)
        return None, lo, hi
    lo, hi = max(0, guess - step), guess
    while lo > 0:
        v = ms(lo)
        if within(v):
            return lo, lo, hi
        if v > hi_ok:
            break
        hi, step = lo, step * 2
        lo = max(0, lo - step)
    return None, lo, hi


def prune_to_latency(model: nn.Module, example: torch.Tensor, *, method: str, target_ms: float, tolerance: float,
                     measure: Callable[[nn.Module], float], round_to: int = 1, custom_pruners: dict | None = None,
                     macs_fn: Callable[[nn.Module, torch.Tensor], int] | None = None, what: str = "") -> PruneResult:
    """Remove the globally least important channels until the measured latency is within tolerance.

    Args:
        model: the (sparse) generator; not modified.
        example: an input batch of 1 at the shape MACs are counted at.
        method: 'slimming' or 'l1'.
        target_ms: the latency budget.
        tolerance: accepted relative distance of the measured latency from ``target_ms``
            (``prune.latency_tolerance``: wider than the MACs ``prune.tolerance``, as timings are noisy).
        measure: pruned model -> its latency in ms on the budget's runtime and batch.
        round_to, custom_pruners, macs_fn: as :func:`~gancompress.method.pruning.prune_to_budget`.
        what: where the latency is measured, for the messages.

    Returns:
        The pruned model with its MACs; ``budget`` holds those MACs too (the MACs the target came
        to), ``latency_ms`` its measured latency, ``evaluations`` the nets timed.
    """
    cands = Candidates(model, example, method=method, round_to=round_to, custom_pruners=custom_pruners)
    macs = macs_counter(cands, macs_fn)
    by_widths: dict[tuple, float] = {}

    def ms(k: int) -> float:
        key = cands.key(k)
        if key not in by_widths:
            by_widths[key] = float(measure(cands.build(k)))
            log.info("latency search: %d of %d channels removed: %.3f ms", cands.removed(k), cands.total,
                     by_widths[key])
        return by_widths[key]

    def estimate() -> int:
        """The count whose MACs the target implies at the unpruned model's ms per MAC."""
        target_macs = macs(0) * target_ms / ms(0)
        if macs(cands.total) >= target_macs:
            return cands.total
        return bisect_count(macs, 0, cands.total, target_macs)

    found = search_latency(ms, total=cands.total, target_ms=target_ms, tolerance=tolerance, start=estimate,
                           what=what)
    result_macs = macs(found.k)
    log.info("pruned %d of %d channels to %.3f ms%s (target %g ms, %.4g GMACs, %d nets timed)",
             cands.removed(found.k), cands.total, found.ms, f" {what}" if what else "", target_ms, result_macs / 1e9,
             len(by_widths))
    return PruneResult(cands.build(found.k), result_macs, result_macs, cands.removed(found.k), cands.total,
                       len(by_widths), latency_ms=found.ms)
