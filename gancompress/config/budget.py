"""The pruning budget: a typed value with its own recipe syntax (``3.0`` GMACs, ``"25%"`` or ``"6ms@onnxruntime:b1"``)."""
from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

#: Largest GMACs budget accepted (catches typing slips).
MAX_GMACS = 1e6
#: Largest latency target (ms) and batch a latency budget accepts (catch typing slips).
MAX_MS = 1e6
MAX_BATCH = 4096
#: The runtimes a latency budget may name: the keys of ``gancompress.metrics.runtimes.RUNTIMES``
#: (the recipe layer may not import metrics; tests/test_latency_budget.py checks they agree).
RuntimeName = Literal["eager", "torchscript", "onnxruntime", "openvino"]
RUNTIME_NAMES: tuple[str, ...] = typing.get_args(RuntimeName)
LATENCY_FORM = "'<number>ms@<runtime>:b<batch>' like '6ms@onnxruntime:b1'"

_LATENCY = re.compile(r"(?P<ms>[^@]*?)\s*ms\s*@\s*(?P<runtime>[^:]*?)\s*:\s*b(?P<batch>\S*)")


@dataclass(frozen=True)
class Budget:
    """A pruning budget: ``kind`` 'gmacs' (``value`` GMACs), 'ratio' (``value`` of the teacher's MACs)
    or 'latency' (``value`` ms measured on ``runtime`` at batch ``batch``).

    Written in a recipe as a number of GMACs (``3.0``), a percentage string (``"25%"``) or a
    latency target (``"6ms@onnxruntime:b1"``, ``"12.5ms@eager:b8"``).
    """

    kind: Literal["gmacs", "ratio", "latency"]
    value: float
    runtime: str = ""  # latency budgets only: a name in RUNTIME_NAMES
    batch: int = 0  # latency budgets only: the batch size timed

    DESCRIPTION = f"GMACs (a number), a percentage like '25%' or a latency target {LATENCY_FORM}"

    @classmethod
    def from_raw(cls, raw: Any) -> "Budget":
        """Parse ``3.0``, ``"25%"`` or ``"6ms@onnxruntime:b1"``; ValueError says what is wrong."""
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(f"expected {cls.DESCRIPTION}, got {raw!r}")
        if isinstance(raw, str):
            text = raw.strip()
            if "@" in text or text.lower().endswith("ms"):
                return cls._latency(raw)
            if text.endswith("%"):
                try:
                    ratio = float(text[:-1]) / 100.0
                except ValueError:
                    raise ValueError(f"expected a percentage like '25%', got {raw!r}") from None
                if not 0.0 < ratio <= 1.0:
                    raise ValueError(f"a ratio budget must lie in (0%, 100%], got {raw!r}")
                return cls("ratio", ratio)
            try:
                raw = float(text)
            except ValueError:
                raise ValueError(f"expected {cls.DESCRIPTION}, got {raw!r}") from None
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value) or not 0 < value <= MAX_GMACS:
            raise ValueError(f"a GMACs budget must be a positive number below {MAX_GMACS:g}, got {raw!r}")
        return cls("gmacs", value)

    @classmethod
    def _latency(cls, raw: str) -> "Budget":
        match = _LATENCY.fullmatch(raw.strip())
        if match is None:
            raise ValueError(f"expected a latency target {LATENCY_FORM}, got {raw!r}")
        try:
            ms = float(match["ms"])
        except ValueError:
            ms = math.nan
        if not math.isfinite(ms) or not 0 < ms <= MAX_MS:
            raise ValueError(f"a latency target must be a positive number of ms below {MAX_MS:g} ({LATENCY_FORM}), "
                             f"got {raw!r}")
        if match["runtime"] not in RUNTIME_NAMES:
            raise ValueError(f"unknown runtime {match['runtime']!r} in {raw!r}: choose from {', '.join(RUNTIME_NAMES)}")
        batch = match["batch"]
        if not batch.isdigit() or not 1 <= int(batch) <= MAX_BATCH:
            raise ValueError(f"the batch of a latency target must be an integer from 1 to {MAX_BATCH} "
                             f"({LATENCY_FORM}), got {raw!r}")
        return cls("latency", ms, match["runtime"], int(batch))

    @property
    def is_latency(self) -> bool:
        return self.kind == "latency"

    def to_raw(self) -> float | str:
        if self.kind == "latency":
            return f"{self.value:g}ms@{self.runtime}:b{self.batch}"
        return self.value if self.kind == "gmacs" else f"{self.value * 100:g}%"

    def macs(self, teacher_macs: int) -> int:
        """The budget in MACs; a ratio is taken of ``teacher_macs``. A latency budget has none
        before it is measured (ValueError: callers ask :attr:`is_latency` first)."""
        if self.kind == "latency":
            raise ValueError(f"the latency budget {self} has no MACs until the pruning search measures it")
        return int(round(self.value * 1e9)) if self.kind == "gmacs" else int(round(self.value * teacher_macs))

    def __str__(self) -> str:
        if self.kind == "latency":
            return f"{self.value:g} ms on {self.runtime} at batch {self.batch}"
        return f"{self.value:g} GMACs" if self.kind == "gmacs" else f"{self.value:.0%} of the teacher"
