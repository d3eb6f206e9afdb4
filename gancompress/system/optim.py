"""Mixed precision, optimisers and learning-rate schedules shared by every training stage.

:class:`Precision` owns autocast, loss scaling and the averaging of gradients over data-parallel
ranks; the functions below build Adam the way every stage wants it and put a module on its device
with the recipe's speed options. Nothing here knows a GAN.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..config.sections import TrainConfig
from ..errors import RecipeError
from . import distributed


def lr_factor(epoch: int, const: int, decay: int) -> float:
    """pix2pix schedule: 1 for ``const`` epochs, then linearly to 0 over ``decay`` epochs."""
    if epoch < const:
        return 1.0
    return max(0.0, 1.0 - (epoch - const + 1) / (decay + 1))


def step_factor(epoch: int, every: int, factor: float) -> float:
    """Step decay: x``factor`` every ``every`` epochs (``every`` 0: constant)."""
    return factor ** (epoch // every) if every > 0 else 1.0


#: Learning-rate schedules of stage 3 by name (``distill.lr_schedule``).
SCHEDULES = ("linear", "step")


def schedule_factor(schedule: str, epoch: int, *, const: int, decay: int, step_every: int = 0,
                    step_gamma: float = 0.1) -> float:
    """The factor on the base learning rate in (0-based) ``epoch`` of a ``const + decay`` run.

    Args:
        schedule: 'linear' (:func:`lr_factor`, pix2pix: 1 for ``const`` epochs, then linearly
            to 0 over ``decay``) or 'step' (:func:`step_factor`, torch's StepLR as GCC's SRGAN
            uses it: x``step_gamma`` every ``step_every`` epochs, ``step_every`` 0 meaning
            ``const``; GCC's 15 + 15 epochs run at 1e-4 then 1e-5).
        epoch: the epoch about to run, from 0.
        const, decay: ``distill.epochs_const`` and ``distill.epochs_decay``.
        step_every, step_gamma: the step schedule's period and factor.

    Raises ValueError for an unknown schedule name.
    """
    if schedule == "linear":
        return lr_factor(epoch, const, decay)
    if schedule == "step":
        return step_factor(epoch, step_every or const, step_gamma)
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (valid: {', '.join(SCHEDULES)})")


def distill_lr_factor(distill, epoch: int) -> float:
    """Stage 3's learning-rate factor in ``epoch`` from the ``distill`` section's schedule settings
    (shared by the distillation stage and the baselines that train for stage 3's length)."""
    return schedule_factor(distill.lr_schedule, epoch, const=distill.epochs_const, decay=distill.epochs_decay,
                           step_every=distill.lr_step_every, step_gamma=distill.lr_step_factor)


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of the modules' parameters for the block, then restore it."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    states = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, s in zip(params, states):
            p.requires_grad_(s)


def resolve_amp(mode: str, device: torch.device) -> str:
    """The precision ``train.amp`` means on ``device``: 'auto' becomes bf16 on a GPU that has it,
    else 'off'. RecipeError where the device cannot do what is asked."""
    if mode == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if mode == "fp16" and device.type != "cuda":
        raise RecipeError("train.amp: fp16 needs a CUDA device; use 'off' or 'bf16' on the CPU")
    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RecipeError("train.amp: this GPU has no bf16; use 'fp16' or 'off'")
    return mode


class Precision:
    """Autocast, loss scaling, and averaging gradients over data-parallel ranks.

    Under a process group (``distributed``) every optimiser's gradients are averaged over the
    ranks before it steps (in :meth:`unscale` when that comes first), so all ranks keep the same
    weights.

    Args:
        mode: 'auto' (bf16 on a GPU that supports it, else fp32), 'off', 'bf16' or 'fp16'.
        device: the training device.
    """

    def __init__(self, mode: str, device: torch.device):
        self.device = device
        self.mode = resolve_amp(mode, device)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)
        self.scaler = torch.amp.GradScaler("cuda") if self.mode == "fp16" else None
        self._synced: set[int] = set()  # optimisers whose gradients are averaged since their last step

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def sync(self, opt: torch.optim.Optimizer) -> None:
        """Average ``opt``'s gradients over the ranks (once per step; nothing on one process)."""
        if id(opt) not in self._synced:
            distributed.sync_grads(p for group in opt.param_groups for p in group["params"])
            self._synced.add(id(opt))

    def step(self, opt: torch.optim.Optimizer) -> None:
        self.sync(opt)
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        self._synced.discard(id(opt))

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def make_adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam; fused on CUDA, foreach on the CPU."""
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, betas=betas, **kwargs)


def set_lr(opt: torch.optim.Optimizer | None, lr: float) -> None:
    """Set every parameter group's learning rate (``opt`` None: nothing to set)."""
    if opt is None:
        return
    for group in opt.param_groups:
        group["lr"] = lr


def prepare_module(module: nn.Module, train: TrainConfig, device: torch.device) -> nn.Module:
    """``module`` on ``device`` with the speed options of ``train``; BatchNorm layers become
    SyncBatchNorm under ``train.sync_bn`` when several processes train (statistics of the whole
    batch instead of each rank's share)."""
    if train.sync_bn and distributed.world_size() > 1:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module = module.to(device)
    if train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if train.compile:
        module.compile()
    return module
