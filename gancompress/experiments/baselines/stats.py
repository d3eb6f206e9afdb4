"""Paired statistics over seeds: the mean per-seed difference of two rows with a bootstrap
confidence interval.

Every row of a baselines run uses the same seeds, and a seed fixes the student's start, the data
order and the discriminator's initial weights alike for every row, so row A and row B are compared
seed by seed: ``d_s = A_s - B_s`` (signed so that a positive value means A is better, whatever
the metric's direction). The interval is the percentile bootstrap of the mean of the ``d_s``:
resample the seeds with replacement, take the mean, and read the 2.5th and 97.5th percentiles of
those means. With few seeds the interval is wide, and with one seed it is a single point: the
width says how much the seeds can tell.
"""
from __future__ import annotations

import math
import random
import statistics


def paired_difference(a: dict[int, float], b: dict[int, float], *, higher_is_better: bool,
                      resamples: int = 10_000, level: float = 0.95, rng_seed: int = 0) -> dict:
    """The mean of ``a[s] - b[s]`` over the seeds both have, signed so that positive means ``a`` is
    better, with its percentile-bootstrap ``level`` interval.

    Args:
        a, b: seed -> metric value of two rows.
        higher_is_better: the metric's direction (mIoU, PSNR: True; FID: False).
        resamples: bootstrap resamples of the seeds.
        level: the interval's coverage.
        rng_seed: the resampling's seed (the interval is reproducible).

    Returns:
        ``{"mean", "ci_low", "ci_high", "level", "per_seed": {seed: d}, "seeds", "resamples"}``;
        ``mean`` and the interval are None when no seed has both values.
    """
    sign = 1.0 if higher_is_better else -1.0
    seeds = sorted(s for s in set(a) & set(b) if _finite(a[s]) and _finite(b[s]))
    diffs = [sign * (float(a[s]) - float(b[s])) for s in seeds]
    out = {"per_seed": {str(s): d for s, d in zip(seeds, diffs)}, "seeds": seeds, "resamples": resamples,
           "level": level, "mean": None, "ci_low": None, "ci_high": None}
    if not diffs:
        return out
    rng = random.Random(rng_seed)
    n = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(resamples))
    tail = (1.0 - level) / 2.0
    out.update(mean=statistics.fmean(diffs), ci_low=_percentile(means, tail), ci_high=_percentile(means, 1.0 - tail))
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 1]) of an ascending list."""
    pos = q * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
