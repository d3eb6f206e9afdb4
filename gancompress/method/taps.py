"""Online collaborative distillation: feature taps, 1x1 adapters, content and texture terms (METHOD 3)."""
from __future__ import annotations

import torch
from torch import nn

from ..nets.layers import probe_forward
from . import losses


class FeatureTap:
    """Records the outputs of ``modules`` on every forward pass while it is attached.

    ``outputs[i]`` is the latest output of ``modules[i]``; with ``keep_first`` it is the first
    output since the last :meth:`reset`, so that later passes in the same iteration (CycleGAN's
    cycle and identity terms run each generator again) do not replace the features of the main
    pass. Detach with :meth:`remove`.
    """

    def __init__(self, modules: list[nn.Module], keep_first: bool = False):
        self.outputs: list[torch.Tensor | None] = [None] * len(modules)
        self.keep_first = keep_first
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, i: int):
        def hook(_module, _inputs, output):
            if not (self.keep_first and self.outputs[i] is not None):
                self.outputs[i] = output
        return hook

    def reset(self) -> None:
        """Forget the recorded outputs (with ``keep_first``, the next pass records again)."""
        self.outputs = [None] * len(self.outputs)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def tap_channels(model: nn.Module, points: list[nn.Module], example: torch.Tensor) -> list[int]:
    """Channels of each tapped output for one forward pass of ``example``."""
    tap = FeatureTap(points)
    try:
        probe_forward(model, example)
    finally:
        tap.remove()
    return [o.shape[1] for o in tap.outputs]


class Adapters(nn.Module):
    """One bias-free 1x1 conv per distillation point, mapping student to teacher channels.

    Args:
        student_channels: channels of each student feature.
        teacher_channels: channels of the matching teacher feature.
    """

    def __init__(self, student_channels: list[int], teacher_channels: list[int]):
        super().__init__()
        self.maps = nn.ModuleList(nn.Conv2d(s, t, 1, bias=False)
                                  for s, t in zip(student_channels, teacher_channels))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [m(f) for m, f in zip(self.maps, feats)]


def distill_terms(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(content, texture) sums; teacher features are detached here."""
    teacher = [t.detach() for t in teacher]
    return losses.content_loss(student, teacher), losses.texture_loss(student, teacher)
