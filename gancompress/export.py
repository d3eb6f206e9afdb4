"""Shipping a generator: rebuildable checkpoints and TorchScript, each checked against eager."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .checkpoint import atomic_save, safe_load
from .config import Recipe, recipe_to_dict
from .errors import CheckpointError, GanCompressError
from .families import get_family
from .fileio import atomic_write
from .prune import architecture_record, rebuild
from .recipe import recipe_from_dict

log = logging.getLogger(__name__)

GENERATOR_FORMAT = "gancompress-generator"


def save_generator(path: Path, generator: nn.Module, recipe: Recipe, name: str, ngf: int) -> Path:
    """Write a self-describing generator: family, recipe, width, pruned architecture, weights.

    Loadable with :func:`load_generator` (``weights_only=True``): no code runs on load.
    """
    generator = generator.cpu()
    return atomic_save({"format": GENERATOR_FORMAT, "family": recipe.family, "generator": name,
                        "ngf": ngf, "recipe": recipe_to_dict(recipe), "arch": architecture_record(generator),
                        "state_dict": generator.state_dict()}, path)


def load_generator(path: str | Path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a generator saved by :func:`save_generator`; returns (module in eval mode, metadata)."""
    ckpt = safe_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != GENERATOR_FORMAT:
        raise CheckpointError(f"{path}: not a gancompress generator file (expected one written to "
                              "<run>/student/ or <run>/teacher/)")
    recipe = recipe_from_dict(ckpt["recipe"], f"{path} (embedded recipe)")
    family = get_family(recipe.family)(recipe)
    generator = family.build_generator(ckpt["generator"], ckpt["ngf"])
    try:
        rebuild(generator, ckpt["arch"])
        generator.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the recorded architecture ({str(exc)[:160]})") from None
    return generator.eval(), {"recipe": recipe, "family": family, "name": ckpt["generator"], "ngf": ckpt["ngf"]}


def export_torchscript(generator: nn.Module, example: torch.Tensor, path: Path, atol: float = 1e-4) -> dict:
    """Trace ``generator`` (eval mode) to TorchScript at ``path`` and check it against eager.

    Returns ``{"path", "max_abs_diff"}``; raises GanCompressError if the traced module disagrees.
    """
    generator = generator.eval()
    # torch 2.9+ marks TorchScript deprecated; it is still what mobile and C++ runtimes load.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
        traced = torch.jit.trace(generator, example, check_trace=False)
        atomic_write(path, lambda f: torch.jit.save(traced, f))
        # Our own file, just written: loading it back checks what was saved.
        reloaded = torch.jit.load(str(path), map_location=example.device)
        diff = (reloaded(example) - generator(example)).abs().max().item()
    if diff > atol:
        raise GanCompressError(f"{path}: the TorchScript export differs from eager by {diff:.3g} (> {atol}); the "
                               "generator does something tracing cannot record; export ONNX or the state dict instead")
    return {"path": str(path), "max_abs_diff": diff}
