"""Writing files so that a crash, a kill or a full disk never leaves a half-written one.

Every file gancompress writes goes through :func:`atomic_write`: the bytes go to a temporary file
in the target's folder, are flushed and fsynced, the file is renamed over the target, and the
folder itself is fsynced so the rename survives a power cut. A failed write leaves the previous
file intact and no temporary file behind. The file comes out with the mode a plain ``open`` would
give it (0666 less the umask), or, when it replaces a file, that file's mode: the temporary
file's own 0600 would otherwise survive the rename and hide every checkpoint, report and export
from the other users of a shared server.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import threading
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


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel tells (Linux's
    /proc/self/status); elsewhere set and restored under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def target_mode(path: Path) -> int:
    """The permission bits ``path`` should have once written: those of the file it replaces, else
    what ``open(path, "w")`` would create (0666 less the umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


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
            os.fchmod(f.fileno(), target_mode(path))
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
