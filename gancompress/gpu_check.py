"""One prepared check of every CUDA path, in one command: ``gancompress gpu-check``.

GPU machines are lent for a few minutes of device time at most, so everything that needs a GPU
is checked by this one command, prepared and tested on the CPU. Within about eight minutes on one
H100 it prints ONE table (a row per check: passed with its figure, failed with a one-line reason,
or skipped with why) and writes every figure as JSON (``--out``). Rows, in the table's order:

- ``bench/stage3_b1``, ``bench/stage3_b16``: stage-3 iterations (b1) and images (b16) per second of
  the Cityscapes recipe, fp32 eager against the fast path (bf16 autocast, channels_last, fused
  Adam, cudnn benchmark), side by side in one process (:func:`~gancompress.benchmark.stage3_rate`).
- ``bench/latency``: teacher and student generator latency at batch 1, 16 and 64, eager fp32 and
  the fast path (one CUDA graph, bf16, channels_last).
- ``bench/pruned_vs_uniform``: the pruned student (``prune.round_to=8``) against the uniform-width
  generator of nearest MACs (:func:`~gancompress.benchmark.pruned_vs_uniform`).
- ``cityscapes/projection``: the Cityscapes paper recipe on synthetic 256x256 pairs in its
  layout (a few hundred stage-1 and stage-3 iterations), and the wall time of a full run
  projected from the measured rates.
- ``parity/cuda_graph``, ``parity/compile``: :class:`~gancompress.fast_infer.FastGenerator`
  replaying a CUDA graph / running ``torch.compile`` against eager, fp32 and bf16, on an input
  other than the captured one (max abs difference).
- ``demo/<family>/fast``: each demo recipe end to end with ``train.amp: auto`` (bf16) and
  ``train.channels_last: true``; ``demo/<family>/fp32`` the same with ``train.amp: off``. Every
  stage must leave its output, the run must report the precision asked for, and the student's
  metric must lie in the range of CPU runs of the same settings (:data:`REFERENCE`). The demo data
  is made in the same command (``gancompress.data.demo``).
- ``torchrun/nccl_probe``: one process under torchrun on NCCL: the collectives
  :mod:`~gancompress.distributed` uses, and SyncBatchNorm's autograd function on the one-process
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
"""
from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .errors import GanCompressError

log = logging.getLogger(__name__)

#: The folder holding the ``gancompress`` package (and, in a checkout, ``recipes/``).
SOURCE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = SOURCE_ROOT / "recipes"
DEMO_FAMILIES = ("pix2pix", "cyclegan", "sagan", "srgan")
CITYSCAPES = "pix2pix_cityscapes.yaml"
CITYSCAPES_TRAIN_IMAGES = 2975  # the paper's training split
DONE = ".gpu-check-done"

#: Recipe overrides of the demo rows, on every device: short enough that the eight demo rows fit
#: the budget on one GPU. The CPU reference ranges (:data:`REFERENCE`) were made with these.
DEMO_SHORT: dict[str, dict[str, object]] = {
    "pix2pix": {"sparse.epochs": 3, "distill.epochs_const": 8, "distill.epochs_decay": 8},
    "cyclegan": {"sparse.epochs": 2, "distill.epochs_const": 6, "distill.epochs_decay": 6},
    "sagan": {},  # the demo is already short: 2 + 5 epochs
    "srgan": {"train.pretrain_epochs": 20, "distill.epochs_const": 5, "distill.epochs_decay": 5},
}
#: ``--quick`` (CI): one epoch per stage; the metric is then not compared with the reference.
DEMO_QUICK: dict[str, dict[str, object]] = {
    f: {"sparse.epochs": 1, "distill.epochs_const": 1, "distill.epochs_decay": 0,
        **({"train.pretrain_epochs": 1} if f == "srgan" else {})}
    for f in DEMO_FAMILIES
}


@dataclass(frozen=True)
class Reference:
    """The student's metric of a demo row in CPU runs of the row's own settings.

    Args:
        metric: the report's value key ('miou', 'fid', 'psnr').
        seeds: generator name -> the figure of seeds 0, 1, 2.
        floor: the least margin around the seeds' spread (run-to-run noise of a GPU run, whose
            float reductions differ from the CPU's like another seed does).
        source: how the figures were made.
    """

    metric: str
    seeds: dict[str, tuple[float, ...]]
    floor: float
    source: str

    def bounds(self, name: str) -> tuple[float, float]:
        """[lowest - margin, highest + margin], the margin the seeds' spread or ``floor``."""
        values = self.seeds[name]
        lo, hi = min(values), max(values)
        margin = max(hi - lo, self.floor)
        return lo - margin, hi + margin


_SOURCE = ("gancompress gpu-check --device cpu --rows 'demo/*/fp32' --demo-seed S (S = 0, 1, 2; DEMO_SHORT "
           "settings, fp32, OMP_NUM_THREADS=1), this project's 2-core CPU machine, 2026-11-28")
#: CPU figures of the demo rows' students, seeds 0, 1, 2 (see :class:`Reference`): mIoU by the demo
#: segmenter on its 16 held-out crops (pix2pix; real photos score about 60), FID on the fixed
#: random-feature extractor of :func:`write_random_feature_extractor` (cyclegan: the untranslated
#: inputs score 0.59; sagan: the teachers about 0.36) and Y-PSNR in dB (srgan). At these short
#: settings the seeds spread widely; the range is the seeds' spread on either side of them.
REFERENCE: dict[str, Reference] = {
    "pix2pix": Reference("miou", {"G": (32.46, 39.60, 39.46)}, 3.0, _SOURCE),
    "cyclegan": Reference("fid", {"AtoB": (0.01404, 0.00800, 0.02137),
                                         "BtoA": (0.00833, 0.00808, 0.01084)}, 0.02, _SOURCE),
    "sagan": Reference("fid", {"G": (0.3088, 0.5270, 0.1494)}, 0.05, _SOURCE),
    "srgan": Reference("psnr", {"G": (21.73, 21.81, 21.99)}, 0.5, _SOURCE),
}

#: The issue's targets: key in the JSON's "targets" -> what is asked.
TARGETS = {
    "stage3_b1": "Pix2Pix (Cityscapes) stage 3 at batch 1 on the fast path >= 75 it/s",
    "stage3_b16": "Pix2Pix (Cityscapes) stage 3 at batch 16 on the fast path >= 400 images/s",
    "pruned_vs_uniform": "pruned student (round_to 8) within 10 % of the uniform net at batch 16 on the fast path",
    "cityscapes_full_run": "projected full Cityscapes compression (stage 1 + prune + stage 3) under 6 hours",
}
TARGET_B1_ITS = 75.0
TARGET_B16_IMAGES = 400.0
TARGET_PRUNED_RATIO = 1.10
TARGET_FULL_RUN_S = 6 * 3600.0

#: FastGenerator parity tolerances (max abs difference of outputs in [-1, 1]): a replayed graph runs
#: eager's kernels; inductor fuses and reorders, more so in bf16 (8-bit mantissa, ~16 layers).
PARITY_TOLERANCE = {("cuda_graph", "fp32"): 1e-4, ("cuda_graph", "bf16"): 1e-2,
                    ("compile", "fp32"): 2e-3, ("compile", "bf16"): 0.1}
#: On the CPU the limits and estimates of the rows (set for an H100) are multiplied by this.
CPU_SLOWDOWN = 10.0
#: Seconds the whole check may take on one H100 (the rows that would not fit are skipped); the
#: command's own start and the table come on top, within the eight minutes of the issue.
BUDGET_S = 450.0


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


# ----------------------------------------------------------------------------------------------
# Subprocesses.

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


def _set(key: str, value) -> str:
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
        """Run :data:`WORKERS` ``name`` with ``kwargs`` in a fresh process; returns its result."""
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


# ----------------------------------------------------------------------------------------------
# Data the rows make.

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _lock(path: Path) -> threading.Lock:
    """One lock per file or folder made by the rows (two rows running side by side may need it)."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(Path(path), threading.Lock())


def make_demo_data(family: str, folder: Path) -> Path:
    """``family``'s demo data in ``folder`` (made once; a marker file says it is complete)."""
    from .data.demo import get_demo_maker

    with _lock(folder):
        if not (folder / DONE).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            get_demo_maker(family)(folder)
            (folder / DONE).write_text("ok\n")
    return folder


def make_cityscapes_like(folder: Path, n_train: int, n_val: int, size: int = 256, seed: int = 0) -> Path:
    """Random aligned pairs in the Cityscapes layout: ``folder/{train,val}/*.jpg``, each a
    (2 size) x size image (A | B). No photos needed (the torchrun rows use it at 64 too)."""
    import numpy as np
    from PIL import Image

    marker = folder / DONE
    with _lock(folder):
        if marker.is_file() and marker.read_text().strip() == f"{n_train} {n_val} {size}":
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        rng = np.random.default_rng(seed)
        for split, count in (("train", n_train), ("val", n_val)):
            (folder / split).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                # Smooth random fields (8x16 upsampled) compress like photos, unlike pixel noise.
                coarse = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
                image = Image.fromarray(coarse).resize((2 * size, size), Image.Resampling.BICUBIC)
                image.save(folder / split / f"{i:05d}.jpg", quality=90)
        marker.write_text(f"{n_train} {n_val} {size}\n")
    return folder


def _hash_uniform(count: int, salt: int) -> torch.Tensor:
    """``count`` numbers in [-1, 1) from an integer hash of their index: the same on every
    machine and torch version (unlike a seeded RNG stream)."""
    x = torch.arange(count, dtype=torch.int64) + salt * 1_000_003
    for _ in range(3):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (x >> 16) ^ x
    return (x.double() / 2 ** 32 * 2 - 1).float()


class MeanFeatures(nn.Module):
    """Images (N, 3, H, W) in [0, 1] -> the spatial mean of ``body``'s output channels, (N, C)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1).mean(dim=(2, 3))


def write_random_feature_extractor(path: Path, features: int = 12) -> Path:
    """A fixed random-feature FID extractor as TorchScript: (N, 3, H, W) in [0, 1] -> (N, ``features``).

    Three stride-2 3x3 convolutions with tanh and a spatial mean, weights from :func:`_hash_uniform`
    scaled to unit gain. The demo's unpaired families report FID only, and Inception weights
    cannot be downloaded here; FID on these features is no published FID, but it is the same
    function on the CPU and the GPU, so a student that trains worse scores worse on both.
    ``features`` stays below the CycleGAN demo's 16 test images, so the covariances have full rank.
    """
    from .fileio import atomic_write

    widths = (3, 16, 16, features)
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
        conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        with torch.no_grad():
            gain = math.sqrt(3 / (cin * 9))
            conv.weight.copy_(_hash_uniform(conv.weight.numel(), 2 * i).view_as(conv.weight) * gain)
            conv.bias.copy_(_hash_uniform(cout, 2 * i + 1) * 0.1)
        layers += [conv, nn.Tanh()]
    # Traced, not scripted: the network has no control flow, and a trace of convolutions and a mean
    # takes any image size.
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit's deprecation notice: TorchScript is what eval.fid_extractor loads.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(MeanFeatures(nn.Sequential(*layers)).eval(), torch.zeros(1, 3, 32, 32))
        return atomic_write(path, lambda f: torch.jit.save(traced, f))


# ----------------------------------------------------------------------------------------------
# Demo rows.

def demo_overrides(family: str, quick: bool) -> dict[str, object]:
    """The epoch overrides of a demo row (:data:`DEMO_SHORT`, or :data:`DEMO_QUICK`)."""
    return dict((DEMO_QUICK if quick else DEMO_SHORT)[family])


def student_metric(report: dict, family: str) -> dict[str, float]:
    """Generator name -> the student's value of the family's reference metric in ``report``."""
    key = REFERENCE[family].metric
    out = {}
    for name, entry in report.get("generators", {}).items():
        value = entry.get("metrics", {}).get("student", {}).get(key)
        if value is None:
            skipped = {m: r.get("skipped") for m, r in entry.get("protocol", {}).items() if r.get("skipped")}
            raise RowFailure(f"the report has no student {key} for generator {name}"
                             + (f" ({'; '.join(f'{m}: {s}' for m, s in skipped.items())})" if skipped else ""))
        out[name] = float(value)
    if not out:
        raise RowFailure("the report lists no generators")
    return out


def stage_outputs(run_dir: Path, names: list[str], pretrain: bool) -> list[Path]:
    """The file every stage of a finished run leaves (see :class:`~gancompress.rundir.RunDir`)."""
    from .rundir import RunDir

    run = RunDir(run_dir)
    names_t = tuple(names)
    paths = [run.sparse, run.pruned, run.report_json, run.report_md, run.metrics]
    if pretrain:
        paths += [run.pretrain("pretrain_S"), run.pretrain("pretrain_T")]
    for n in names:
        paths += [run.generator("student", n), run.generator("teacher", n), run.export(n, names_t, ".pt")]
    return paths


def demo_row(family: str, fast: bool) -> Row:
    """The demo recipe of ``family`` end to end: bf16 + channels_last (``fast``) or fp32."""
    variant = "fast" if fast else "fp32"
    setting = "train.amp auto (bf16), train.channels_last true" if fast else "train.amp off (fp32)"

    def run(check: Check) -> Outcome:
        recipe = check.recipe(f"demo/{family}.yaml")
        data = make_demo_data(family, check.work / "data" / family)
        sets = {"seed": check.demo_seed, "data.root": data, "train.amp": "auto" if fast else "off",
                "train.channels_last": fast, **demo_overrides(family, check.quick)}
        if family == "pix2pix":
            sets["eval.segmenter"] = data / "segmenter.pt"
        if REFERENCE[family].metric == "fid":
            extractor = check.work / "data" / "random_features.pt"
            with _lock(extractor):
                if not extractor.is_file():
                    write_random_feature_extractor(extractor)
            sets.update({"eval.fid_extractor": extractor, "eval.trust_torchscript": True})
        run_dir = check.work / "runs" / f"{family}-{variant}"
        shutil.rmtree(run_dir, ignore_errors=True)
        args = [sys.executable, "-m", "gancompress.cli", "compress", str(recipe), "--device", check.device,
                "--run-dir", str(run_dir)]
        for key, value in sets.items():
            args += ["--set", _set(key, value)]
        started = time.monotonic()
        check.call(args, "compress")
        seconds = time.monotonic() - started
        report = json.loads((run_dir / "report.json").read_text())
        names = list(report.get("generators", {}))
        pretrain = family == "srgan"
        missing = [str(p.relative_to(run_dir)) for p in stage_outputs(run_dir, names, pretrain) if not p.is_file()]
        if missing:
            raise RowFailure(f"stage outputs missing: {', '.join(missing)}")
        precision = report.get("training", {}).get("precision")
        expected = ("bf16" if check.device == "cuda" else "fp32") if fast else "fp32"
        if precision != expected:
            raise RowFailure(f"the run trained in {precision}, not {expected} as {setting} asks on {check.device}")
        values = student_metric(report, family)
        ref = REFERENCE[family]
        details = {"setting": setting, "overrides": {k: str(v) for k, v in sets.items()}, "precision": precision,
                   "pipeline_s": seconds, "student_metric": values, "metric": ref.metric,
                   "student_macs": {n: g["student"]["macs"] for n, g in report["generators"].items()}}
        shown = ", ".join(f"{n} {v:.4g}" for n, v in values.items())
        if check.quick:
            details["range"] = "not compared: --quick trains for one epoch, the reference for DEMO_SHORT's"
            return Outcome(f"{precision}, student {ref.metric} {shown} (quick: not compared)", details)
        bounds = {n: ref.bounds(n) for n in values}
        details["range"] = {n: list(b) for n, b in bounds.items()}
        details["reference_source"] = ref.source
        outside = [f"{n} {v:.4g} not in [{bounds[n][0]:.4g}, {bounds[n][1]:.4g}]"
                   for n, v in values.items() if not bounds[n][0] <= v <= bounds[n][1]]
        if outside:
            raise RowFailure(f"student {ref.metric} outside the CPU runs' range: {'; '.join(outside)}", details)
        ranges = ", ".join(f"[{b[0]:.4g}, {b[1]:.4g}]" for b in bounds.values())
        return Outcome(f"{precision}, student {ref.metric} {shown} in CPU range {ranges}", details)

    what = f"demo/{family}.yaml end to end, {setting}; student metric vs CPU runs"
    estimates = {"pix2pix": 45, "cyclegan": 40, "sagan": 20, "srgan": 30}
    if fast:
        return Row(f"demo/{family}/fast", what, run, timeout_s=150, estimate_s=estimates[family],
                   cuda_only="bf16 autocast and channels_last are CUDA paths (amp auto is fp32 on a CPU)")
    return Row(f"demo/{family}/fp32", what, run, timeout_s=150, estimate_s=estimates[family])


# ----------------------------------------------------------------------------------------------
# Cityscapes projection.

def stage_rate(metrics_path: Path, stage: str) -> tuple[float, int]:
    """Iterations per second of ``stage`` between its first and last log records (the first
    interval, with its start-up costs, is left out), and the number of iterations it spans."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("stage") == stage and "seconds" in r]
    if len(rows) < 2:
        raise RowFailure(f"{metrics_path}: fewer than two log records of stage '{stage}' to measure a rate from")
    first, last = rows[0], rows[-1]
    steps, seconds = last["step"] - first["step"], last["seconds"] - first["seconds"]
    if steps <= 0 or seconds <= 0:
        raise RowFailure(f"{metrics_path}: stage '{stage}' logged no progress between its records")
    return steps / seconds, steps


def project_full_run(recipe, stage1_rate: float, stage3_rate: float, prune_s: float,
                     train_images: int = CITYSCAPES_TRAIN_IMAGES) -> dict:
    """Seconds a full run of ``recipe`` would take at the measured rates.

    Stage 1 is ``recipe.sparse_epochs`` and stage 3 ``recipe.distill_epochs`` epochs of
    ``train_images // data.batch_size`` iterations; pruning takes as long as it did here (it does
    not depend on the data). Evaluation and export are left out.
    """
    per_epoch = train_images // recipe.data.batch_size
    it1, it3 = recipe.sparse_epochs * per_epoch, recipe.distill_epochs * per_epoch
    total = it1 / stage1_rate + prune_s + it3 / stage3_rate
    return {"stage1_iterations": it1, "stage3_iterations": it3, "stage1_s": it1 / stage1_rate,
            "prune_s": prune_s, "stage3_s": it3 / stage3_rate, "total_s": total, "total_h": total / 3600}


def cityscapes_row() -> Row:
    def run(check: Check) -> Outcome:
        from .recipe import load_recipe
        from .rundir import RunDir

        recipe_path = check.recipe(CITYSCAPES)
        n_train = 8 if check.quick else 320
        data = make_cityscapes_like(check.work / "data" / "cityscapes_like", n_train, 4)
        run_dir = check.work / "runs" / "cityscapes"
        shutil.rmtree(run_dir, ignore_errors=True)
        log_every = 2 if check.quick else 32
        sets = {"data.root": data, "sparse.epochs": 1, "distill.epochs_const": 1, "distill.epochs_decay": 0,
                "train.amp": "auto", "train.channels_last": True, "train.log_every": log_every,
                "train.samples_per_epoch": False, "eval.latency": False}
        args = [sys.executable, "-m", "gancompress.cli", "compress", str(recipe_path), "--device", check.device,
                "--run-dir", str(run_dir)]
        for key, value in sets.items():
            args += ["--set", _set(key, value)]
        check.call(args, "compress")
        run = RunDir(run_dir)
        r1, n1 = stage_rate(run.metrics, "sparse")
        r3, n3 = stage_rate(run.metrics, "distill")
        prune_s = run.pruned.stat().st_mtime - run.sparse.stat().st_mtime
        full = project_full_run(load_recipe(recipe_path), r1, r3, prune_s)
        met = full["total_s"] < TARGET_FULL_RUN_S if check.device == "cuda" and not check.quick else None
        details = {"train_images": n_train, "stage1_it_per_s": r1, "stage1_timed_iterations": n1,
                   "stage3_it_per_s": r3, "stage3_timed_iterations": n3, "projection": full,
                   "amp": "auto", "channels_last": True}
        targets = {"cityscapes_full_run": _target(TARGETS["cityscapes_full_run"], full["total_h"], "h", met)}
        targets = targets if met is not None else {}
        return Outcome(f"stage 1 {r1:.1f} it/s, stage 3 {r3:.1f} it/s, prune {prune_s:.0f} s -> full run "
                       f"{full['total_h']:.1f} h{_met_text(met, '< 6 h')}", details, targets)

    return Row("cityscapes/projection", "pix2pix_cityscapes.yaml on synthetic 256x256 pairs: stage rates and the "
               "projected full run", run, timeout_s=180, estimate_s=75, alone=True,
               cuda_only="hundreds of 256x256 iterations of the ngf-64 teacher take most of an hour on a CPU")


def _target(description: str, value: float, unit: str, met: bool | None) -> dict:
    return {"target": description, "value": value, "unit": unit, "met": met}


def _met_text(met: bool | None, what: str) -> str:
    if met is None:
        return ""
    return f" (target {what}: {'met' if met else 'NOT met'})"


# ----------------------------------------------------------------------------------------------
# Benchmark, parity, compile and torchrun rows (their work runs in a worker process).

def _bench_recipe(check: Check) -> Path:
    """The Cityscapes recipe on CUDA; on the CPU the small demo recipe (figures there only show
    that the rows run)."""
    if check.device == "cuda" and not check.quick:
        return check.recipe(CITYSCAPES)
    return check.recipe("demo/pix2pix.yaml")


def stage3_row(batch: int) -> Row:
    def run(check: Check) -> Outcome:
        cuda = check.device == "cuda" and not check.quick
        iters, warmup = ((50, 10) if batch == 1 else (15, 5)) if cuda else (2, 1)
        res = check.worker("stage3", recipe=str(_bench_recipe(check)), batch=batch, iters=iters, warmup=warmup)
        base, fast = res["modes"]["fp32_eager"], res["modes"]["fast"]
        speedup = fast["iters_per_s"] / base["iters_per_s"]
        if batch == 1:
            value, unit, goal, key = fast["iters_per_s"], "it/s", TARGET_B1_ITS, "stage3_b1"
        else:
            value, unit, goal, key = fast["images_per_s"], "images/s", TARGET_B16_IMAGES, "stage3_b16"
        base_value = base["iters_per_s"] if batch == 1 else base["images_per_s"]
        met = value >= goal if cuda else None
        figure = (f"fast {value:.1f} {unit} vs fp32 eager {base_value:.1f} {unit} ({speedup:.2f}x), data wait "
                  f"{fast['data_wait_share']:.0%}{_met_text(met, f'>= {goal:g} {unit}')}")
        # The targets are the Cityscapes recipe's on a GPU; the CPU form times the demo recipe.
        return Outcome(figure, res, {key: _target(TARGETS[key], value, unit, met)} if cuda else {})

    return Row(f"bench/stage3_b{batch}", f"stage-3 speed at batch {batch}, fp32 eager vs bf16 + channels_last",
               run, timeout_s=120, estimate_s=25 if batch == 1 else 30, alone=True)


def latency_row() -> Row:
    def run(check: Check) -> Outcome:
        cuda = check.device == "cuda" and not check.quick
        batches = [1, 16, 64] if cuda else [1]
        res = check.worker("latency", recipe=str(_bench_recipe(check)), batches=batches,
                           iters=20 if cuda else 2, warmup=3 if cuda else 1)
        lat = res["latency"]
        parts = []
        for b in batches:
            for setting in res["settings"]:
                key = f"{setting}_b{b}"
                t, s = lat["teacher"][key]["median_ms"], lat["student"][key]["median_ms"]
                parts.append(f"b{b} {setting} T {t:.2f}/S {s:.2f} ms")
        return Outcome("; ".join(parts), res)

    return Row("bench/latency", "teacher vs student generator latency at batch 1, 16, 64, eager fp32 vs CUDA graph "
               "bf16 channels_last", run, timeout_s=120, estimate_s=25, alone=True)


def pruned_row() -> Row:
    def run(check: Check) -> Outcome:
        cuda = check.device == "cuda" and not check.quick
        res = check.worker("pruned_vs_uniform", recipe=str(_bench_recipe(check)), iters=20 if cuda else 2,
                           warmup=3 if cuda else 1)
        ratio = res["ratio"]
        key = "cuda_graph_bf16_b16" if "cuda_graph_bf16_b16" in ratio else "eager_fp32_b16"
        met = ratio[key] <= TARGET_PRUNED_RATIO if cuda else None
        figure = (f"pruned {res['pruned_gmacs']:.3g} GMACs vs uniform ngf {res['uniform_ngf']} "
                  f"({res['uniform_gmacs']:.3g} GMACs): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items())
                  + _met_text(met, "<= 1.10x at b16 fast"))
        targets = {"pruned_vs_uniform": _target(TARGETS["pruned_vs_uniform"], ratio[key], f"x ({key})", met)}
        return Outcome(figure, res, targets if cuda else {})

    return Row("bench/pruned_vs_uniform", "pruned student (prune.round_to 8) vs the uniform net of nearest MACs, "
               "batch 1 and 16", run, timeout_s=150, estimate_s=40, alone=True)


def parity_row(mode: str) -> Row:
    def run(check: Check) -> Outcome:
        res = check.worker("parity", recipe=str(_bench_recipe(check)), mode=mode, batch=1 if check.quick else 2)
        bad = [f"{p} {r['max_abs_diff']:.3g} > {r['tolerance']:.3g}" for p, r in res["precisions"].items()
               if not r["ok"]]
        if bad:
            raise RowFailure(f"{mode} differs from eager: {'; '.join(bad)}")
        figure = ", ".join(f"{p} max|diff| {r['max_abs_diff']:.3g} (tol {r['tolerance']:.3g})"
                           for p, r in res["precisions"].items())
        return Outcome(f"{res['mode_run']}: {figure}", res)

    if mode == "cpu_fallback":
        return Row("parity/cpu_fallback", "FastGenerator on the CPU: every mode runs eager fp32, equal to the module",
                   run, timeout_s=60, estimate_s=10, cpu_only="the CPU fallback is a CPU path")
    return Row(f"parity/{mode}", f"FastGenerator {mode} vs eager on a new input, fp32 and bf16 (max abs difference)",
               run, timeout_s=90 if mode == "cuda_graph" else 240, estimate_s=15 if mode == "cuda_graph" else 80,
               cuda_only=f"{mode} runs on CUDA only (FastGenerator falls back to eager on a CPU)")


def compile_row() -> Row:
    def run(check: Check) -> Outcome:
        res = check.worker("compile_stage3", recipe=str(_bench_recipe(check)), batch=1,
                           iters=2 if check.quick else 20, warmup=3)
        if not res["finite"]:
            raise RowFailure(f"a stage-3 loss is not finite after compile: {res['losses']}")
        return Outcome(f"compile + first {res['warmup']} steps {res['warmup_s']:.0f} s, then {res['iters_per_s']:.1f} "
                       f"it/s; {res['unique_graphs']} graphs, {res['graph_breaks']} graph breaks, "
                       f"{len(res['recompile_limit_hits'])} recompile-limit hits", res)

    return Row("compile/stage3", "train.compile: true (with bf16 and channels_last) for a few stage-3 iterations",
               run, timeout_s=300, estimate_s=120,
               cuda_only="inductor's compile of a whole stage-3 step takes minutes on a CPU; the CUDA run checks it")


def nccl_row() -> Row:
    def run(check: Check) -> Outcome:
        result = check.work / "results" / "nccl_probe.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.unlink(missing_ok=True)
        check.call([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                    "-m", "gancompress.cli", "gpu-check", "--device", "cuda", "--worker", "nccl_probe",
                    "--worker-args", "{}", "--out", str(result)], "torchrun")
        res = json.loads(result.read_text())
        if not res["ok"]:
            raise RowFailure("; ".join(res["problems"]))
        return Outcome(f"NCCL {res['nccl_version']}: all_reduce, broadcast, objects, barrier ok; SyncBatchNorm "
                       f"kernels vs BatchNorm max|diff| out {res['syncbn']['out_diff']:.2g}, grad "
                       f"{res['syncbn']['grad_diff']:.2g}", res)

    return Row("torchrun/nccl_probe", "torchrun, one process on NCCL: the collectives distributed.py uses and "
               "SyncBatchNorm's kernels", run, timeout_s=90, estimate_s=20, cuda_only="NCCL needs CUDA")


def torchrun_row(nproc: int) -> Row:
    gloo = nproc > 1

    def run(check: Check) -> Outcome:
        data = make_cityscapes_like(check.work / "data" / "aligned64", 16, 4, size=64)
        recipe = check.recipe("demo/pix2pix.yaml")
        device = "cpu" if gloo else check.device
        run_dir = check.work / "runs" / f"torchrun{nproc}"
        shutil.rmtree(run_dir, ignore_errors=True)
        sets = {"data.root": data, "eval.segmenter": "", "sparse.epochs": 1, "distill.epochs_const": 1,
                "distill.epochs_decay": 0, "train.sync_bn": not gloo, "train.log_every": 2, "eval.latency": False}
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                "-m", "gancompress.cli", "compress", str(recipe), "--device", device, "--run-dir", str(run_dir)]
        for key, value in sets.items():
            args += ["--set", _set(key, value)]
        check.call(args, "torchrun")
        report = json.loads((run_dir / "report.json").read_text())
        names = list(report["generators"])
        missing = [str(p.relative_to(run_dir)) for p in stage_outputs(run_dir, names, False) if not p.is_file()]
        if missing:
            raise RowFailure(f"stage outputs missing: {', '.join(missing)}")
        note = ("gloo, 2 ranks" if gloo else "1 rank on cuda:0 with sync_bn; with one process no group is made "
                "(distributed.process_group), so NCCL and SyncBatchNorm are checked by torchrun/nccl_probe")
        details = {"ranks": nproc, "device": device, "student_gmacs": report["generators"]["G"]["student"]["macs"]}
        return Outcome(f"every stage finished ({note})", details)

    if gloo:
        return Row("torchrun/compress_2proc_gloo", "torchrun, 2 processes on gloo (--device cpu): compress end to end",
                   run, timeout_s=150, estimate_s=45)
    return Row("torchrun/compress_1proc", "torchrun --nproc_per_node=1 compress on CUDA with train.sync_bn: true",
               run, timeout_s=120, estimate_s=30, cuda_only="one CUDA process; the CPU form is compress_2proc_gloo")


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


# ----------------------------------------------------------------------------------------------
# Running the rows.

def environment(device: str) -> dict:
    """Device name, torch / CUDA / cuDNN / NCCL versions and the machine."""
    from . import __version__

    env = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "gancompress": __version__, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                   memory_gib=round(props.total_memory / 2 ** 30, 1), capability=f"{props.major}.{props.minor}",
                   cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
        try:
            env["nccl"] = _nccl_version()
        except Exception as exc:  # noqa: BLE001 - a build without NCCL still reports the rest
            env["nccl"] = f"unavailable ({type(exc).__name__})"
    else:
        env["device_name"] = platform.processor() or "cpu"
    return env


def _nccl_version() -> str:
    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old ones
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


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
    from .fileio import atomic_write_json
    from .runtime import pick_device

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


# ----------------------------------------------------------------------------------------------
# Workers: the in-process work of a row, run by `gancompress gpu-check --worker NAME` in a fresh
# process (a CUDA error poisons its process; a hang is killed with its process group).

def _device(name: str) -> torch.device:
    """The worker's device, with cudnn autotuning on CUDA as ``compress`` and ``benchmark`` set it."""
    from .runtime import pick_device

    dev = pick_device(name)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def _w_stage3(device: str, recipe: str, batch: int, iters: int, warmup: int) -> dict:
    from .benchmark import stage3_rate
    from .recipe import load_recipe

    dev = _device(device)
    r = load_recipe(recipe)
    modes = {"fp32_eager": {"train.amp": "off", "train.channels_last": False, "train.compile": False},
             "fast": {"train.amp": "auto", "train.channels_last": dev.type == "cuda", "train.compile": False}}
    out = {m: stage3_rate(r, dev, batch, iters, warmup, True, o) for m, o in modes.items()}
    return {"recipe": recipe, "batch": batch, "iters": iters, "warmup": warmup, "modes": out,
            "fast_setting": modes["fast"]}


def _fast_settings(dev) -> dict:
    settings = {"eager_fp32": None}
    if dev.type == "cuda":
        settings["cuda_graph_bf16"] = {"mode": "cuda_graph", "bf16": True, "channels_last": True}
    return settings


def _w_latency(device: str, recipe: str, batches: list[int], iters: int, warmup: int) -> dict:
    from .benchmark import generator_latency
    from .families import get_family
    from .recipe import load_recipe

    dev = _device(device)
    r = load_recipe(recipe)
    family = get_family(r.family)(r)
    name = family.generator_names[0]
    torch.manual_seed(0)
    gens = {"teacher": family.for_export(family.build_generator(name, r.model.ngf_teacher)),
            "student": family.for_export(family.build_generator(name, r.model.ngf_student))}
    settings = _fast_settings(dev)
    lat = generator_latency(gens, lambda b: family.example_input(name, b, dev), dev, batches, settings, warmup, iters)
    return {"recipe": recipe, "batches": batches, "settings": list(settings), "latency": lat,
            "student_is": f"unpruned, ngf {r.model.ngf_student}"}


def _w_pruned_vs_uniform(device: str, recipe: str, iters: int, warmup: int) -> dict:
    from .benchmark import pruned_vs_uniform
    from .recipe import load_recipe

    dev = _device(device)
    r = load_recipe(recipe, ["prune.round_to=8"])
    res = pruned_vs_uniform(r, dev, None, _fast_settings(dev), warmup, iters)
    return {"recipe": recipe, "round_to": 8, **res}


def _w_parity(device: str, recipe: str, mode: str, batch: int) -> dict:
    from .families import get_family
    from .fast_infer import FastGenerator
    from .recipe import load_recipe

    dev = _device(device)
    r = load_recipe(recipe)
    family = get_family(r.family)(r)
    name = family.generator_names[0]
    torch.manual_seed(0)
    g = family.for_export(family.build_generator(name, r.model.ngf_student)).to(dev).eval()
    example = family.example_input(name, batch, dev)
    # The graph is captured on ``example``; parity is measured on another input, so a replay that
    # ignored its new input would show.
    x = torch.rand(example.shape, generator=torch.Generator().manual_seed(1)).to(dev) * 2 - 1
    out = {"recipe": recipe, "mode": mode, "batch": batch, "shape": list(example.shape), "precisions": {}}
    if mode == "cpu_fallback":
        fast = FastGenerator(copy.deepcopy(g), example, mode="cuda_graph", bf16=True, channels_last=True)
        with torch.no_grad():
            same = torch.equal(fast(x), g(x))
        out["mode_run"] = fast.mode
        out["precisions"]["fp32"] = {"max_abs_diff": 0.0 if same else float("inf"), "tolerance": 0.0,
                                     "ok": same and fast.mode == "eager" and not fast.bf16}
        return out
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
        eager = FastGenerator(copy.deepcopy(g), example, mode="eager", bf16=bf16, channels_last=True)
        fast = FastGenerator(copy.deepcopy(g), example, mode=mode, bf16=bf16, channels_last=True)
        ref = eager(x).float().clone()
        got = fast(x).float().clone()  # a static buffer in cuda_graph mode: copied before the next call
        again = fast(-x).float().clone()
        diff = (ref - got).abs().max().item()
        tol = PARITY_TOLERANCE[(mode, precision)]
        moved = (again - got).abs().max().item()
        out["mode_run"] = fast.mode
        out["precisions"][precision] = {"max_abs_diff": diff, "tolerance": tol, "output_changes_with_input": moved,
                                        "finite": bool(torch.isfinite(got).all()),
                                        "ok": bool(torch.isfinite(got).all()) and diff <= tol and moved > 0}
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        low = g(x).float()
    with torch.no_grad():
        out["bf16_vs_fp32_eager_max_abs_diff"] = (low - g(x).float()).abs().max().item()
    return out


def _w_compile_stage3(device: str, recipe: str, batch: int, iters: int, warmup: int) -> dict:
    from .families import get_family
    from .pipeline import make_distill_stage
    from .recipe import load_recipe

    dev = _device(device)
    r = load_recipe(recipe, [f"data.batch_size={batch}", "train.compile=true", "train.amp=\"auto\"",
                             f"train.channels_last={'true' if dev.type == 'cuda' else 'false'}"])
    family = get_family(r.family)(r)
    torch.manual_seed(0)
    student = {n: family.build_generator(n, r.model.ngf_student) for n in family.generator_names}
    stage = make_distill_stage(family, r, dev, student)
    batches = (family.synthetic_batch(batch, dev), family.synthetic_batch(batch, dev))
    stage.set_epoch(0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    watch = _RecompileWatch()
    logging.getLogger("torch._dynamo").addHandler(watch)
    t0 = time.perf_counter()
    for _ in range(warmup):
        logs = stage.step(*batches)
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iters):
        logs = stage.step(*batches)
    sync()
    rate = iters / (time.perf_counter() - t0)
    losses = {k: float(v.float().mean()) for k, v in logs.items()}
    counters = _dynamo_counters()
    return {"recipe": recipe, "batch": batch, "warmup": warmup, "warmup_s": warm, "iters": iters,
            "iters_per_s": rate, "losses": losses, "finite": all(math.isfinite(v) for v in losses.values()),
            "recompile_limit_hits": watch.messages, **counters}


def _dynamo_counters() -> dict:
    """Graphs compiled and graph breaks (with their most frequent reasons) so far in this process,
    from torch._dynamo's counters (zeros where a torch version keeps them elsewhere)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {"unique_graphs": 0, "graph_breaks": 0, "break_reasons": []}
    breaks = counters.get("graph_break", {})
    return {"unique_graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "graph_breaks": int(sum(breaks.values())),
            "break_reasons": [str(k)[:200] for k in sorted(breaks, key=lambda k: -breaks[k])[:5]]}


class _RecompileWatch(logging.Handler):
    """Counts torch._dynamo's warnings that a function hit its recompile limit (it then runs
    eager: compile silently stops helping)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "recompile_limit" in text or "cache_size_limit" in text:
            self.messages.append(" ".join(text.split())[:300])


def _w_nccl_probe(device: str) -> dict:
    """Under torchrun with one process: the NCCL collectives gancompress uses, and SyncBatchNorm's
    autograd function against BatchNorm (the module falls back to BatchNorm with one process, so
    its kernels are called directly here)."""
    import torch.distributed as dist
    from torch import nn

    from . import distributed

    launch = distributed.launch_env()
    if launch is None:
        raise GanCompressError("the NCCL probe runs under torchrun (WORLD_SIZE is not set)")
    dev = torch.device("cuda", launch.local_rank)
    torch.cuda.set_device(dev)
    # The same call as distributed.process_group, which skips a group of one process.
    dist.init_process_group("nccl", timeout=distributed.TIMEOUT, device_id=dev)
    problems = []
    out = {"backend": dist.get_backend(), "world": dist.get_world_size(), "nccl_version": _nccl_version()}
    try:
        t = torch.arange(4.0, device=dev)
        dist.all_reduce(t)
        low = torch.tensor([3.0, -1.0], device=dev)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        flags = torch.tensor([1, 0, 1], dtype=torch.uint8, device=dev)  # bool state travels as uint8
        dist.broadcast(flags, src=0)
        box = [{"stage": "distill", "step": 7}]
        dist.broadcast_object_list(box, src=0)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, "digest")
        dist.barrier()
        ok = (t.tolist() == [0.0, 1.0, 2.0, 3.0] and low.tolist() == [3.0, -1.0] and flags.tolist() == [1, 0, 1]
              and box[0]["step"] == 7 and gathered == ["digest"])
        if not ok:
            problems.append("an NCCL collective returned wrong values")
        out["collectives_ok"] = ok
        out["syncbn"] = _syncbn_vs_batchnorm(dev, dist.group.WORLD, dist.get_world_size())
        if out["syncbn"]["out_diff"] > 1e-4 or out["syncbn"]["grad_diff"] > 1e-3:
            problems.append(f"SyncBatchNorm differs from BatchNorm: {out['syncbn']}")
        sbn = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)))
        out["convert_sync_batchnorm"] = type(sbn[0]).__name__
    finally:
        dist.destroy_process_group()
    out.update(ok=not problems, problems=problems)
    return out


def _syncbn_vs_batchnorm(dev, group, world: int) -> dict:
    import torch.nn.functional as F
    from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(4, 8, 16, 16, device=dev, generator=gen)
    weight, bias = torch.rand(8, device=dev, generator=gen) + 0.5, torch.randn(8, device=dev, generator=gen)
    results = []
    for fn in ("sync", "plain"):
        xi = x.clone().requires_grad_(True)
        mean, var = torch.zeros(8, device=dev), torch.ones(8, device=dev)
        if fn == "sync":
            y = SyncBatchNormFunction.apply(xi, weight, bias, mean, var, 1e-5, 0.1, group, world)
        else:
            y = F.batch_norm(xi, mean, var, weight, bias, True, 0.1, 1e-5)
        (y * torch.linspace(-1, 1, y.numel(), device=dev).view_as(y)).sum().backward()
        results.append((y.detach(), xi.grad, mean, var))
    (ys, gs, ms, vs), (yp, gp, mp, vp) = results
    return {"out_diff": (ys - yp).abs().max().item(), "grad_diff": (gs - gp).abs().max().item(),
            "running_mean_diff": (ms - mp).abs().max().item(), "running_var_diff": (vs - vp).abs().max().item()}


#: Worker name -> function(device=..., **kwargs) -> JSON-able dict.
WORKERS: dict[str, Callable[..., dict]] = {
    "stage3": _w_stage3,
    "latency": _w_latency,
    "pruned_vs_uniform": _w_pruned_vs_uniform,
    "parity": _w_parity,
    "compile_stage3": _w_compile_stage3,
    "nccl_probe": _w_nccl_probe,
}


def run_worker(name: str, args_json: str, device: str | None, out: Path) -> None:
    """Run worker ``name`` with the JSON keyword arguments ``args_json`` and write its result to ``out``."""
    from .fileio import atomic_write_json

    if name not in WORKERS:
        raise GanCompressError(f"unknown gpu-check worker {name!r} (valid: {', '.join(WORKERS)})")
    kwargs = json.loads(args_json)
    result = WORKERS[name](device=device or "cuda", **kwargs)
    atomic_write_json(out, result)

