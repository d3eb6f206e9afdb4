"""Teacher and student latency on the deployment runtimes, side by side in one run.

The generators are a run folder's teacher and student, or, from a recipe, a teacher of width
``model.ngf_teacher`` and a student pruned here to ``prune.budget`` from untrained weights (or
``--student``'s file). Both are timed at the recipe's resolution on every runtime, precision
and batch size asked (:mod:`gancompress.metrics.runtimes`), beside the family's generator of uniform
width whose complete MACs are nearest the student's (``uniform``; untrained weights, latency does
not depend on them), so a pruned net's irregular widths can be told from its MACs; int8 rows quantize each model's ONNX
file first (:mod:`gancompress.export.int8`), calibrated on training inputs (random ones with
``synthetic``). ``gancompress benchmark --runtimes`` prints the table and writes the rows as JSON
(format :data:`FORMAT`, with the machine, the commit and the date; a copy in docs/results/ becomes a
page of its own through ``python tools/make_docs.py``).
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path

import torch

from ..config.sections import Recipe
from ..errors import GanCompressError
from ..export.generator import load_generator
from ..export.int8 import OnnxFiles, calibration_inputs
from ..families import get_family
from ..files.rundir import RunDir
from ..metrics.macs import count_macs
from ..metrics.runtimes import format_rows, parse_runtimes, runtime_rows
from ..run.stage_runs import prune_generator, pruned_generator
from .benchmark import LOOSE_TOLERANCE, nearest_uniform_width
from .provenance import commit_record, machine_record

log = logging.getLogger(__name__)

#: The ``format`` of the JSON :func:`run_runtime_benchmark` returns.
FORMAT = "gancompress-runtimes/1"


def _prune_here(family, recipe: Recipe, name: str, round_to: int | None = None) -> torch.nn.Module:
    """The recipe's sparse model of untrained weights (seed 0) pruned to its budget, at the loose
    tolerance, its kept widths rounded up to multiples of ``round_to`` when given."""
    prune = dataclasses.replace(recipe.prune, tolerance=max(recipe.prune.tolerance, LOOSE_TOLERANCE),
                                **({"round_to": round_to} if round_to else {}))
    loose = dataclasses.replace(recipe, prune=prune)
    torch.manual_seed(0)
    sparse = family.build_generator(name, recipe.model.ngf_student)
    return pruned_generator(family, loose, name, prune_generator(family, loose, name, sparse), inherit=True)


def _recipe_models(recipe: Recipe, student: Path | None) -> tuple:
    """Teacher and student built from a recipe (the student pruned here, or loaded from a file)."""
    family = get_family(recipe.family)(recipe)
    if student is not None:
        pruned, meta = load_generator(student)
        name = meta["name"]
        source = str(student)
    else:
        name = family.generator_names[0]
        pruned = _prune_here(family, recipe, name)
        source = "pruned here from untrained weights"
    torch.manual_seed(0)
    teacher = family.build_generator(name, recipe.model.ngf_teacher)
    return family, name, teacher, pruned, source, "a teacher of untrained weights"


def _run_models(run_dir: Path) -> tuple:
    from ..families.recipe import load_recipe

    run = RunDir(run_dir)
    recipe = load_recipe(run.recipe)
    family = get_family(recipe.family)(recipe)
    name = family.generator_names[0]
    teacher = load_generator(run.generator("teacher", name))[0]
    student = load_generator(run.generator("student", name))[0]
    return family, name, teacher, student, str(run.generator("student", name)), str(run.generator("teacher", name))


def run_runtime_benchmark(recipe: Recipe | None = None, *, run_dir: Path | None = None, student: Path | None = None,
                          runtimes=("eager", "torchscript"), batch_sizes=(1,), precisions=("fp32",),
                          max_time: float = 1.0, device: str = "cpu", synthetic: bool = False,
                          calibration: int | None = None, uniform: bool = True, round_to: int | None = None) -> dict:
    """Latency rows of teacher and student (see :func:`gancompress.metrics.runtimes.runtime_rows`).

    Args:
        recipe: the recipe (ignored when ``run_dir`` is given: the run's own recipe is used).
        run_dir: a finished run folder whose teacher and student are timed.
        student: a pruned student generator file instead of pruning one here.
        calibration: int8 calibration inputs (default ``export.int8_calibration``).
        uniform: also time the uniform-width generator of the student's MACs.
        round_to: also prune the recipe's sparse model with ``prune.round_to`` = this and time it
            (``rounded``) beside the unrounded student (a recipe, without ``student``, only).

    Returns:
        ``{"format", "recipe", "family", "generator", "resolution", "teacher", "student", "gmacs", "threads",
        "torch", "rows", "machine", "commit", "date"}`` (``command`` is the caller's to add),
        with ``uniform_ngf`` and ``student_vs_uniform`` (per ``runtime_precision_bN``: the student's
        median over the uniform net's; below 1.0 the student is faster) when ``uniform``, and
        ``round_to`` and ``rounded_vs_student`` (the rounded net's median over the student's) with
        ``round_to``.
    """
    runtimes = parse_runtimes(runtimes)
    if round_to and (run_dir is not None or student is not None):
        raise GanCompressError("benchmark --round-to prunes the recipe's sparse model here; give a recipe, "
                               "without --student")
    if run_dir is not None:
        family, name, teacher, pruned, source, teacher_source = _run_models(run_dir)
    else:
        family, name, teacher, pruned, source, teacher_source = _recipe_models(recipe, student)
    recipe = family.recipe
    shipped = {"teacher": family.for_export(teacher).eval(), "student": family.for_export(pruned).eval()}
    example = family.example_input(name, 1)
    macs = {role: count_macs(m, example).complete for role, m in shipped.items()}
    if uniform:
        ngf, macs["uniform"] = nearest_uniform_width(family, name, macs["student"],
                                                     max(recipe.model.ngf_teacher, recipe.model.ngf_student))
        torch.manual_seed(0)
        shipped["uniform"] = family.for_export(family.build_generator(name, ngf)).eval()
    if round_to:
        shipped["rounded"] = family.for_export(_prune_here(family, recipe, name, round_to)).eval()
        macs["rounded"] = count_macs(shipped["rounded"], example).complete
    count = calibration or recipe.export.int8_calibration
    calibrate = lambda: calibration_inputs(family, name, count, synthetic)  # noqa: E731
    with OnnxFiles(example, recipe.export.opset, calibrate) as onnx_of:
        rows = runtime_rows(shipped, lambda b: family.example_input(name, b), runtimes=runtimes,
                            batches=tuple(batch_sizes), precisions=tuple(precisions), max_time=max_time,
                            device=device, onnx_of=onnx_of, macs=macs)
    return {"format": FORMAT, "recipe": recipe.name, "family": recipe.family, "generator": name, "resolution": list(example.shape[2:]),
            "teacher": teacher_source, "student": source,
            "gmacs": {role: v / 1e9 for role, v in macs.items()}, "macs_ratio": macs["teacher"] / macs["student"],
            "threads": torch.get_num_threads(), "torch": torch.__version__, "max_time_s": max_time,
            "int8_calibration": ({"inputs": count, "synthetic": synthetic} if "int8" in precisions else None),
            "rows": rows, **(_against_uniform(rows, ngf) if uniform else {}),
            **({"round_to": round_to, "rounded_vs_student": _ratios(rows, "rounded", "student")} if round_to else {}),
            "machine": machine_record(torch.device(device)), "commit": commit_record(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def _ratios(rows: list[dict], model: str, against: str) -> dict:
    """Per ``runtime_precision_bN``: ``model``'s median over ``against``'s."""
    med = {(r["model"], r["runtime"], r["precision"], r["batch"]): r["median_ms"] for r in rows if "median_ms" in r}
    return {f"{rt}_{p}_b{b}": ms / med[(against, rt, p, b)] for (m, rt, p, b), ms in med.items()
            if m == model and (against, rt, p, b) in med}


def _against_uniform(rows: list[dict], ngf: int) -> dict:
    return {"uniform_ngf": ngf, "student_vs_uniform": _ratios(rows, "student", "uniform")}


def summary_lines(result: dict) -> list[str]:
    """What ``benchmark --runtimes`` prints of a result: the models, the table, the uniform ratios."""
    g = result["gmacs"]
    models = (f"{result['recipe']} {result['generator']} at {'x'.join(map(str, result['resolution']))}: teacher "
              f"{g['teacher']:.4g} GMACs, student {g['student']:.4g} GMACs ({result['student']})")
    lines = [models, "", format_rows(result["rows"])]
    if result.get("student_vs_uniform"):
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in result["student_vs_uniform"].items())
        lines += ["", f"student against the uniform net of nearest MACs (ngf {result['uniform_ngf']}, "
                      f"{g['uniform']:.4g} GMACs), student ms / uniform ms: {ratios}"]
    if result.get("rounded_vs_student"):
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in result["rounded_vs_student"].items())
        lines += ["", f"the same budget with prune.round_to {result['round_to']} ({g['rounded']:.4g} GMACs), "
                      f"rounded ms / unrounded ms: {ratios}"]
    return lines
