"""The pruning budget: a typed value with its own recipe syntax (``3.0`` GMACs or ``"25%"``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

#: Largest GMACs budget accepted (catches typing slips).
MAX_GMACS = 1e6


@dataclass(frozen=True)
class Budget:
    """A pruning budget: ``kind`` 'gmacs' (``value`` GMACs) or 'ratio' (``value`` of the teacher's MACs).

    Written in a recipe as a number of GMACs (``3.0``) or a percentage string (``"25%"``).
    """

    kind: Literal["gmacs", "ratio"]
    value: float

    DESCRIPTION = "GMACs (a number) or a percentage like '25%'"

    @classmethod
    def from_raw(cls, raw: Any) -> "Budget":
        """Parse ``3.0`` or ``"25%"``; ValueError says what is wrong."""
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(f"expected {cls.DESCRIPTION}, got {raw!r}")
        if isinstance(raw, str):
            text = raw.strip()
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

    def to_raw(self) -> float | str:
        return self.value if self.kind == "gmacs" else f"{self.value * 100:g}%"

    def macs(self, teacher_macs: int) -> int:
        """The budget in MACs; a ratio is taken of ``teacher_macs``."""
        return int(round(self.value * 1e9)) if self.kind == "gmacs" else int(round(self.value * teacher_macs))

    def __str__(self) -> str:
        return f"{self.value:g} GMACs" if self.kind == "gmacs" else f"{self.value:.0%} of the teacher"
