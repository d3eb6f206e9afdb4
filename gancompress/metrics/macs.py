"""MACs and parameter counts, the thop way and complete.

``thop`` is the convention of published GAN-compression tables (transposed convolutions counted
on their output size, as thop does). thop silently counts zero for layers whose exact type it
does not know, such as spectral-normalised convolutions (their class is a parametrisation
subclass) and the matrix products inside attention. ``complete`` adds those pieces, counted the
same way, and ``missed`` says where they came from, so nothing is dropped silently.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ..nets.layers import CONV_TYPES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MacsCount:
    """MACs of one forward pass of the example input.

    Attributes:
        thop: what ``thop.profile`` reports (the published convention).
        complete: thop plus the operations it misses.
        missed: MACs thop missed, by module class name.
        params: all parameters of the model.
    """

    thop: int
    complete: int
    params: int
    missed: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"macs": self.thop / 1e9, "macs_complete": self.complete / 1e9,
                "macs_missed_by_thop": {k: v / 1e9 for k, v in self.missed.items()},
                "params": self.params / 1e6}


def _thop_style_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """MACs of a conv or linear layer, counted the way thop counts them."""
    if isinstance(module, CONV_TYPES):
        in_ch = inputs[0].shape[1]
        kernel = module.weight.shape[2:].numel()
        return output.numel() * (in_ch // module.groups) * kernel
    return output.numel() * module.in_features  # nn.Linear


def count_macs(model: nn.Module, example: torch.Tensor) -> MacsCount:
    """Count MACs of ``model(example)`` (batch as given: use a batch of 1 for tables).

    Args:
        model: any module; it is not modified (counting runs on a copy).
        example: an input tensor of the shape to count at.
    """
    import thop
    from thop.profile import register_hooks

    work = copy.deepcopy(model).eval()
    with torch.no_grad():
        thop_macs, _ = thop.profile(work, inputs=(example,), verbose=False)

    missed: dict[str, int] = {}
    handles = []

    def add(name: str, amount: int) -> None:
        if amount:
            missed[name] = missed.get(name, 0) + int(amount)

    def conv_hook(module, inputs, output):
        add(type(module).__name__, _thop_style_macs(module, inputs, output))

    def extra_hook(module, inputs, output):
        add(type(module).__name__, module.extra_macs(inputs, output))

    for module in work.modules():
        if isinstance(module, CONV_TYPES + (nn.Linear,)) and type(module) not in register_hooks:
            handles.append(module.register_forward_hook(conv_hook))
        if callable(getattr(module, "extra_macs", None)):
            handles.append(module.register_forward_hook(extra_hook))
    try:
        with torch.no_grad():
            work(example)
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters())
    thop_macs = int(thop_macs)
    return MacsCount(thop=thop_macs, complete=thop_macs + sum(missed.values()), params=params,
                     missed=missed)
