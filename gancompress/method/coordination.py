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


#: GCC's learning rate of the retention factors (appendix), set for runs of about 10^5 iterations.
PAPER_ALPHA_LR = 1e-4


def alpha_lr_at(base: float, epoch: int, decay_every: int, decay: float) -> float:
    """Step decay of the retention factors' learning rate: x``decay`` every ``decay_every`` epochs."""
    return base * decay ** (epoch // decay_every)


def alpha_learning_rate(setting: float | str, *, alpha_init: float, tau: float, reach: float,
                        iterations: int) -> float:
    """The retention factors' base learning rate (``discriminator.alpha_lr``).

    Under Adam a factor moves by about the learning rate per step at most, so from ``alpha_init``
    it needs ``(alpha_init - tau) / lr`` steps to switch its channel off. A number is taken as it
    is. 'auto' is GCC's 1e-4 where that fits in ``reach`` of stage 3's ``iterations``, and
    otherwise the rate that does: a run of a thousand iterations cannot wait five thousand.
    """
    if setting != "auto":
        return float(setting)
    return max(PAPER_ALPHA_LR, (alpha_init - tau) / max(1.0, reach * iterations))


def iterations_to_reach(lr: float, distance: float, per_epoch: int, epochs: int, decay_every: int,
                        decay: float) -> int | None:
    """The fewest iterations in which a factor moving ``lr`` a step (decayed x``decay`` every
    ``decay_every`` epochs) covers ``distance``; None when the run's ``epochs`` end first."""
    travelled, steps = 0.0, 0
    for epoch in range(epochs):
        rate = alpha_lr_at(lr, epoch, decay_every, decay)
        if rate > 0 and travelled + rate * per_epoch >= distance:
            return steps + max(1, int(-(-(distance - travelled) // rate)))
        travelled += rate * per_epoch
        steps += per_epoch
    return None


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
