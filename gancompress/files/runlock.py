"""One process per run folder: an exclusive ``flock`` on ``<run_dir>/.lock``.

Two processes writing one run folder overwrite each other's checkpoints and stage outputs; both
"finish" and the result is neither run. :class:`RunLock` is held for the whole run. The kernel
drops an ``flock`` when the last descriptor of the lock file closes, so a process that dies in
any way (SIGKILL, OOM killer, power loss of a client) never leaves the folder locked, and no
stale-lock clean-up is ever needed. The file records the holder's PID, host and start time for
the message the second process prints.

Forked children (DataLoader workers) inherit the descriptor and with it the lock; they close
their copy right after the fork, so a worker that outlives a killed trainer does not keep the
folder locked. The lock is not taken again by the process holding it (nested use is counted).
``flock`` works on local file systems and on NFS (Linux maps it to NFS byte-range locks).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from ..errors import GanCompressError

LOCK_NAME = ".lock"

# run folder (resolved) -> [descriptor, nesting count], for this process only.
_HELD: dict[str, list[int]] = {}


def _close_in_child() -> None:
    # Only close: LOCK_UN from the child would release the parent's lock (one open file description).
    for fd, _ in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def read_holder(run_dir: str | Path) -> dict:
    """What the lock file of ``run_dir`` says about its holder ({} if nothing readable)."""
    try:
        text = (Path(run_dir) / LOCK_NAME).read_text()
        info = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class RunLock:
    """Hold ``<run_dir>/.lock`` exclusively while the ``with`` block runs.

    Args:
        run_dir: the run folder; created (with parents) if missing.

    Raises (on entering):
        GanCompressError: another process holds the folder (the message names its PID, host and
            start time), or the folder or its lock file cannot be created.

    Example::

        with RunLock(run_dir):
            compress(recipe, run_dir, resume=True)
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._key: str | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock (see the class). If this process already holds it (through another
        RunLock on the same folder), only a nesting count goes up; a second acquire on the same
        object does nothing."""
        if self._key is not None:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            key = str(self.run_dir.resolve())
        except OSError as exc:
            raise GanCompressError(f"{self.run_dir}: cannot write the run folder ({exc.strerror}); choose a "
                                   "writable --run-dir") from None
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return
        path = self.run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise GanCompressError(f"{path}: cannot create the run folder's lock file ({exc.strerror}); choose a "
                                   "writable --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # EWOULDBLOCK: another open file description holds it
            os.close(fd)
            raise GanCompressError(self._busy_message()) from None
        except OSError as exc:
            os.close(fd)
            raise GanCompressError(f"{path}: cannot lock the run folder ({exc.strerror}); the file system may "
                                   "not support locks, choose a --run-dir on a local disk") from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        _HELD[key] = [fd, 1]
        self._key = key

    def _busy_message(self) -> str:
        holder = read_holder(self.run_dir)
        who = f"PID {holder.get('pid', '?')}"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("started"):
            who += f", started {holder['started']}"
        if "pid" not in holder:
            who = "another process (it has not written its PID yet)"
        return (f"{self.run_dir}: in use by {who}; wait for that run to end or stop it, or pass another "
                "--run-dir")

    def release(self) -> None:
        """Give the lock up (after the last nested :meth:`acquire`); the file stays, emptied."""
        key, self._key = self._key, None
        if key is None or key not in _HELD:
            return
        entry = _HELD[key]
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[key]
        fd = entry[0]
        try:
            os.ftruncate(fd, 0)  # no stale PID for a reader; the file itself stays (see below)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            # The file is never deleted: a process blocked on the old inode would then lock a file
            # no one else sees, and two runs would proceed.
            os.close(fd)
