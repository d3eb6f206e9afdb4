"""Latency of a generator on the runtimes it ships to: eager PyTorch, TorchScript, ONNX Runtime and OpenVINO.

Each runtime (:data:`RUNTIMES`, by name) turns a model into a callable of one input, warms it up
on its own, and is then timed with ``torch.utils.benchmark.Timer.adaptive_autorange``: blocks of
runs are added until the interquartile range is within 10 % of the median, or the measurement's
time is spent (``max_time``). torch's Timer synchronises CUDA; ONNX Runtime and OpenVINO run on the
CPU in their own sessions, with as many threads as torch (``intra_op_num_threads``,
``INFERENCE_NUM_THREADS``), so the rows of one table compare runtimes and not thread counts.

ONNX runtimes need the model as an ONNX file: the caller passes ``onnx_of(role, model, precision)
-> path`` (the export layer writes it; this layer knows no exporter). A runtime whose package is
missing raises a one-line error naming the pip package; an unknown name is refused with the list.
"""
from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import GanCompressError

log = logging.getLogger(__name__)

#: The IQR/median ratio at which a measurement counts as stable.
STABLE_IQR = 0.1
WARMUP_RUNS = 3


@dataclass(frozen=True)
class Runtime:
    """A runtime a generator ships to.

    ``prepare(model, example, onnx_file, threads, device)`` returns a callable of one input
    (a tensor for torch runtimes, a float32 array for the others) and the input it takes.
    """

    name: str
    module: str  # imported to check the runtime is installed
    package: str  # what pip installs
    precisions: tuple[str, ...]
    needs_onnx: bool
    prepare: Callable


def _eager(model, x, onnx_file, threads, device):
    model = model.to(device).eval()
    x = x.to(device)

    def run(inp):
        with torch.inference_mode():
            return model(inp)

    return run, x


def _torchscript(model, x, onnx_file, threads, device):
    model = model.to(device).eval()
    x = x.to(device)
    with torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))

    def run(inp):
        with torch.inference_mode():
            return traced(inp)

    return run, x


def _onnxruntime(model, x, onnx_file, threads, device):
    ort = importlib.import_module("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda inp: session.run(None, {name: inp})), x.detach().float().cpu().numpy()


def _openvino(model, x, onnx_file, threads, device):
    ov = importlib.import_module("openvino")
    compiled = ov.Core().compile_model(str(onnx_file), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return (lambda inp: request.infer([inp])), x.detach().float().cpu().numpy()


RUNTIMES: dict[str, Runtime] = {
    "eager": Runtime("eager", "torch", "torch", ("fp32",), False, _eager),
    "torchscript": Runtime("torchscript", "torch", "torch", ("fp32",), False, _torchscript),
    "onnxruntime": Runtime("onnxruntime", "onnxruntime", "onnxruntime", ("fp32", "int8"), True, _onnxruntime),
    "openvino": Runtime("openvino", "openvino", "openvino", ("fp32", "int8"), True, _openvino),
}
PRECISIONS = ("fp32", "int8")


def get_runtime(name: str) -> Runtime:
    """The runtime ``name``, installed; a one-line GanCompressError otherwise."""
    if name not in RUNTIMES:
        raise GanCompressError(f"unknown runtime {name!r}: choose from {', '.join(RUNTIMES)}")
    runtime = RUNTIMES[name]
    try:
        importlib.import_module(runtime.module)
    except ImportError:
        raise GanCompressError(f"runtime {name} needs the '{runtime.package}' package: "
                               f"pip install {runtime.package}") from None
    return runtime


def parse_runtimes(names) -> tuple[str, ...]:
    """``"eager,onnxruntime"`` or a list of names -> checked names (each installed)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(names)
    if not names:
        raise GanCompressError(f"no runtime named: choose from {', '.join(RUNTIMES)}")
    for n in names:
        get_runtime(n)
    return names


def time_callable(fn: Callable, x, *, threads: int, max_time: float) -> dict:
    """Median and interquartile range of ``fn(x)`` after its warm-up.

    Args:
        fn, x: from a runtime's ``prepare``.
        threads: torch's thread count while timing (the ONNX runtimes were given theirs).
        max_time: seconds one measurement may take at most (it stops earlier once stable).

    Returns:
        ``{"median_ms", "iqr_ms", "runs"}``.
    """
    from torch.utils.benchmark import Timer

    for _ in range(WARMUP_RUNS):
        fn(x)
    timer = Timer(stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=threads)
    m = timer.adaptive_autorange(threshold=STABLE_IQR, min_run_time=min(0.01, max_time), max_run_time=max_time)
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "runs": len(m.raw_times) * m.number_per_run}


def time_runtime(name: str, model: torch.nn.Module, example: torch.Tensor, *, onnx_file=None, threads: int,
                 max_time: float, device="cpu") -> dict:
    """One measurement of ``model`` on runtime ``name`` at ``example``'s shape (see :func:`time_callable`).

    Args:
        name: a key of :data:`RUNTIMES` (installed; a one-line error otherwise).
        model: the generator as shipped, in eval mode.
        example: (N, ...) input; its batch size is the one timed.
        onnx_file: the model's ONNX file, for the runtimes that need one.
        threads, max_time: as :func:`time_callable`.
        device: where the torch runtimes run; the ONNX runtimes run on the CPU.

    Returns:
        ``{"median_ms", "iqr_ms", "runs"}``.
    """
    fn, x = get_runtime(name).prepare(model, example, onnx_file, threads, torch.device(device))
    return time_callable(fn, x, threads=threads, max_time=max_time)


def runtime_rows(models: dict[str, torch.nn.Module], example_fn: Callable[[int], torch.Tensor], *,
                 runtimes, batches=(1,), precisions=("fp32",), threads: int | None = None, max_time: float = 1.0,
                 device="cpu", onnx_of: Callable | None = None, macs: dict[str, int] | None = None) -> list[dict]:
    """Latency rows of several models on several runtimes, precisions and batch sizes.

    Args:
        models: role ('teacher', 'student', ...) -> generator as shipped (eval mode).
        example_fn: batch size -> (N, ...) input.
        runtimes: names of :data:`RUNTIMES`.
        precisions: 'fp32' and/or 'int8'; a runtime times only those it has (int8: the ONNX ones).
        threads: default torch's current thread count.
        max_time: seconds per measurement at most.
        device: where the torch runtimes run; the ONNX runtimes run on the CPU.
        onnx_of: ``(role, model, precision) -> path`` of its ONNX file (needed by the ONNX runtimes).
        macs: role -> complete MACs; with 'teacher' and 'student' the student rows get ``speedup``
            (teacher median / student median) and ``macs_ratio`` (teacher MACs / student MACs).

    Returns:
        One dict per (role, runtime, precision, batch): ``model, runtime, precision, batch, threads,
        median_ms, iqr_ms, runs`` (+ ``speedup``, ``macs_ratio`` on the student's).
    """
    threads = threads or torch.get_num_threads()
    for p in precisions:
        if p not in PRECISIONS:
            raise GanCompressError(f"unknown precision {p!r}: choose from {', '.join(PRECISIONS)}")
    rows = []
    for rt_name in runtimes:
        runtime = get_runtime(rt_name)
        if runtime.needs_onnx and onnx_of is None:
            raise GanCompressError(f"runtime {rt_name} needs ONNX files, and none can be written here")
        for precision in [p for p in precisions if p in runtime.precisions]:
            for role, model in models.items():
                onnx_file = onnx_of(role, model, precision) if runtime.needs_onnx else None
                for b in batches:
                    row = {"model": role, "runtime": rt_name, "precision": precision, "batch": b, "threads": threads}
                    try:
                        row.update(time_runtime(rt_name, model, example_fn(b), onnx_file=onnx_file, threads=threads,
                                                max_time=max_time, device=device))
                    except (RuntimeError, torch.jit.Error) as e:
                        if rt_name != "torchscript":
                            raise
                        # Some nets (data-dependent control flow) cannot be traced; the other rows stand.
                        log.warning("%s: TorchScript tracing failed (%s)", role, e)
                        rows.append({**row, "error": str(e).splitlines()[0]})
                        continue
                    log.info("%s %s %s b%d: %.3f ms (IQR %.3f)", role, rt_name, precision, b, row["median_ms"],
                             row["iqr_ms"])
                    rows.append(row)
    if macs and "teacher" in macs and "student" in macs:
        add_speedups(rows, macs["teacher"] / macs["student"])
    return rows


def add_speedups(rows: list[dict], macs_ratio: float) -> list[dict]:
    """Give each student row the teacher/student speed-up of its setting, next to the MACs ratio."""
    teacher = {(r["runtime"], r["precision"], r["batch"]): r["median_ms"] for r in rows
               if r["model"] == "teacher" and "median_ms" in r}
    for r in rows:
        t = teacher.get((r["runtime"], r["precision"], r["batch"]))
        if r["model"] == "student" and t is not None and r.get("median_ms", 0) > 0:
            r["speedup"] = t / r["median_ms"]
            r["macs_ratio"] = macs_ratio
    return rows


def format_rows(rows: list[dict]) -> str:
    """The rows as a markdown table: one line per setting, teacher and student side by side."""
    by_setting: dict = {}
    for r in rows:
        by_setting.setdefault((r["runtime"], r["precision"], r["batch"], r["threads"]), {})[r["model"]] = r
    lines = ["| runtime | precision | batch | threads | teacher ms (IQR) | student ms (IQR) | speed-up | MACs ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for (rt, p, b, th), models in by_setting.items():
        t, s = models.get("teacher"), models.get("student")

        def cell(r):
            return f"{r['median_ms']:.3g} ({r['iqr_ms']:.2g})" if r and "median_ms" in r else "-"

        speed = f"{s['speedup']:.2f}x" if s and "speedup" in s else "-"
        ratio = f"{s['macs_ratio']:.2f}x" if s and "macs_ratio" in s else "-"
        lines.append(f"| {rt} | {p} | {b} | {th} | {cell(t)} | {cell(s)} | {speed} | {ratio} |")
    return "\n".join(lines)
