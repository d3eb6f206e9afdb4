"""Finding layers by what they are and where they run, never by their names."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn
from torch.func import functional_call

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
WEIGHTED_TYPES = CONV_TYPES + (nn.Linear,)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
              nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)


def execution_order(model: nn.Module, example: torch.Tensor, types: tuple = WEIGHTED_TYPES) -> list[nn.Module]:
    """Modules of ``types`` in the order a forward pass of ``example`` runs them (each once)."""
    order: list[nn.Module] = []
    seen: set[int] = set()

    def hook(module, _inputs, _output):
        if id(module) not in seen:
            seen.add(id(module))
            order.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, types)]
    try:
        probe_forward(model, example)
    finally:
        for h in handles:
            h.remove()
    return order


def probe_forward(model: nn.Module, example: torch.Tensor) -> None:
    """One forward of ``example`` in eval mode without gradients, for hooks that measure shapes or
    order; the training mode is restored afterwards, whatever happens."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)


def io_layers(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    """The layer that reads the network input and the one that writes its output.

    They are the first and last weighted layers a forward pass runs; their image channels are
    never penalised nor pruned (METHOD 1).
    """
    order = execution_order(model, example)
    if not order:
        raise ValueError("the model runs no convolution or linear layer")
    return order[0], order[-1]


def affine_norms(model: nn.Module) -> list[nn.Module]:
    """Normalisation layers that carry a learned per-channel scale."""
    return [m for m in model.modules()
            if isinstance(m, NORM_TYPES) and getattr(m, "weight", None) is not None]


def frozen_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with detached parameters and copied buffers: the gradient reaches ``x`` but
    never the module, whatever its ``requires_grad``, and its running statistics stay as they are
    (GLeaD's generator tail, the frozen classifiers of the classifier-guided loss)."""
    state = {k: v.detach() for k, v in module.named_parameters()}
    state.update({k: v.detach().clone() for k, v in module.named_buffers()})
    return functional_call(module, state, (x,))


@contextlib.contextmanager
def running_stats_kept(*modules: nn.Module) -> Iterator[None]:
    """Run measuring forwards in training mode without moving the modules' buffers.

    BatchNorm keeps using the batch's statistics (training behaviour, so a loss computed inside
    is the one the ordinary step would see), but its running mean, variance and batch count, and
    spectral norm's power-iteration vectors, are left as they were: only the ordinary G and D
    steps move them. Each buffer is swapped for a copy during the block and the original put back
    afterwards; nothing is written in place, so a graph built inside may still be differentiated.
    """
    swapped = []
    seen: set[int] = set()
    for top in modules:
        if top is None:
            continue
        for m in top.modules():
            if id(m) in seen:
                continue
            seen.add(id(m))
            for name, b in m._buffers.items():
                if b is not None:
                    swapped.append((m, name, b))
    for m, name, b in swapped:
        m._buffers[name] = b.clone()
    try:
        yield
    finally:
        for m, name, b in swapped:
            m._buffers[name] = b
