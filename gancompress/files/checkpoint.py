"""Checkpoint files: written atomically, read without running code.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target, so a crash or a full disk leaves the previous file intact. Reads use
``torch.load(weights_only=True)``: a file that would run code on load is refused.

Rolling checkpoints are named ``<prefix>-<step>.pt`` (the step zero-padded to nine digits);
:func:`latest_readable` finds the newest one that loads and holds only finite numbers, so a
resumed run steps back over a file cut short by a crash or one saved after training diverged.
"""
from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..system.finite import first_non_finite
from .atomic import atomic_write

log = logging.getLogger(__name__)

# Torch's own advice after the reason (allow-listing the global, loading with weights_only=False)
# is the opposite of ours, so the message stops where it starts.
_TORCH_ADVICE = re.compile(r"\s*(Please use `torch\.serialization|Check the documentation of torch\.load)")
_MINIZ_BOILERPLATE = re.compile(r"\s*This is an internal miniz error")
_REFUSED_MARKERS = ("GLOBAL", "global", "reduce for", "blocked")
_MAX_REASON = 400


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`gancompress.files.atomic.atomic_write`).

    Raises WriteError (naming the file and why, e.g. a full disk) if it cannot be written; the
    previous file at ``path`` is then untouched.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def _one_line(text: str, limit: int = _MAX_REASON) -> str:
    """``text`` with runs of whitespace made one space and unprintable characters escaped."""
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unpickling_reason(message: str) -> str:
    """The part of torch's weights-only refusal that says what was refused, on one line.

    Torch's message opens with a paragraph about the ``weights_only`` default and ends with
    advice; the reason sits between, either after ``WeightsUnpickler error:`` or as its own
    paragraph, e.g. ``Trying to load unsupported GLOBAL posix.system whose module posix is
    blocked.`` or ``Unsupported global: GLOBAL builtins.eval was not an allowed global by default.``
    """
    marker = "WeightsUnpickler error:"
    if marker in message:
        reason = message.split(marker, 1)[1]
    else:
        paragraphs = [p for p in re.split(r"\n\s*\n", message) if p.strip()]
        body = [p for p in paragraphs if not p.lstrip().startswith("Weights only load failed")]
        reason = "\n".join(body) if body else message
    advice = _TORCH_ADVICE.search(reason)
    if advice is not None:
        reason = reason[: advice.start()]
    return _one_line(reason) or _one_line(message)


def safe_load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; CheckpointError says what is wrong.

    A file holding objects other than tensors and plain data is refused, the message naming the
    global torch refused (e.g. ``posix.system``). A zero-byte, truncated or corrupted file is
    "not a readable checkpoint": torch reports those as RuntimeError, EOFError, UnpicklingError,
    UnicodeDecodeError, KeyError, IndexError, ValueError or TypeError depending on which byte is
    damaged, so every exception from ``torch.load`` is turned into one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a readable checkpoint (the file is empty, 0 bytes: a crash or a full "
                              "disk cut it short)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = unpickling_reason(str(exc))
        if any(m in reason for m in _REFUSED_MARKERS):
            raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain data, "
                                  f"which could run code ({reason}); only load checkpoints written by "
                                  "gancompress") from None
        # A plain pickle or a damaged file: the weights-only reader met an opcode it does not take.
        raise CheckpointError(f"{path}: refused to load: torch's weights-only reader rejected its contents "
                              f"({reason}); it is damaged or not a checkpoint written by gancompress") from None
    except MemoryError:
        raise CheckpointError(f"{path}: not a readable checkpoint (it needs more memory than is free)") from None
    except Exception as exc:  # any damage to the zip or pickle surfaces as some exception of torch.load
        reason = _one_line(_MINIZ_BOILERPLATE.split(str(exc), 1)[0], 240) or "no detail"
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {reason})") from None


def _numbered(folder: Path, prefix: str) -> list[Path]:
    """``<prefix>-<step>.pt`` files of ``folder``, oldest step first (other files are ignored)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)\.pt")
    found = []
    for path in folder.glob(f"{glob_escape(prefix)}-*.pt"):
        match = pattern.fullmatch(path.name)
        if match is not None:
            found.append((int(match.group(1)), path))
    return [p for _, p in sorted(found)]


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters bracketed, so it matches itself only."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def rotate(folder: Path, prefix: str, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints named ``<prefix>-<step>.pt`` in ``folder``."""
    files = _numbered(folder, prefix)
    for old in files[:-max(keep, 1)]:  # never the newest
        old.unlink(missing_ok=True)


def latest(folder: Path, prefix: str) -> Path | None:
    """The checkpoint ``<prefix>-<step>.pt`` with the highest step (readable or not), or None."""
    files = _numbered(folder, prefix)
    return files[-1] if files else None


def load_latest_readable(folder: Path, prefix: str, map_location="cpu") -> tuple[Path, dict] | None:
    """The newest ``<prefix>-<step>.pt`` that loads and holds only finite numbers, and its content.

    Newer files that are empty, truncated, corrupted or hold NaN/inf (saved after training
    diverged) are skipped, each with a warning naming it and why; they are left on disk.

    Args:
        folder: the checkpoint folder (missing: None).
        prefix: the stage name.
        map_location: as for :func:`safe_load`.

    Returns:
        ``(path, checkpoint)`` or None when no file qualifies.
    """
    if not folder.is_dir():
        return None
    for path in reversed(_numbered(folder, prefix)):
        try:
            ckpt = safe_load(path, map_location=map_location)
        except CheckpointError as exc:
            log.warning("skipping %s", exc)
            continue
        bad = first_non_finite(ckpt)
        if bad is not None:
            log.warning("skipping %s: tensor '%s' holds NaN or infinite values (saved after training diverged)",
                        path, bad)
            continue
        return path, ckpt
    return None


def latest_readable(folder: Path, prefix: str) -> Path | None:
    """The newest ``<prefix>-<step>.pt`` that loads and is finite (see :func:`load_latest_readable`)."""
    found = load_latest_readable(folder, prefix)
    return found[0] if found is not None else None
