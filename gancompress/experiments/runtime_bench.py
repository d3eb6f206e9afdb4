"""Teacher and student latency on the deployment runtimes, side by side in one run.

The generators are a run folder's teacher and student, or, from a recipe, a teacher of width
``model.ngf_teacher`` and a student pruned here to ``prune.budget`` from untrained weights (or
``--student``'s file). Both are timed at the recipe's resolution on every runtime, precision
and batch size asked (:mod:`gancompress.metrics.runtimes`), beside the family's generator of uniform
width whose complete MACs are nearest the student's (``uniform``; untrained weights, latency does
not depend on them), so a pruned net's irregular widths can be told from its MACs; int8 rows quantize each model's ONNX
file first (:mod:`gancompress.export.int8`), calibrated on training inputs (random ones with
``synthetic``). ``gancompress benchmark --runtimes`` prints the table and writes the rows as JSON.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..config.sections import Recipe
from ..export.generator import load_generator
from ..export.int8 import OnnxFiles, calibration_inputs
from ..families import get_family
from ..files.rundir import RunDir
from ..metrics.macs import count_macs
from ..metrics.runtimes import parse_runtimes, runtime_rows
from ..run.pipeline import prune_generator, pruned_generator
from .benchmark import LOOSE_TOLERANCE, nearest_uniform_width

log = logging.getLogger(__name__)


def _recipe_models(recipe: Recipe, student: Path | None) -> tuple:
    """Teacher and student built from a recipe (the student pruned here, or loaded from a file)."""
    if student is not None:
        pruned, meta = load_generator(student)
        family = get_family(recipe.family)(recipe)
        name = meta["name"]
        source = str(student)
    else:
        loose = dataclasses.replace(recipe.prune, tolerance=max(recipe.prune.tolerance, LOOSE_TOLERANCE))
        family = get_family(recipe.family)(dataclasses.replace(recipe, prune=loose))
        name = family.generator_names[0]
        torch.manual_seed(0)
        sparse = family.build_generator(name, recipe.model.ngf_student)
        pruned = pruned_generator(family, family.recipe, name, prune_generator(family, family.recipe, name, sparse),
                                  inherit=True)
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
                          calibration: int | None = None, uniform: bool = True) -> dict:
    """Latency rows of teacher and student (see :func:`gancompress.metrics.runtimes.runtime_rows`).

    Args:
        recipe: the recipe (ignored when ``run_dir`` is given: the run's own recipe is used).
        run_dir: a finished run folder whose teacher and student are timed.
        student: a pruned student generator file instead of pruning one here.
        calibration: int8 calibration inputs (default ``export.int8_calibration``).
        uniform: also time the uniform-width generator of the student's MACs.

    Returns:
        ``{"recipe", "generator", "resolution", "teacher", "student", "gmacs", "threads", "torch", "rows"}``,
        with ``uniform_ngf`` and ``student_vs_uniform`` (per ``runtime_precision_bN``: the student's
        median over the uniform net's; below 1.0 the student is faster) when ``uniform``.
    """
    runtimes = parse_runtimes(runtimes)
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
    count = calibration or recipe.export.int8_calibration
    calibrate = lambda: calibration_inputs(family, name, count, synthetic)  # noqa: E731
    with OnnxFiles(example, recipe.export.opset, calibrate) as onnx_of:
        rows = runtime_rows(shipped, lambda b: family.example_input(name, b), runtimes=runtimes,
                            batches=tuple(batch_sizes), precisions=tuple(precisions), max_time=max_time,
                            device=device, onnx_of=onnx_of, macs=macs)
    return {"recipe": recipe.name, "generator": name, "resolution": list(example.shape[2:]),
            "teacher": teacher_source, "student": source,
            "gmacs": {role: v / 1e9 for role, v in macs.items()}, "macs_ratio": macs["teacher"] / macs["student"],
            "threads": torch.get_num_threads(), "torch": torch.__version__, "max_time_s": max_time,
            "int8_calibration": ({"inputs": count, "synthetic": synthetic} if "int8" in precisions else None),
            "rows": rows, **(_against_uniform(rows, ngf) if uniform else {})}


def _against_uniform(rows: list[dict], ngf: int) -> dict:
    med = {(r["model"], r["runtime"], r["precision"], r["batch"]): r["median_ms"] for r in rows if "median_ms" in r}
    ratio = {f"{rt}_{p}_b{b}": ms / med[("uniform", rt, p, b)] for (m, rt, p, b), ms in med.items()
             if m == "student" and ("uniform", rt, p, b) in med}
    return {"uniform_ngf": ngf, "student_vs_uniform": ratio}
