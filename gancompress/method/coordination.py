"""The retention factors' objective: global coordination and local capacity (METHOD 2)."""
from __future__ import annotations

import torch

from . import losses


def gap(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """``|L_G_adv - L_D_fake|`` on the same fake logits: what G is told minus what D is told."""
    return (losses.g_adv(kind, fake_logits) - losses.d_fake(kind, fake_logits)).abs()


def ema_beta(epoch: int, total_epochs: int) -> float:
    """``beta_t = epoch_current / epoch_total`` (GCC appendix eq. III), epoch counted from 0."""
    return epoch / max(1, total_epochs)


def alpha_lr(base: float, epoch: int, decay_every: int, decay: float) -> float:
    """Step decay of the retention factors' learning rate: x``decay`` every ``decay_every`` epochs."""
    return base * decay ** (epoch // decay_every)


class EmaTarget:
    """``L_target <- beta * L_target_prev + (1 - beta) * gap_teacher`` (appendix eq. II).

    The first update takes the teacher's gap as it is. The value stays a device tensor, so the
    training loop never waits on it.
    """

    def __init__(self):
        self.value: torch.Tensor | None = None

    def update(self, teacher_gap: torch.Tensor, beta: float) -> torch.Tensor:
        g = teacher_gap.detach().float()
        self.value = g if self.value is None else beta * self.value + (1.0 - beta) * g
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def alpha_objective(student_gap: torch.Tensor, target: torch.Tensor, d_real: torch.Tensor,
                    d_fake: torch.Tensor, local_weight: float, use_global: bool = True) -> torch.Tensor:
    """``|gap(D_S, G_S) - L_target| + c * (L_D_real + L_D_fake)`` for one discriminator."""
    local = local_weight * (d_real + d_fake)
    if not use_global:
        return local
    return (student_gap - target).abs() + local
