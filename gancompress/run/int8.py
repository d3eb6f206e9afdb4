"""``gancompress export RUN_DIR --int8``: an int8 student for ONNX Runtime, kept only if it scores.

For every generator of a finished run, the student as shipped is exported to fp32 ONNX and
quantized to int8 (:func:`gancompress.export.int8.quantize_int8`: static, per-channel weights, QDQ,
calibrated on ``export.int8_calibration`` training inputs). Both files are scored on the eval set
with the family's metrics, run by ONNX Runtime, so the two figures differ by quantization alone,
and teacher and student are timed side by side on ONNX Runtime, fp32 and int8, at batch 1.

The int8 file is written into ``export/`` (``generator.int8.onnx``, or ``generator_<name>.int8.onnx``)
only when the headline metric (:data:`~gancompress.metrics.keys.HEADLINE_ORDER`) of every generator
is worse than the fp32 file's by at most ``export.int8_tolerance`` (a fraction). Either way the
figures go to ``export/int8.json`` and, when the run has one, into report.json (``"int8"`` of each
generator) and report.md; a refusal is a one-line :class:`~gancompress.errors.GanCompressError`
naming the metric, both values and the tolerance.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from ..errors import GanCompressError
from ..export.generator import load_generator
from ..export.int8 import OnnxFiles, OnnxGenerator, calibration_inputs
from ..files.atomic import atomic_write, atomic_write_json
from ..files.rundir import RunDir
from ..metrics.keys import headline_key, worsening
from ..metrics.macs import count_macs
from ..metrics.registry import evaluate_generators
from ..metrics.runtimes import runtime_rows
from .evaluate import open_run
from .report import read_report, write_markdown

log = logging.getLogger(__name__)

INT8_RECORD = "int8.json"
ROLES = ("fp32", "int8")


def int8_path(run: RunDir, name: str, names: tuple[str, ...]) -> Path:
    """Where the int8 student ``name`` is written: beside its fp32 ONNX file."""
    return run.export(name, names, ".int8.onnx")


def check_tolerance(metrics: dict[str, dict], tolerance: float) -> dict:
    """The verdict on one generator's ``{"fp32": {key: v}, "int8": {key: v}}`` metrics: ``{"key",
    "fp32", "int8", "worse_by", "tolerance", "accepted"}`` (``key`` None and not accepted when no
    headline metric was measured for both)."""
    key = headline_key({k: v for k, v in metrics.get("fp32", {}).items() if k in metrics.get("int8", {})})
    if key is None:
        return {"key": None, "tolerance": tolerance, "accepted": False}
    fp32, int8 = metrics["fp32"][key], metrics["int8"][key]
    worse = worsening(key, fp32, int8)
    return {"key": key, "fp32": fp32, "int8": int8, "worse_by": worse, "tolerance": tolerance,
            "accepted": worse <= tolerance}


def _refusal(name: str, verdict: dict, protocol: dict) -> str:
    if verdict["key"] is None:
        skipped = "; ".join(r["skipped"] for r in protocol.values() if "skipped" in r)
        return (f"export --int8: generator {name}: no task metric was measured to check the int8 student "
                f"against ({skipped or 'the family reports none'}); set the evaluator the reason names "
                f"in the run's recipe.yaml")
    return (f"export --int8: generator {name}: int8 {verdict['key']} {verdict['int8']:.4g} is "
            f"{verdict['worse_by']:.1%} worse than fp32's {verdict['fp32']:.4g}, beyond export.int8_tolerance "
            f"{verdict['tolerance']:.1%}; not written (calibrate on more inputs with export.int8_calibration, "
            f"or raise the tolerance with --int8-tolerance)")


def export_int8(run_dir: str | Path | RunDir, tolerance: float | None = None, batches=(1,)) -> dict:
    """Quantize, score and time the int8 student of a finished run (see the module docstring).

    Args:
        run_dir: the run folder, with ``student/`` and ``teacher/`` generator files.
        tolerance: instead of the recipe's ``export.int8_tolerance``.
        batches: batch sizes of the latency rows.

    Returns:
        The ``export/int8.json`` record: per generator ``metrics`` (``fp32``/``int8``), ``protocol``,
        ``verdict``, ``latency`` rows, ``file`` (None when refused).

    Raises:
        GanCompressError: a generator file is missing, or a verdict refuses (after the record is written).
    """
    run, recipe, family = open_run(run_dir, "export --int8")
    names = tuple(family.generator_names)
    tol = recipe.export.int8_tolerance if tolerance is None else tolerance
    cpu = torch.device("cpu")
    record: dict = {"tolerance": tol, "calibration_inputs": recipe.export.int8_calibration, "generators": {}}
    refusals = []
    for n in names:
        files = {role: run.generator(role, n) for role in ("teacher", "student")}
        for role, path in files.items():
            if not path.is_file():
                raise GanCompressError(f"export --int8: no {role} generator {path}; finish the run first with "
                                       f"gancompress compress RECIPE --run-dir {run.root} --resume")
        models = {role: family.for_export(load_generator(p, map_location=cpu)[0]).eval() for role, p in files.items()}
        example = family.example_input(n, 1)
        with OnnxFiles(example, recipe.export.opset,
                       calibration=lambda n=n: calibration_inputs(family, n, recipe.export.int8_calibration)) as onnx_of:
            student = {p: onnx_of("student", models["student"], p) for p in ROLES}
            with torch.no_grad():
                result = evaluate_generators(family, {p: {n: OnnxGenerator(student[p])} for p in ROLES}, cpu,
                                             cache_dir=run.cache)
            rows = runtime_rows(models, lambda b, n=n: family.example_input(n, b), runtimes=("onnxruntime",),
                                batches=tuple(batches), precisions=ROLES, max_time=recipe.eval.runtime_max_time,
                                onnx_of=onnx_of, macs={r: count_macs(m, example).complete for r, m in models.items()})
            metrics = {p: result["metrics"].get(n, {}).get(p, {}) for p in ROLES}
            verdict = check_tolerance(metrics, tol)
            entry = {"metrics": metrics, "protocol": result["protocol"].get(n, {}), "verdict": verdict,
                     "latency": rows, "int8_vs_fp32": _int8_speedups(rows), "file": None}
            out = int8_path(run, n, names)
            if verdict["accepted"]:
                with open(student["int8"], "rb") as src:
                    atomic_write(out, lambda f, src=src: shutil.copyfileobj(src, f))
                entry["file"] = str(out)
            else:  # an int8 file left by an earlier export is not this student's, or not within tolerance
                out.unlink(missing_ok=True)
                refusals.append(_refusal(n, verdict, entry["protocol"]))
        record["generators"][n] = entry
        log.info("int8 %s: %s", n, verdict)
    atomic_write_json(run.root / "export" / INT8_RECORD, record)
    _into_report(run, record)
    if refusals:
        raise GanCompressError(refusals[0])
    return record


def _int8_speedups(rows: list[dict]) -> dict[str, float]:
    """Per model and batch: fp32 median / int8 median on the same runtime (``"student_b1": 1.8``)."""
    med = {(r["model"], r["batch"], r["precision"]): r["median_ms"] for r in rows if "median_ms" in r}
    return {f"{m}_b{b}": med[(m, b, "fp32")] / ms for (m, b, p), ms in med.items()
            if p == "int8" and (m, b, "fp32") in med and ms > 0}


def _into_report(run: RunDir, record: dict) -> None:
    """Put each generator's int8 figures into report.json and rewrite report.md (when the run has them)."""
    if not run.report_json.is_file():
        return
    report = read_report(run)
    for n, entry in record["generators"].items():
        if n in report.get("generators", {}):
            report["generators"][n]["int8"] = {k: v for k, v in entry.items() if k != "protocol"}
    atomic_write_json(run.report_json, report)
    write_markdown(run, report)
