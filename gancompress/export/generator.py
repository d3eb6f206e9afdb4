"""Shipping a generator: rebuildable checkpoints and TorchScript, each checked against eager."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..config.sections import Recipe, recipe_to_dict
from ..errors import CheckpointError, GanCompressError
from ..families import get_family
from ..families.base import MAX_PARAMS
from ..families.recipe import recipe_from_dict
from ..files.atomic import atomic_write
from ..files.checkpoint import atomic_save, safe_load
from ..method.pruning import architecture_record, rebuild

log = logging.getLogger(__name__)

GENERATOR_FORMAT = "gancompress-generator"


def save_generator(path: Path, generator: nn.Module, recipe: Recipe, name: str, ngf: int) -> Path:
    """Write a self-describing generator: family, recipe, width, pruned architecture, weights.

    Loadable with :func:`load_generator` (``weights_only=True``): no code runs on load.
    """
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}  # the module stays where it is
    return atomic_save({"format": GENERATOR_FORMAT, "family": recipe.family, "generator": name,
                        "ngf": ngf, "recipe": recipe_to_dict(recipe), "arch": architecture_record(generator),
                        "state_dict": state}, path)


def load_generator(path: str | Path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a generator saved by :func:`save_generator`; returns (module in eval mode, metadata).

    Every field of the file is checked before anything large is built: a file of another
    structure, an unknown generator name or a width that would not fit in memory is refused in
    one line (CheckpointError).
    """
    ckpt = safe_load(path, map_location=map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != GENERATOR_FORMAT:
        raise CheckpointError(f"{path}: not a gancompress generator file (expected one written to "
                              "<run>/student/ or <run>/teacher/)")
    missing = [k for k in ("recipe", "generator", "ngf", "arch", "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: generator file lacks '{missing[0]}'; it was not written by gancompress "
                              "or is damaged; export it again from its run")
    try:
        recipe = recipe_from_dict(ckpt["recipe"], f"{path} (embedded recipe)")
    except RecursionError:
        raise CheckpointError(f"{path}: the embedded recipe refers to itself; the file is damaged") from None
    family = get_family(recipe.family)(recipe)
    name, ngf = ckpt["generator"], ckpt["ngf"]
    if name not in family.generator_names:
        raise CheckpointError(f"{path}: generator {name!r} is not one of the {recipe.family} family's "
                              f"({', '.join(family.generator_names)}); the file is damaged")
    if not isinstance(ngf, int) or isinstance(ngf, bool) or ngf < 1:
        raise CheckpointError(f"{path}: width ngf {ngf!r} is not a positive integer; the file is damaged")
    with torch.device("meta"):
        try:
            size = sum(p.numel() for p in family.build_generator(name, ngf).parameters())
        except (RuntimeError, ValueError, OverflowError):
            size = MAX_PARAMS + 1
    if size > MAX_PARAMS:
        raise CheckpointError(f"{path}: width ngf {ngf} would need over {MAX_PARAMS:.3g} parameters; the file is "
                              "damaged or not a generator of this family")
    generator = family.build_generator(name, ngf)
    try:
        rebuild(generator, ckpt["arch"])
        generator.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError, IndexError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: weights do not fit the recorded architecture ({why[:200]}); the file is "
                              "damaged or was written by another version") from None
    return generator.eval(), {"recipe": recipe, "family": family, "name": name, "ngf": ngf}


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
