"""Evaluate a finished run: task metric and latency, into report.json and report.md.

``gancompress evaluate RUN_DIR`` (and the last step of ``compress``) loads the teacher and
student generators of the run, asks the family for its task metric, measures latency of both
(median over warmed-up runs), takes the export parity figures the export stage recorded, and
writes ``report.json`` and ``report.md`` (:mod:`gancompress.run.report`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import GanCompressError
from ..export.generator import load_generator
from ..families import get_family
from ..families.recipe import load_recipe
from ..files.atomic import atomic_write_json
from ..files.rundir import RunDir
from ..metrics.registry import evaluate_generators
from ..system.devices import pick_device
from .report import read_report, training_record, write_markdown

log = logging.getLogger(__name__)


def _load_role(run: RunDir, role: str, names) -> dict:
    return {n: load_generator(run.generator(role, n))[0] for n in names}


def latency(family, teacher, student, recipe, device: torch.device) -> dict:
    """Latency of teacher vs student per generator, on the runtimes of ``eval.runtimes`` at batch 1.

    Returns ``{name: table}``: the table of :func:`gancompress.metrics.latency.latency_table`
    (on a GPU, its bf16 settings; on the CPU, made from the runtime rows, labelled
    ``<runtime>_b1_fp32``), with the rows of :func:`gancompress.metrics.runtimes.runtime_rows`
    under ``"runtimes"``.
    """
    from ..export.int8 import OnnxFiles
    from ..metrics.latency import latency_table
    from ..metrics.macs import count_macs
    from ..metrics.runtimes import runtime_rows

    out = {}
    iters = recipe.eval.latency_iters
    for n in family.generator_names:
        models = {"teacher": family.for_export(teacher[n]).to(device).eval(),
                  "student": family.for_export(student[n]).to(device).eval()}
        example = family.example_input(n, 1)
        macs = {role: count_macs(m.cpu(), example).complete for role, m in models.items()}
        with OnnxFiles(example, recipe.export.opset) as onnx_of:
            rows = runtime_rows(models, lambda b, n=n: family.example_input(n, b), runtimes=recipe.eval.runtimes,
                                max_time=recipe.eval.runtime_max_time, device=device, onnx_of=onnx_of, macs=macs)
        if device.type == "cuda":
            table = latency_table({"teacher": teacher[n].to(device), "student": student[n].to(device)},
                                  lambda b, n=n: family.example_input(n, b, device), device,
                                  warmup=max(2, iters // 4), iters=iters)
        else:
            table = {"device": str(device), "models": {role: {} for role in models}}
            for r in rows:
                key = f"{r['runtime']}_b{r['batch']}_{r['precision']}"
                table["models"][r["model"]][key] = ({"median_ms": r["median_ms"], "iqr_ms": r["iqr_ms"]}
                                                    if "median_ms" in r else {"error": r["error"]})
            table["speedup"] = {f"{r['runtime']}_b{r['batch']}_{r['precision']}": r["speedup"]
                                for r in rows if "speedup" in r}
        table["runtimes"] = rows
        out[n] = table
    return out


def open_run(run_dir: str | Path | RunDir, command: str) -> tuple:
    """``(RunDir, its recipe, its family)`` of a run folder; ``command`` names who asks in the
    one-line error for a folder without recipe.yaml."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.recipe.is_file():
        raise GanCompressError(f"{command}: {run.root} is not a run folder (no recipe.yaml); give the folder "
                               f"gancompress compress wrote, e.g. runs/demo_pix2pix")
    recipe = load_recipe(run.recipe)
    return run, recipe, get_family(recipe.family)(recipe)


def evaluate_run(run_dir: str | Path | RunDir, device: str | None = None) -> dict:
    """Fill the metric and latency fields of ``report.json`` and write ``report.md``."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.report_json.is_file():
        raise GanCompressError(f"{run}: no report.json; finish the run first with "
                               f"gancompress compress RECIPE --run-dir {run} --resume")
    run, recipe, family = open_run(run, "evaluate")
    dev = pick_device(device)
    report = read_report(run)
    teacher = _load_role(run, "teacher", family.generator_names)
    student = _load_role(run, "student", family.generator_names)
    with torch.no_grad():
        result = evaluate_generators(family, {"teacher": {n: g.to(dev) for n, g in teacher.items()},
                                              "student": {n: g.to(dev) for n, g in student.items()}},
                                     dev, cache_dir=run.cache)
    metrics, protocol = result["metrics"], result["protocol"]
    lat = latency(family, teacher, student, recipe, dev) if recipe.eval.latency else {}
    report["training"] = training_record(recipe, dev)
    for n, entry in report["generators"].items():
        if n in metrics:
            entry["metrics"] = metrics[n]
        entry["protocol"] = protocol.get(n, {})
        if n in lat:
            entry["latency"] = lat[n]
            speed = lat[n].get("speedup", {})
            entry["speedup_vs_macs"] = {k: {"measured": v, "macs_ratio": entry["macs_ratio"]}
                                        for k, v in speed.items()}
        if "onnx" in entry.get("export", {}):
            entry["onnx"] = entry["export"]["onnx"]
    if len(report["generators"]) == 1:
        only = next(iter(report["generators"].values()))
        for key in ("metrics", "protocol", "latency", "onnx"):
            if key in only:
                report[key] = only[key]
    atomic_write_json(run.report_json, report)
    write_markdown(run, report)
    return report
