"""One prepared check of every CUDA path, in one command: ``gancompress gpu-check``.

GPU machines are lent for a few minutes of device time at most, so everything that needs a GPU
is checked by this one command, prepared and tested on the CPU. Within about eight minutes on one
H100 it prints ONE table (a row per check: passed with its figure, failed with a one-line reason,
or skipped with why) and writes every figure as JSON (``--out``). Rows, in the table's order:

- ``bench/stage3_b1``, ``bench/stage3_b16``: stage-3 iterations (b1) and images (b16) per second of
  the Cityscapes recipe, fp32 eager against the fast path (bf16 autocast, channels_last, fused
  Adam, cudnn benchmark), side by side in one process (:func:`~gancompress.experiments.benchmark.stage3_rate`).
- ``bench/latency``: teacher and student generator latency at batch 1, 16 and 64, eager fp32 and
  the fast path (one CUDA graph, bf16, channels_last).
- ``bench/pruned_vs_uniform``: the pruned student (``prune.round_to=8``) against the uniform-width
  generator of nearest MACs (:func:`~gancompress.experiments.benchmark.pruned_vs_uniform`).
- ``cityscapes/projection``: the Cityscapes paper recipe on synthetic 256x256 pairs in its
  layout (a few hundred stage-1 and stage-3 iterations), and the wall time of a full run
  projected from the measured rates.
- ``parity/cuda_graph``, ``parity/compile``: :class:`~gancompress.system.fast_infer.FastGenerator`
  replaying a CUDA graph / running ``torch.compile`` against eager, fp32 and bf16, on an input
  other than the captured one (max abs difference).
- ``demo/<family>/fast``: each demo recipe end to end with ``train.amp: auto`` (bf16) and
  ``train.channels_last: true``; ``demo/<family>/fp32`` the same with ``train.amp: off``. Every
  stage must leave its output, the run must report the precision asked for, and the student's
  metric must lie in the range of CPU runs of the same settings (:data:`REFERENCE`). The demo data
  is made in the same command (``gancompress.demo.makers``).
- ``torchrun/nccl_probe``: one process under torchrun on NCCL: the collectives
  :mod:`~gancompress.system.distributed` uses, and SyncBatchNorm's autograd function on the one-process
  group (the module itself falls back to BatchNorm with one process).
- ``torchrun/compress_1proc``: ``torchrun --nproc_per_node=1 ... compress`` on CUDA with
  ``train.sync_bn: true``; ``torchrun/compress_2proc_gloo``: two processes on gloo (``--device
  cpu``), as NCCL would need two GPUs.
- ``compile/stage3``: stage 3 with ``train.compile: true`` for a few iterations.
- ``parity/cpu_fallback`` (CPU only): every FastGenerator mode falls back to eager and matches it.

Every row works in subprocesses with their own time limit (a hang, or a CUDA error that poisons a
process, costs one row), and ``--budget-s`` skips the rows that no longer fit. The timings
(``bench/*``, ``cityscapes/projection``) run first, alone; the other rows then run ``--jobs`` at a
time (4 on CUDA: the demo nets leave an H100 mostly idle). The targets (:data:`TARGETS`) are
recorded with whether they are met. Logs of every subprocess are kept under ``WORK/logs``.

The GPU run, one shell command from the repository root (nothing is installed: ``python -m``
finds the package in the checkout; it first prints the modules missing, and stops when a required
one is; the logs are packed next to the JSON):

    python -c "import importlib.util as u; req='torch torchvision torch_pruning thop kornia segmentation_models_pytorch yaml tqdm'.split(); opt='skimage torch_fidelity onnx onnxruntime matplotlib'.split(); miss=[m for m in req+opt if u.find_spec(m) is None]; print('missing modules:', ' '.join(miss) or 'none'); raise SystemExit(any(m in req for m in miss))" && python -m gancompress.cli gpu-check --device cuda --out $OUT/gpu_check.json --work /tmp/gc; tar czf $OUT/gpu_check_logs.tgz -C /tmp/gc logs results

On the CPU (``--device cpu``) the same command runs the rows that make sense there (the demo rows
in fp32, the benchmark rows on the small demo recipe with few iterations, the FastGenerator
fallback, torchrun on gloo); ``--quick`` shrinks every row to a few iterations (the CI form).

This module runs the rows (budget, rows side by side, the table and the JSON file) and holds the
package's public names. What a row is and its subprocesses with time limits: :mod:`.check`; the
data the rows make: :mod:`.data`; the rows: :mod:`.timing_rows`, :mod:`.demo_rows` and
:mod:`.runtime_rows`; their in-process work, each in a fresh process: :mod:`.workers`.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch

from ...errors import GanCompressError
from .check import DEFAULT_RECIPES, Check, Outcome, Row, RowFailure, last_meaningful_line
from .data import write_random_feature_extractor
from .demo_rows import DEMO_FAMILIES, REFERENCE, Reference, demo_row, stage_outputs
from .runtime_rows import compile_row, nccl_row, parity_row, torchrun_row
from .timing_rows import (
    TARGETS,
    cityscapes_row,
    latency_row,
    project_full_run,
    pruned_row,
    stage3_row,
    stage_rate,
)
from .workers import nccl_version, run_worker

__all__ = ["BUDGET_S", "CPU_SLOWDOWN", "DEFAULT_RECIPES", "DEMO_FAMILIES", "REFERENCE", "TARGETS", "Check",
           "Outcome", "Reference", "Row", "RowFailure", "all_rows", "collect_targets", "environment",
           "format_table", "last_meaningful_line", "project_full_run", "run_check", "run_rows", "run_worker",
           "select_rows", "stage_outputs", "stage_rate", "write_random_feature_extractor"]

log = logging.getLogger(__name__)

#: On the CPU the limits and estimates of the rows (set for an H100) are multiplied by this.
CPU_SLOWDOWN = 10.0
#: Seconds the whole check may take on one H100 (the rows that would not fit are skipped); the
#: command's own start and the table come on top, within the eight minutes of the issue.
BUDGET_S = 450.0


def all_rows() -> list[Row]:
    """Every row, in the table's order (the timings first: with ``--jobs 1`` it is the run order)."""
    rows = [stage3_row(1), stage3_row(16), latency_row(), pruned_row(), cityscapes_row()]
    rows += [parity_row("cuda_graph"), parity_row("compile")]
    rows += [demo_row(f, fast=True) for f in DEMO_FAMILIES] + [demo_row(f, fast=False) for f in DEMO_FAMILIES]
    rows += [nccl_row(), torchrun_row(1), torchrun_row(2), compile_row(), parity_row("cpu_fallback")]
    return rows


def select_rows(rows: list[Row], patterns: list[str] | None) -> list[Row]:
    """The rows whose name matches one of the shell ``patterns`` (all when None), in run order."""
    if not patterns:
        return rows
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(r.name, p) for r in rows)]
    if unmatched:
        raise GanCompressError(f"--rows {unmatched[0]!r} matches no row; the rows are: "
                               f"{', '.join(r.name for r in rows)}")
    return [r for r in rows if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]


def environment(device: str) -> dict:
    """Device name, torch / CUDA / cuDNN / NCCL versions and the machine."""
    from ... import __version__

    env = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "gancompress": __version__, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                   memory_gib=round(props.total_memory / 2 ** 30, 1), capability=f"{props.major}.{props.minor}",
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
        try:
            env["nccl"] = nccl_version()
        except Exception as exc:  # noqa: BLE001 - a build without NCCL still reports the rest
            env["nccl"] = f"unavailable ({type(exc).__name__})"
    else:
        env["device_name"] = platform.processor() or "cpu"
    return env


def run_rows(rows: list[Row], check: Check, budget_s: float, on_row: Callable[[dict], None] | None = None,
             jobs: int = 1) -> list[dict]:
    """Run ``rows``; every row ends as a record, whatever happens in it.

    Rows marked ``alone`` (timings) run first, one at a time with nothing else running; the others
    then run ``jobs`` at a time (the demo runs are small and leave a GPU mostly idle), the longest
    first. A row starts only if its estimate fits the budget left, and runs within its own limit.

    Returns one record per row, in the order of ``rows``: {"row", "what", "status" ('pass' |
    'fail' | 'skip'), "seconds", "figure" (pass) or "reason" (fail, skip), "details", "targets",
    "concurrent"}. ``on_row`` is called with each record as it is made (the caller writes the JSON
    after every row, so a killed run keeps what it did).
    """
    scale = CPU_SLOWDOWN if check.device == "cpu" else 1.0
    start = time.monotonic()
    done: dict[str, dict] = {}
    lock = threading.Lock()
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def one(row: Row, concurrent: bool) -> None:
        left = budget_s - (time.monotonic() - start)
        record = {"row": row.name, "what": row.what, "status": "skip", "seconds": 0.0, "details": {}, "targets": {},
                  "concurrent": concurrent}
        if check.device == "cpu" and row.cuda_only:
            record["reason"] = f"CUDA only: {row.cuda_only}"
        elif check.device == "cuda" and row.cpu_only:
            record["reason"] = f"CPU only: {row.cpu_only}"
        elif left < row.estimate_s * scale:
            record["reason"] = (f"budget: {max(left, 0):.0f} s of --budget-s {budget_s:g} left, the row needs about "
                                f"{row.estimate_s * scale:.0f} s")
        else:
            limit = min(row.timeout_s * scale, left)
            mine = replace(check, deadline=time.monotonic() + limit, row=row.name,
                           threads=threads if concurrent else None)
            t0 = time.monotonic()
            try:
                outcome = row.run(mine)
                record.update(status="pass", figure=outcome.figure, details=outcome.details, targets=outcome.targets)
            except Exception as exc:  # noqa: BLE001 - one row's failure must not stop the others
                record.update(status="fail", reason=_one_line(exc), details=getattr(exc, "details", {}))
            record["seconds"] = round(time.monotonic() - t0, 1)
            record["limit_s"] = round(limit, 1)
        with lock:
            log.info("%s: %s %s", row.name, record["status"], record.get("figure", record.get("reason", "")))
            done[row.name] = record
            if on_row is not None:
                on_row(record)

    alone = [r for r in rows if r.alone or jobs == 1]
    shared = sorted((r for r in rows if not (r.alone or jobs == 1)), key=lambda r: -r.estimate_s)
    for row in alone:
        one(row, False)
    if shared:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="gpu-check") as pool:
            for future in [pool.submit(one, row, True) for row in shared]:
                future.result()
    return [done[r.name] for r in rows]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, RowFailure):
        return text
    return f"{type(exc).__name__}: {text}"[:300]


def format_table(records: list[dict]) -> str:
    """The one table: row, result, seconds, and the figure or the reason."""
    head = ("row", "result", "s", "figure / reason")
    body = [(r["row"], r["status"].upper(), f"{r['seconds']:.0f}", r.get("figure", r.get("reason", "")))
            for r in records]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(3)]
    lines = []
    for cells in [head, tuple("-" * w for w in widths) + ("-" * 15,), *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells[:3], widths)) + "  " + cells[3])
    counts = {s: sum(r["status"] == s for r in records) for s in ("pass", "fail", "skip")}
    lines.append(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    return "\n".join(lines)


def collect_targets(records: list[dict]) -> dict:
    """Every target measured by a row that passed, with whether it is met (None: not applicable
    here, e.g. on a CPU); targets whose row did not pass are listed as not measured."""
    out = {key: {"target": text, "value": None, "met": None, "row": None} for key, text in TARGETS.items()}
    for r in records:
        for key, t in r.get("targets", {}).items():
            out[key] = {**t, "row": r["row"]}
    return out


def run_check(*, device: str | None = None, out: Path = Path("gpu_check.json"), work: Path | None = None,
              recipes: Path = DEFAULT_RECIPES, budget_s: float | None = None, patterns: list[str] | None = None,
              quick: bool = False, demo_seed: int = 0, jobs: int | None = None) -> tuple[list[dict], str]:
    """Run the selected rows and write ``out``; returns (records, the table text).

    Args:
        device: 'cuda', 'cpu' or None (CUDA when present).
        out: the JSON file (written after every row).
        work: folder for data, runs and logs (default: a new temporary folder, kept).
        recipes: the folder holding the paper recipes and ``demo/``.
        budget_s: rows that would not finish within this many seconds from the start are skipped
            (None: :data:`BUDGET_S` on CUDA; on the CPU, where every row's limit and estimate is
            scaled by :data:`CPU_SLOWDOWN`, that much more).
        patterns: shell patterns of row names (None: every row).
        quick: the CI form, a few iterations per row.
        demo_seed: ``seed`` of the demo rows (the references were made with 0, 1 and 2).
        jobs: rows run side by side after the timings (None: 4 on CUDA, 1 on the CPU, where the
            cores are the bottleneck).
    """
    from ...files.atomic import atomic_write_json
    from ...system.devices import pick_device

    dev = pick_device(device).type
    if budget_s is None:
        budget_s = BUDGET_S * (CPU_SLOWDOWN if dev == "cpu" else 1.0)
    jobs = jobs if jobs is not None else (4 if dev == "cuda" else 1)
    if jobs < 1:
        raise GanCompressError(f"--jobs {jobs}: expected at least 1")
    rows = select_rows(all_rows(), patterns)
    work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    check = Check(dev, work.resolve(), Path(recipes).resolve(), quick, demo_seed)
    doc = {"format": "gancompress-gpu-check", "environment": environment(dev), "work": str(check.work),
           "quick": quick, "budget_s": budget_s, "jobs": jobs, "rows": [], "targets": collect_targets([])}
    started = time.monotonic()

    def save(record: dict) -> None:
        doc["rows"].append(record)
        doc["targets"] = collect_targets(doc["rows"])
        doc["seconds"] = round(time.monotonic() - started, 1)
        atomic_write_json(out, doc)

    atomic_write_json(out, doc)
    records = run_rows(rows, check, budget_s, save, jobs)
    doc.update(rows=records, seconds=round(time.monotonic() - started, 1))  # in the table's order
    atomic_write_json(out, doc)
    return records, format_table(records)
