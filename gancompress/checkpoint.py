"""Checkpoint files: written atomically, read without running code.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so a crash or a full disk leaves the previous file intact. Reads use
``torch.load(weights_only=True)``: a file that would run code on load is refused.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .errors import CheckpointError
from .fileio import atomic_write


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`fileio.atomic_write`).

    Raises WriteError (naming the file and why, e.g. a full disk) if it cannot be written; the
    previous file at ``path`` is then untouched.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def safe_load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; CheckpointError says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain data, "
                              f"which could run code ({str(exc).splitlines()[0][:120]}); only load "
                              "checkpoints written by gancompress") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:160]})") from None


def rotate(folder: Path, prefix: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints named ``<prefix>-<step>.pt`` in ``folder``."""
    files = sorted(folder.glob(f"{prefix}-*.pt"))
    for old in files[:-keep]:
        old.unlink(missing_ok=True)


def latest(folder: Path, prefix: str) -> Path | None:
    files = sorted(folder.glob(f"{prefix}-*.pt"))
    return files[-1] if files else None
