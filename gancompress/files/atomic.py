"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Every file gancompress writes goes through :func:`atomic_write`: the bytes go to a temporary file
in the target's folder, are flushed and fsynced, the file is renamed over the target, and the
folder itself is fsynced so the rename survives a power cut. A failed write leaves the previous
file intact and no temporary file behind.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from ..errors import WriteError

TMP_SUFFIX = ".tmp"


def _oserror_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or one chained as its cause or context (torch.save
    raises RuntimeError with the ENOSPC OSError chained)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def describe_oserror(exc: OSError) -> str:
    """A few words for the user: 'the disk is full', 'the folder is read-only', ..."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temporary binary file, which then replaces it.

    Args:
        path: the target file; its folder is created if missing.
        write: called once with the open temporary file.

    Raises:
        WriteError: naming the file and the reason (disk full, read-only, ...); the previous file
            at ``path`` is untouched and the temporary file removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise WriteError(f"{path.parent}: cannot write here ({describe_oserror(exc)}); free space or choose a "
                         "writable folder (--run-dir / --out)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = _oserror_of(exc)
        if cause is not None:
            raise WriteError(f"{path}: could not be written ({describe_oserror(cause)}); the previous file is kept; "
                             "free space or choose a writable folder, then run again (--resume for a run)") from None
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_stale_tmp(folder: Path) -> int:
    """Delete temporary files a killed writer left in ``folder`` (and below); returns how many."""
    count = 0
    if not folder.is_dir():
        return 0
    for tmp in folder.rglob(f".*{TMP_SUFFIX}"):
        try:
            tmp.unlink()
            count += 1
        except OSError:
            pass
    return count
