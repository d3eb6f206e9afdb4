"""The baseline rows: what each trains (:data:`ROWS`), training a row of one seed into its run folder
(``student/`` generator files), its figures (metrics, MACs, params, iterations, diagnostics:
``row.json``) and, at the end, every row's CPU latency (:func:`measure_latencies`).

Every row of a seed starts from that seed's draws and runs on that seed's data order, so rows
differ only in what they are; the distilling rows and ``pruned-finetune`` start from the same
pruned net (the shared stages 1-2, re-initialised or not as ``prune.inherit_weights`` says).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from ...config import Recipe
from ...export.generator import load_generator, save_generator
from ...families import get_family
from ...files.atomic import atomic_write_json
from ...files.checkpoint import safe_load
from ...files.rundir import RunDir
from ...files.runlock import RunLock
from ...metrics.latency import measure_latency
from ...metrics.macs import count_macs
from ...metrics.registry import evaluate_generators
from ...run import pipeline, stage_runs
from ...run.record import prepare_run_dir
from ...run.report import stage_diagnostics
from ...run.stages.gan import GANStage
from ...run.train import train_stage
from ...system.devices import seed_everything
from ...system.finite import check_finite
from ..seeds import select_keys
from .protocol import Protocol

log = logging.getLogger(__name__)

ROW_RECORD = "row.json"


@contextlib.contextmanager
def _row_folder(recipe: Recipe, out: RunDir):
    """Hold the row's run folder and write its recipe (refusing a structural change on resume)."""
    lock = RunLock(out.root)
    lock.acquire()
    try:
        prepare_run_dir(recipe, out, resume=out.recipe.exists())
        yield
    finally:
        lock.release()


def _save_students(out: RunDir, gens: dict[str, nn.Module], recipe: Recipe, ngf: dict[str, int]) -> None:
    for n, g in gens.items():
        check_finite(g, f"baseline {out.root.name} student generator {n}")
        save_generator(out.generator("student", n), g, recipe, n, ngf[n])


def _train_plain(recipe: Recipe, out: RunDir, gens: dict[str, nn.Module], ngf: dict[str, int], device,
                 extra_epochs: int = 0) -> None:
    """The family's GAN and task losses against a fresh plain D, for stage 3's schedule (with
    ``extra_epochs`` more at the constant rate); writes student/."""
    family = get_family(recipe.family)(recipe)
    d = replace(recipe.distill, epochs_const=recipe.distill.epochs_const + extra_epochs)
    stage = GANStage(family, recipe.train, device, gens, distill=d)
    train_stage(stage, family, recipe, out, device, resume=True)
    _save_students(out, dict(stage.gens.items()), recipe, ngf)


def small_pretrain_epochs(recipe: Recipe) -> int:
    """Generator-only pre-training the small net gets: what the pruned rows' weights got
    (stage 'pretrain_P', and the sparse model's own pre-training when it was trained from scratch
    and its weights are inherited)."""
    own = recipe.train.pretrain_epochs if (recipe.route == "pretrained-scratch" and recipe.prune.inherit_weights) else 0
    return recipe.distill.student_pretrain_epochs + own


def train_small_scratch(p: Protocol, seed: int, out: RunDir) -> None:
    """The uniform net of nearest MACs from scratch, as many generator updates as the pruned rows."""
    recipe = p.recipe(seed)
    family = p.family(recipe)
    widths = p.uniform_widths(recipe)
    with _row_folder(recipe, out):
        seed_everything(recipe.seed + 1)
        gens = {n: family.reinit_generator(family.build_generator(n, w)) for n, (w, _) in widths.items()}
        epochs = small_pretrain_epochs(recipe)
        if epochs:
            stage_runs.pretrain_student(family, recipe, out, p.device, True, gens, epochs=epochs)
        stage1 = recipe.sparse_epochs if recipe.route != "pretrained-prune" else 0
        _train_plain(recipe, out, gens, {n: w for n, (w, _) in widths.items()}, p.device, extra_epochs=stage1)


def train_pruned_finetune(p: Protocol, seed: int, out: RunDir) -> None:
    """The pruned net from the distilling rows' start, trained without a teacher."""
    recipe = p.recipe(seed)
    family = p.family(recipe)
    pruned = safe_load(p.shared.pruned)
    with _row_folder(recipe, out):
        seed_everything(recipe.seed + 1)  # the draws of stage_runs.run_distill before its student exists
        gens = {n: stage_runs.pruned_generator(family, recipe, n, pruned[n], recipe.prune.inherit_weights)
                for n in family.generator_names}
        stage_runs.pretrain_student(family, recipe, out, p.device, True, gens)
        _train_plain(recipe, out, gens, {n: recipe.model.ngf_student for n in family.generator_names}, p.device)


def _distilling(extra: dict[str, object]) -> Callable[[Protocol, int, RunDir], None]:
    def train(p: Protocol, seed: int, out: RunDir) -> None:
        recipe = p.recipe(seed, extra)
        p.start_from_shared(recipe, out)
        pipeline.compress(recipe, out, resume=True, device=p.device_name, until="distill")
    return train


@dataclass(frozen=True)
class Row:
    """One trained row of the table.

    Attributes:
        label: the table's name for it.
        definition: what is trained, from what, against what teacher (the report quotes it).
        train: (protocol, seed, its run folder) -> None; leaves student/ files.
        stage: its training stage's name in metrics.jsonl (the iterations it ran).
    """

    label: str
    definition: str
    train: Callable[[Protocol, int, RunDir], None]
    stage: str


#: Trained rows, in table order.
ROWS: dict[str, Row] = {
    "small-scratch": Row(
        "small net from scratch",
        "the family's generator at the uniform width whose complete MACs are nearest the budget, initialised as "
        "GCC re-initialises its student, trained with the family's GAN and task losses against a fresh plain "
        "discriminator for as many generator updates as the pruned rows received in all (stage 1's epochs at "
        "the constant rate, then stage 3's schedule, after the same pre-training); no teacher",
        train_small_scratch, "gan"),
    "pruned-finetune": Row(
        "pruned net, no distillation",
        "the pruned net of the shared stages 1-2, from the distilling rows' start (re-initialised, or the pruned "
        "weights with prune.inherit_weights), trained with the family's GAN and task losses against a fresh plain "
        "discriminator for stage 3's iterations and schedule; no teacher",
        train_pruned_finetune, "gan"),
    "kd": Row(
        "pruned net + distillation, plain D",
        "the same start as pruned-finetune, GCC's stage 3 with the content and Gram texture terms from the frozen "
        "teacher's generator and discriminator features, against a plain discriminator (discriminator.mode: "
        "plain)", _distilling({"discriminator.mode": "plain"}), "distill"),
    "gcc": Row(
        "GCC: distillation + selective D",
        "the same start and terms as kd, against the recipe's student discriminator (GCC's selective activation "
        "discriminator, its retention factors steered by the EMA-smoothed teacher target)", _distilling({}),
        "distill"),
}

#: Run order within a seed.
RUN_ORDER = ("gcc", "kd", "pruned-finetune", "small-scratch")


def resolve_rows(keys: list[str] | None) -> list[str]:
    """The rows to run, in table order; an unknown key lists the valid ones."""
    return select_keys(keys, ROWS, "--rows", "row")


# --------------------------------------------------------------------------------------------
# Figures of one row and seed.

def row_figures(p: Protocol, key: str, seed: int, out: RunDir) -> dict:
    """Metrics (the student's, the family's references), MACs, params and diagnostics of a trained row."""
    recipe = p.recipe(seed)
    family = p.family(recipe)
    students = {n: load_generator(out.generator("student", n))[0] for n in family.generator_names}
    result = evaluate_generators(family, {"student": {n: g.to(p.device) for n, g in students.items()}}, p.device,
                                 cache_dir=p.cache)
    generators = {}
    for n, g in students.items():
        values = result["metrics"].get(n, {})
        generators[n] = {"metrics": values.get("student", {}), "file": str(out.generator("student", n)),
                         "macs": count_macs(g, family.example_input(n, 1)).as_dict(),
                         "references": {r: v for r, v in values.items() if r != "student"}}
    return {"row": key, "seed": seed, "run_dir": str(out.root), "generators": generators,
            "protocol": result["protocol"], "diagnostics": stage_diagnostics(out, ROWS[key].stage)}


def run_row(p: Protocol, key: str, seed: int) -> dict:
    """Train row ``key`` of ``seed`` (or continue it) and write its row.json; a done row is read back."""
    out = RunDir(p.folder / f"seed-{seed}" / key)
    record_path = out.root / ROW_RECORD
    if record_path.is_file():
        log.info("baseline row '%s', seed %d: done (%s)", key, seed, record_path)
        return json.loads(record_path.read_text())
    log.info("baseline row '%s', seed %d, in %s", key, seed, out)
    started = time.perf_counter()
    ROWS[key].train(p, seed, out)
    record = row_figures(p, key, seed, out)
    record["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(record_path, record)
    return record


# --------------------------------------------------------------------------------------------
# Latency, at the end, all rows back to back.

#: Latency is measured in this many interleaved rounds over every model; a model's figure is the
#: fastest round's median, so a burst of load from other processes biases no row against another.
LATENCY_ROUNDS = 3


def latency_protocol(iters: int) -> str:
    """How :func:`measure_latencies` measures, in words (for the report)."""
    return (f"eager fp32 forward passes at batch 1 on the CPU, the generator as shipped; {LATENCY_ROUNDS} rounds over "
            f"every model in turn, each the median of {iters} timed runs after {max(2, iters // 4)} warm-up runs; "
            "the fastest round's median")


def measure_latencies(family, files: dict[str, dict[str, str]], iters: int) -> dict[str, dict[str, float]]:
    """CPU latency (ms) of each model file: ``files`` is {label: {generator: file}} (:func:`latency_protocol`)."""
    jobs = [(label, n, path) for label, by_gen in files.items() for n, path in by_gen.items()]
    models = [family.for_export(load_generator(path)[0]) for _, _, path in jobs]
    best = [float("inf")] * len(jobs)
    for _ in range(LATENCY_ROUNDS):
        for i, ((_, n, _), model) in enumerate(zip(jobs, models)):
            m = measure_latency(model, family.example_input(n, 1), device="cpu", warmup=max(2, iters // 4),
                                iters=iters)
            best[i] = min(best[i], m["median_ms"])
    out: dict[str, dict[str, float]] = {}
    for (label, n, _), ms in zip(jobs, best):
        out.setdefault(label, {})[n] = ms
    return out

