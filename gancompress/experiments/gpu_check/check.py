"""What a gpu-check row is, and the subprocesses it works in, each within the row's time limit.

A :class:`Row` names a check and the function that runs it. The function gets a :class:`Check`
(the device, the folders, the current row's deadline), does its work in subprocesses
(:meth:`Check.call`, :meth:`Check.worker`), so that a hang or a CUDA error that poisons a process
costs one row, and returns an :class:`Outcome` or raises :class:`RowFailure` with a one-line
reason (:func:`last_meaningful_line` picks it from a failed process's output).
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import GanCompressError

#: The folder holding the ``gancompress`` package (and, in a checkout, ``recipes/``).
SOURCE_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RECIPES = SOURCE_ROOT / "recipes"
CITYSCAPES = "pix2pix_cityscapes.yaml"


class RowFailure(GanCompressError):
    """A row's check failed; the message is the row's one-line reason, ``details`` the figures
    measured before it failed (they go to the JSON file all the same)."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


@dataclass
class Outcome:
    """What a row that ran reports: a short figure, every number, and the targets it measured."""

    figure: str
    details: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One check.

    Args:
        name: stable id, e.g. 'demo/pix2pix/fast' (``--rows`` matches it with shell patterns).
        what: one line saying what it checks.
        run: does the work (in subprocesses) and returns an :class:`Outcome`; raises
            :class:`RowFailure` with the reason (any other exception is a failure too).
        timeout_s: the row's own limit on an H100, shared by its subprocesses.
        estimate_s: about how long it takes on an H100; it is skipped when less budget is left.
        cuda_only: why it is skipped on the CPU ('' : it runs there too).
        cpu_only: why it is skipped on CUDA ('' : it runs there too).
        alone: it measures speed, so it runs with no other row running.
    """

    name: str
    what: str
    run: Callable[[Check], Outcome]
    timeout_s: float
    estimate_s: float
    cuda_only: str = ""
    cpu_only: str = ""
    alone: bool = False


_TRACEBACK_END = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Failed|Interrupt|Exit)\b:?")
_PROGRESS = re.compile(r"\d+%\||\d+it \[|it/s\]|s/it\]")
_RANK_PREFIX = re.compile(r"^\[(rank|default)\d*\]:\s*")  # torchrun's prefix of its workers' lines


def last_meaningful_line(text: str, limit: int = 300) -> str:
    """The line of a failed process's stderr that says why: gancompress's own one-line error,
    else the last exception line of a traceback (torchrun's ChildFailedError only when nothing
    else is there), else the last line that is not a progress bar."""
    lines = [_RANK_PREFIX.sub("", line.strip()) for line in re.split(r"[\r\n]+", text) if line.strip()]
    picked = next((line for line in reversed(lines) if line.startswith("gancompress: error")), None)
    if picked is None:
        errors = [line for line in lines if _TRACEBACK_END.match(line)]
        preferred = [line for line in errors if "ChildFailedError" not in line]
        picked = (preferred or errors or [None])[-1]
    if picked is None:
        rest = [line for line in lines if not _PROGRESS.search(line)]
        picked = rest[-1] if rest else "no output"
    picked = " ".join(picked.split())
    return picked if len(picked) <= limit else picked[:limit - 3] + "..."


def set_override(key: str, value) -> str:
    """A ``--set`` assignment whose value YAML reads back as ``value`` (JSON is YAML; ``off``
    unquoted would be read as false)."""
    return f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}"


@dataclass
class Check:
    """What every row shares: the device, the folders, the mode and the current row's deadline.

    Args:
        device: 'cuda' or 'cpu'.
        work: folder for data, runs, logs and worker results.
        recipes: folder holding the paper recipes and ``demo/``.
        quick: the CI form (a few iterations everywhere).
        demo_seed: ``seed`` of the demo rows.
        deadline: when the current row's limit runs out (``time.monotonic``).
        row: the current row's name (names its logs).
        threads: OMP_NUM_THREADS of the row's subprocesses when rows run side by side (None: as set).
    """

    device: str
    work: Path
    recipes: Path
    quick: bool = False
    demo_seed: int = 0
    deadline: float = math.inf
    row: str = ""
    threads: int | None = None

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def env(self) -> dict:
        """The subprocesses' environment: this source tree first on the import path."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env

    def call(self, args: list[str], label: str) -> str:
        """Run ``args`` within the row's time left; returns its stdout. RowFailure with the last
        meaningful line of stderr when it fails, or with the limit when it runs out of time (the
        whole process group is killed: torchrun's workers and DataLoader workers too)."""
        timeout = self.seconds_left()
        if timeout <= 1:
            raise RowFailure(f"{label}: no time left in the row's limit")
        self.logs.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.row}-{label}")
        out_path, err_path = self.logs / f"{stem}.out", self.logs / f"{stem}.err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(args, stdout=out, stderr=err, env=self.env(), start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                tail = last_meaningful_line(err_path.read_text(errors="replace"))
                raise RowFailure(f"{label}: killed after its {timeout:.0f} s limit (last line: {tail})") from None
            except BaseException:
                _kill_group(proc)
                raise
            _kill_group(proc)  # what it left behind (DataLoader workers of a crashed run)
        stdout = out_path.read_text(errors="replace")
        if code != 0:
            reason = last_meaningful_line(err_path.read_text(errors="replace") + "\n" + stdout)
            raise RowFailure(f"{label}: exit status {code}: {reason}")
        return stdout

    def worker(self, name: str, **kwargs) -> dict:
        """Run worker ``name`` (:data:`~gancompress.experiments.gpu_check.workers.WORKERS`) with ``kwargs`` in a fresh
        process; returns its result."""
        result = self.work / "results" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.row)}-{name}.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.unlink(missing_ok=True)
        self.call([sys.executable, "-m", "gancompress.cli", "gpu-check", "--device", self.device,
                   "--worker", name, "--worker-args", json.dumps(kwargs), "--out", str(result)], name)
        return json.loads(result.read_text())

    def recipe(self, relative: str) -> Path:
        path = self.recipes / relative
        if not path.is_file():
            raise RowFailure(f"{path}: recipe not found; pass --recipes DIR (the folder holding {CITYSCAPES} "
                             "and demo/)")
        return path


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def bench_recipe(check: Check) -> Path:
    """The Cityscapes recipe on CUDA; on the CPU the small demo recipe (figures there only show
    that the rows run)."""
    if check.device == "cuda" and not check.quick:
        return check.recipe(CITYSCAPES)
    return check.recipe("demo/pix2pix.yaml")
