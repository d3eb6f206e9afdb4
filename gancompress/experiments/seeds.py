"""Repeating a measurement over seeds, and telling a difference from the spread.

A table row run with seeds ``recipe.seed, +1, ...`` reports its mean and sample standard
deviation (:class:`Spread`). Two rows differ only where their means lie further apart than their
spreads together (:func:`differs`): ``|mean_a - mean_b| > std_a + std_b``. Anything closer is
"within spread"; with one seed there is no spread and no difference can be called.

The metric keys the registry reports are told apart by their direction (:data:`HIGHER_IS_BETTER`);
the headline key of a table is the first of :data:`HEADLINE_ORDER` that has values.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..errors import RecipeError
from ..metrics.keys import HEADLINE_ORDER, HIGHER_IS_BETTER  # noqa: F401  (re-exported: their home was here)

RULE = "|mean_a - mean_b| > std_a + std_b (sample standard deviations over the seeds)"


def select_keys(keys: list[str] | None, table: list[str] | tuple[str, ...] | dict, option: str,
                noun: str) -> list[str]:
    """The table keys to run, in table order (all when none are given); an unknown key names the
    command-line option and lists the valid ones."""
    if not keys:
        return list(table)
    unknown = [k for k in keys if k not in table]
    if unknown:
        raise RecipeError(f"{option}: unknown {noun} {unknown[0]!r} (valid: {', '.join(table)})")
    return [k for k in table if k in keys]


def seed_schedule(base: int, count: int) -> list[int]:
    """The seeds of ``count`` repeats: ``base``, ``base + 1``, ..."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return [base + k for k in range(count)]


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of one figure over seeds.

    Attributes:
        values: the per-seed values, in seed order.
        mean: their mean.
        std: their sample standard deviation (n - 1), or None for a single value.
    """

    values: tuple[float, ...]
    mean: float
    std: float | None

    @classmethod
    def of(cls, values) -> "Spread":
        """The spread of ``values`` (at least one finite number)."""
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("a spread needs at least one value")
        std = statistics.stdev(vals) if len(vals) > 1 else None
        return cls(vals, statistics.fmean(vals), std)

    @property
    def n(self) -> int:
        return len(self.values)

    def format(self, digits: int = 4) -> str:
        """``"mean ± std"``, or the value alone for one seed."""
        if self.std is None:
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {self.std:.2g}"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n, "values": list(self.values)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Spread | None":
        """The inverse of :meth:`as_dict` (None stays None)."""
        return None if d is None else cls(tuple(float(v) for v in d["values"]), float(d["mean"]), d["std"])


def spread_or_none(values) -> Spread | None:
    """:meth:`Spread.of` the values that are numbers, or None when there are none."""
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return Spread.of(vals) if vals else None


def differs(a: Spread, b: Spread) -> bool | None:
    """Whether ``a`` and ``b`` differ beyond their spread (:data:`RULE`); None when either has
    a single seed, so no spread to judge by."""
    if a.std is None or b.std is None:
        return None
    return abs(a.mean - b.mean) > a.std + b.std


def better(key: str, a: float, b: float) -> bool:
    """Whether value ``a`` of metric ``key`` is better than ``b``."""
    return a > b if HIGHER_IS_BETTER.get(key, True) else a < b


def _signed(delta: float) -> str:
    return f"{delta:+.3g}"


def compare(key: str, a: Spread, b: Spread) -> str:
    """Verdict on "is ``a`` better than ``b``" for metric ``key``, with the mean difference a - b.

    ``"yes (+1.2)"`` or ``"no (-0.8)"`` where the rule calls a difference, ``"within spread
    (+0.3)"`` where it does not, ``"one seed, no spread (+0.3)"`` where it cannot judge.
    """
    delta = _signed(a.mean - b.mean)
    verdict = differs(a, b)
    if verdict is None:
        return f"one seed, no spread ({delta})"
    if not verdict:
        return f"within spread ({delta})"
    return f"yes ({delta})" if better(key, a.mean, b.mean) else f"no ({delta})"


def within_std(key: str, student: Spread, teacher: Spread) -> str:
    """Verdict on "is the student within one teacher standard deviation of the teacher".

    ``"yes (-0.4)"`` when ``|mean_s - mean_t| <= std_t``; otherwise ``"no, worse (-2.1)"`` or
    ``"no, better (+1.5)"``; ``"one seed, no spread (...)"`` when the teacher has one seed.
    """
    delta = _signed(student.mean - teacher.mean)
    if teacher.std is None:
        return f"one seed, no spread ({delta})"
    if abs(student.mean - teacher.mean) <= teacher.std:
        return f"yes ({delta})"
    return f"no, better ({delta})" if better(key, student.mean, teacher.mean) else f"no, worse ({delta})"


def headline_keys(keys) -> list[str]:
    """The table-worthy keys among ``keys``, in :data:`HEADLINE_ORDER`."""
    present = set(keys)
    return [k for k in HEADLINE_ORDER if k in present]
