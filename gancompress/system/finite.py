"""Refusing to save or ship weights that went NaN or infinite.

The training loop checks its losses, but a diverged step can leave the losses finite while a
BatchNorm running variance or a weight overflows (``train.lr_g: 1e6`` does it in one step): the
buffer then travels into every checkpoint, the stage outputs and the exported generator.
:func:`check_finite` is called on whatever is about to be written; :func:`first_non_finite`
finds the offending tensor by its key path.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import GanCompressError

FIX = "lower train.lr_g / train.lr_d and --resume (resume goes back to the last finite checkpoint)"


class NonFiniteWeightsError(GanCompressError):
    """Weights, buffers or optimiser state about to be saved hold NaN or infinite values."""


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def first_non_finite(obj, prefix: str = "") -> str | None:
    """The key path of the first tensor (or float) in ``obj`` holding NaN or +-inf, else None.

    Args:
        obj: a tensor, an ``nn.Module`` (its ``state_dict()``, buffers included), or dicts, lists
            and tuples of those nested in any way (a checkpoint, an optimiser state dict). Integer
            and boolean tensors are always finite; strings and other values are ignored.
        prefix: prepended to the key path (used for recursion).

    Returns:
        e.g. ``"state.gens.G.model.1.running_var"``, ``"opt.state.3.exp_avg"``, ``"[2]"``; for a
        bare tensor, ``prefix`` (or ``"<tensor>"`` when empty).
    """
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            if obj.device.type == "meta" or obj.numel() == 0:
                return None
            if not bool(torch.isfinite(obj.detach()).all()):
                return prefix or "<tensor>"
        return None
    if isinstance(obj, nn.Module):
        return first_non_finite(obj.state_dict(), prefix)
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (prefix or "<value>")
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            found = first_non_finite(value, _join(prefix, key))
            if found is not None:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found = first_non_finite(value, f"{prefix}[{i}]")
            if found is not None:
                return found
    return None


def check_finite(obj, what: str) -> None:
    """Raise :class:`NonFiniteWeightsError` if ``obj`` holds a NaN or infinite value.

    Args:
        obj: as for :func:`first_non_finite`.
        what: how the message names ``obj``, e.g. "stage 'sparse' checkpoint at iteration 400" or
            "the exported student (student/generator_G.pt)".

    The message is one line: ``<what>: tensor '<key path>' holds NaN or infinite values (training
    diverged); lower train.lr_g / train.lr_d and --resume (...)``.
    """
    found = first_non_finite(obj)
    if found is not None:
        raise NonFiniteWeightsError(f"{what}: tensor '{found}' holds NaN or infinite values (training diverged); "
                                    f"{FIX}")


def reset_running_stats(module: nn.Module) -> int:
    """Put every normalisation layer's running statistics back to their initial values.

    BatchNorm (and SyncBatchNorm, and InstanceNorm with ``track_running_stats``) keep running
    mean 0 / variance 1 / ``num_batches_tracked`` 0 from construction; a student that is
    re-initialised but built from a trained model's state would otherwise keep the old
    statistics (and an infinite variance, if that model diverged).

    Args:
        module: any module; its sub-modules are visited.

    Returns:
        How many layers were reset.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.reset_running_stats()
            count += 1
    return count
