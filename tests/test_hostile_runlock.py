"""Two processes on one run folder: the second is refused; a killed holder never leaves it locked."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gancompress.errors import GanCompressError
from gancompress.files.runlock import RunLock, read_holder

ROOT = Path(__file__).resolve().parents[1]

# Takes the lock, optionally forks a child that outlives it (as DataLoader workers do), says so
# on stdout, then sleeps until killed.
HOLDER = """
import os, sys, time
from gancompress.files.runlock import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
if sys.argv[2] == "fork" and os.fork() == 0:
    time.sleep(60)
    os._exit(0)
print("locked", flush=True)
time.sleep(60)
"""


def _holder(run_dir: Path, fork: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), "fork" if fork else "plain"],
                            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _take(run_dir: Path, timeout: float = 10.0) -> RunLock:
    """Take the lock, retrying while a just-killed holder's descriptors are being closed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return RunLock(run_dir).__enter__()
        except GanCompressError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_second_process_is_refused_until_the_holder_is_killed(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    proc = _holder(run_dir)
    try:
        with pytest.raises(GanCompressError) as info:
            with RunLock(run_dir):
                pass
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{run_dir}: in use by PID {proc.pid}") and "--run-dir" in message
        assert read_holder(run_dir)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    lock = _take(run_dir, timeout=2.0)  # the kernel dropped the dead process's lock
    try:
        assert read_holder(run_dir)["pid"] == os.getpid()
    finally:
        lock.release()
    assert read_holder(run_dir) == {}  # no stale PID left for a reader


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir, fork=True)
    try:
        proc.send_signal(signal.SIGKILL)  # the trainer dies; its forked child lives on
        proc.wait()
        lock = _take(run_dir, timeout=2.0)
        lock.release()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned child, in the holder's own session
        except ProcessLookupError:
            pass
        proc.stdout.close()


def test_nested_use_in_one_process_and_release(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):
        with RunLock(run_dir):  # the same process, e.g. a tool wrapping compress(): counted, not refused
            pass
        assert read_holder(run_dir)["pid"] == os.getpid()  # still held after the inner block
    assert read_holder(run_dir) == {}
    with RunLock(run_dir):  # free again
        pass


def test_unwritable_parent_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GanCompressError, match="cannot write the run folder") as info:
        RunLock(blocker / "run").acquire()
    assert "\n" not in str(info.value)
