"""Stage 1's L1 penalty ``lambda * sum |w|``, applied as a proximal step after the optimiser's (METHOD 1.1).

The paper adds the sub-gradient ``lambda * sign(w)`` to the gradient before an Adam step; Adam
divides every gradient by its running magnitude, so the penalty then shrinks each penalised
weight by about the learning rate per step whatever lambda is. Here the optimiser steps on the
task's gradient alone and every penalised weight is then soft-thresholded by ``lr * lambda``
(the proximal operator of the penalty): lambda sets the shrinkage, and a weight that reaches
zero stays exactly zero until the task's gradient pulls it out again.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..nets.layers import CONV_TYPES, affine_norms, io_layers

METHODS = ("slimming", "l1")


def penalised_parameters(model: nn.Module, method: str, example: torch.Tensor) -> list[nn.Parameter]:
    """The parameters whose L1 norm is penalised.

    Args:
        model: the generator.
        method: 'slimming' (every norm layer's scale) or 'l1' (every conv / transposed-conv weight).
        example: an input batch, used to find the image input and output layers, never penalised.
    """
    first, last = io_layers(model, example)
    excluded = {id(first), id(last)}
    if method == "slimming":
        layers = affine_norms(model)
        if not layers:
            raise ValueError("network slimming needs norm layers with scales (BatchNorm or affine "
                             "InstanceNorm); use sparse.method: l1 for this generator")
    elif method == "l1":
        layers = [m for m in model.modules() if isinstance(m, CONV_TYPES) and id(m) not in excluded]
    else:
        raise ValueError(f"unknown sparsity method {method!r} (valid: {', '.join(METHODS)})")
    return [_trained_weight(m) for m in layers if id(m) not in excluded]


def _trained_weight(module: nn.Module) -> nn.Parameter:
    """The parameter behind ``module.weight``: for a parametrized weight (spectral norm) the
    stored original, since ``module.weight`` is then recomputed each call and never gets a grad."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


@torch.no_grad()
def proximal_l1_step(params: list[nn.Parameter], threshold: float) -> None:
    """``w <- sign(w) * max(|w| - threshold, 0)`` for every parameter, in place (no host sync).

    Args:
        params: the penalised parameters.
        threshold: ``lr * lambda`` of the step just taken.
    """
    if threshold <= 0 or not params:
        return
    for p in params:
        p.copy_(torch.sign(p) * torch.clamp(p.abs() - threshold, min=0.0))
