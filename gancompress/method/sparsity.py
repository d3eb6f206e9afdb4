"""Stage 1's L1 penalty, applied as a sub-gradient after backward (METHOD 1.1)."""
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
def add_l1_subgradient(params: list[nn.Parameter], lam: float) -> None:
    """``grad += lam * sign(w)`` for each parameter that has a gradient (no host sync)."""
    grads, weights = [], []
    for p in params:
        if p.grad is not None:
            grads.append(p.grad)
            weights.append(p)
    if grads:
        torch._foreach_add_(grads, torch._foreach_sign(weights), alpha=lam)
