"""The baseline rows: what each trains (:data:`ROWS`), training a row of one seed into its run folder
(student/ and teacher/ generator files), its figures (metrics, MACs, params: ``row.json``) and, at
the end, every row's CPU latency (:func:`measure_latencies`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ...config.sections import Recipe
from ...export.generator import load_generator, save_generator
from ...files.atomic import atomic_write_json
from ...files.rundir import RunDir
from ...files.runlock import RunLock
from ...metrics.latency import measure_latency
from ...metrics.macs import count_macs
from ...metrics.registry import evaluate_generators
from ...run import pipeline
from ...run.record import prepare_run_dir
from ...run.routes import stage3_teacher
from ...run.stages.gan import GANStage
from ...run.train import train_stage
from ...system.devices import seed_everything
from ...system.finite import check_finite
from ..seeds import select_keys
from .seed_run import SeedRun

log = logging.getLogger(__name__)

ROW_RECORD = "row.json"
TEACHER_ROW = "teacher"


# --------------------------------------------------------------------------------------------
# Rows: each trains into its run folder and leaves student/ (and teacher/) generator files.

@contextlib.contextmanager
def _row_folder(run: SeedRun, out: RunDir):
    """Hold the row's run folder and write its recipe (refusing a structural change on resume)."""
    lock = RunLock(out.root)
    lock.acquire()
    try:
        prepare_run_dir(run.recipe, out, resume=out.recipe.exists())
        yield
    finally:
        lock.release()


def _save(out: RunDir, role: str, gens: dict[str, nn.Module], recipe: Recipe, ngf: dict[str, int]) -> None:
    for n, g in gens.items():
        check_finite(g, f"baseline {out.root.name} {role} generator {n}")
        save_generator(out.generator(role, n), g, recipe, n, ngf[n])


def _train_gan(run: SeedRun, out: RunDir, gens: dict[str, nn.Module], ngf: dict[str, int]) -> None:
    """GAN loss + task loss for stage 3's length and schedule; writes student/."""
    d = run.recipe.distill
    stage = GANStage(run.family, run.recipe.train, run.device, gens, distill=d)
    train_stage(stage, run.family, run.recipe, out, run.device, resume=True)
    _save(out, "student", dict(stage.gens.items()), run.recipe, ngf)


def small_pretrain_epochs(recipe: Recipe) -> int:
    """Generator-only pre-training epochs the small nets get: what the gcc student gets.

    The gcc student is pre-trained in stage 'pretrain_P' (``distill.student_pretrain_epochs``),
    or inherits the sparse model's pre-training (``train.pretrain_epochs``) with
    ``prune.inherit_weights``; a net trained from scratch gets the same, or it would be compared
    without the family's own first step (SRGAN's MSE pre-training).
    """
    if recipe.distill.student_pretrain_epochs:
        return recipe.distill.student_pretrain_epochs
    return recipe.train.pretrain_epochs if recipe.prune.inherit_weights else 0


def _pretrain_small(run: SeedRun, out: RunDir, gens: dict[str, nn.Module]) -> None:
    """Pre-train the small nets in place, as the gcc student is (see :func:`small_pretrain_epochs`)."""
    pipeline.pretrain_student(run.family, run.recipe, out, run.device, True, gens,
                              epochs=small_pretrain_epochs(run.recipe))


def train_small_scratch(run: SeedRun, out: RunDir) -> None:
    """The uniform net trained from scratch with the family's losses, no teacher."""
    widths = run.uniform_widths()
    with _row_folder(run, out):
        gens = run.uniform_generators()
        seed_everything(run.recipe.seed + 1)  # the discriminators and the training draws, as in stage 3
        _pretrain_small(run, out, gens)
        _train_gan(run, out, gens, {n: w for n, (w, _) in widths.items()})


def train_pruned_finetune(run: SeedRun, out: RunDir) -> None:
    """The pruned architecture, from the gcc student's initial weights, trained without distillation."""
    recipe, family = run.recipe, run.family
    pruned = run.shared_pruned()
    with _row_folder(run, out):
        # The same draws as pipeline.run_distill: the gcc row's student starts from these weights.
        seed_everything(recipe.seed + 1)
        gens = {n: pipeline.pruned_generator(family, recipe, n, pruned[n], recipe.prune.inherit_weights)
                for n in family.generator_names}
        pipeline.pretrain_student(family, recipe, out, run.device, True, gens)  # as the gcc student, if set
        _train_gan(run, out, gens, {n: recipe.model.ngf_student for n in family.generator_names})


def train_small_distill(run: SeedRun, out: RunDir) -> None:
    """The uniform net as GCC's stage-3 student, with a teacher trained as the gcc row's is."""
    recipe, family, dev = run.recipe, run.family, run.device
    names = family.generator_names
    pruned = run.shared_pruned()
    sparse_state = run.sparse_state() if recipe.distill.teacher != "scratch" else None
    widths = run.uniform_widths()
    with _row_folder(run, out):
        teacher_init = None
        if recipe.distill.teacher == "scratch":
            # The teacher's pre-training is shared with the gcc row (its folder holds it).
            gens = pipeline.run_pretrain(family, recipe, run.gcc, dev, True, recipe.model.ngf_teacher, "pretrain_T")
            teacher_init = {"gens": gens} if gens is not None else None
        # Replay the gcc row's draws up to its teacher (run_distill: seed, then the pruned
        # student's re-initialisation), so this teacher starts from the same weights as gcc's.
        seed_everything(recipe.seed + 1)
        for n in names:
            pipeline.pruned_generator(family, recipe, n, pruned[n], recipe.prune.inherit_weights)
        student = run.uniform_generators()
        _pretrain_small(run, out, student)
        teacher, fresh_d = stage3_teacher(family, recipe, dev, sparse_state)
        stage = pipeline.make_distill_stage(family, recipe, dev, student, teacher, teacher_init,
                                            train_teacher_d=fresh_d)
        train_stage(stage, family, recipe, out, dev, resume=True)
        t_ngf = recipe.model.ngf_student if teacher is not None else recipe.model.ngf_teacher
        _save(out, "teacher", dict(stage.t_gens.items()), recipe, {n: t_ngf for n in names})
        _save(out, "student", dict(stage.s_gens.items()), recipe, {n: w for n, (w, _) in widths.items()})


def train_gcc(run: SeedRun, out: RunDir) -> None:
    """The whole pipeline (stages 1-4) in the gcc folder."""
    pipeline.compress(run.recipe, out, resume=out.recipe.exists(), device=run.device_name)


@dataclass(frozen=True)
class Row:
    """One trained row of the table.

    Attributes:
        label: the table's name for it.
        definition: what is trained, from what, against what teacher (the report quotes it).
        train: (seed run, its run folder) -> None; leaves student/ (and teacher/) files.
        stage: the name of its stage-3-length stage in metrics.jsonl (the iterations it ran).
    """

    label: str
    definition: str
    train: Callable[[SeedRun, RunDir], None]
    stage: str


#: Trained rows, in table order.
ROWS: dict[str, Row] = {
    "small-scratch": Row(
        "small net, from scratch",
        "the family's generator at the uniform width whose complete MACs are nearest the budget, "
        "initialised as GCC re-initialises its student (seed + 1), trained with the family's GAN loss and task "
        "loss against a fresh plain discriminator of the family for stage 3's iterations and learning-rate "
        "schedule; no teacher", train_small_scratch, "gan"),
    "small-distill": Row(
        "small net, distilled (GCC stage 3)",
        "the same uniform net from the same initial weights, as the student of GCC's stage 3 (the recipe's "
        "student discriminator, distillation terms and teacher) for stage 3's iterations; its teacher is "
        "the gcc row's (trained in stage 3 or frozen, as distill.teacher sets), from the same initial weights",
        train_small_distill, "distill"),
    "pruned-finetune": Row(
        "pruned net, no distillation",
        "the pruned architecture of the seed's stage 2, from the gcc student's initial weights (re-initialised, "
        "or the pruned weights with prune.inherit_weights), trained with the family's GAN loss and task loss "
        "against a fresh plain discriminator for stage 3's iterations and schedule; no teacher",
        train_pruned_finetune, "gan"),
    "gcc": Row(
        "GCC (prune + distil)",
        "the whole pipeline (gancompress compress): sparse model, pruning to the budget, GCC's stage 3 with "
        "its teacher (trained alongside or frozen, as distill.teacher sets), export", train_gcc, "distill"),
}

#: Run order within a seed: gcc first, since it leaves the stages the others share.
RUN_ORDER = ("gcc", "pruned-finetune", "small-distill", "small-scratch")


def resolve_rows(keys: list[str] | None) -> list[str]:
    """The rows to run, in table order; an unknown key lists the valid ones."""
    return select_keys(keys, ROWS, "--rows", "row")


# --------------------------------------------------------------------------------------------
# Figures of one row and seed.

def _final_step(run: RunDir, stage: str) -> int | None:
    """The iterations ``stage`` ran, from the run's metrics.jsonl."""
    if not run.metrics.is_file():
        return None
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    steps = [r["step"] for r in rows if r.get("stage") == stage and isinstance(r.get("step"), int)]
    return max(steps) if steps else None


def row_figures(run: SeedRun, key: str, out: RunDir, cache_dir: Path) -> dict:
    """Metrics (student, teacher, the family's baselines), MACs and params of a trained row."""
    family, dev = run.family, run.device
    roles = {"student": {n: load_generator(out.generator("student", n))[0] for n in family.generator_names}}
    if all(out.generator("teacher", n).exists() for n in family.generator_names):
        roles["teacher"] = {n: load_generator(out.generator("teacher", n))[0] for n in family.generator_names}
    generators = {}
    for n in family.generator_names:
        example = family.example_input(n, 1)
        entry = {role: {"macs": count_macs(gens[n], example).as_dict(),
                        "file": str(out.generator(role, n))} for role, gens in roles.items()}
        generators[n] = entry
    on_device = {role: {n: g.to(dev) for n, g in gens.items()} for role, gens in roles.items()}
    result = evaluate_generators(family, on_device, dev, cache_dir=cache_dir)
    for n, entry in generators.items():
        values = result["metrics"].get(n, {})
        for role in roles:
            entry[role]["metrics"] = values.get(role, {})
        entry["references"] = {r: v for r, v in values.items() if r not in roles}
    return {"row": key, "seed": run.seed, "run_dir": str(out.root), "definition": ROWS[key].definition,
            "iterations": _final_step(out, ROWS[key].stage), "generators": generators,
            "protocol": result["protocol"]}


def run_row(run: SeedRun, key: str, cache_dir: Path) -> dict:
    """Train row ``key`` of this seed (or continue it) and write its row.json; a done row is read back."""
    out = RunDir(run.gcc.root if key == "gcc" else run.row_dir(key).root)
    record_path = out.root / ROW_RECORD
    if record_path.is_file():
        log.info("baseline row '%s', seed %d: done (%s)", key, run.seed, record_path)
        return json.loads(record_path.read_text())
    log.info("baseline row '%s', seed %d, in %s", key, run.seed, out)
    started = time.perf_counter()
    ROWS[key].train(run, out)
    record = row_figures(run, key, out, cache_dir)
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


def measure_latencies(family, records: dict[str, dict[int, dict]], iters: int) -> dict:
    """CPU latency (ms, eager fp32, batch 1) of each row's student and of the teacher (:func:`latency_protocol`).

    Returns ``{row: {seed: {generator: ms}}}``, with the teacher under :data:`TEACHER_ROW` (the
    gcc row's teacher of each seed, or small-distill's where gcc did not run: the same architecture).
    """
    jobs = []  # (row, seed, generator name, file)
    for key, by_seed in records.items():
        for seed, record in by_seed.items():
            jobs += [(key, seed, n, g["student"]["file"]) for n, g in record["generators"].items()]
    for seed in sorted({s for by_seed in records.values() for s in by_seed}):
        source = next((records[k][seed] for k in ("gcc", "small-distill") if seed in records.get(k, {})), None)
        if source is not None:
            jobs += [(TEACHER_ROW, seed, n, g["teacher"]["file"]) for n, g in source["generators"].items()
                     if "teacher" in g]
    models = [family.for_export(load_generator(path)[0]) for _, _, _, path in jobs]
    best: list[float] = [float("inf")] * len(jobs)
    for _ in range(LATENCY_ROUNDS):
        for i, ((_, _, n, _), model) in enumerate(zip(jobs, models)):
            m = measure_latency(model, family.example_input(n, 1), device="cpu", warmup=max(2, iters // 4),
                                iters=iters)
            best[i] = min(best[i], m["median_ms"])
    out: dict = {}
    for (key, seed, n, _), ms in zip(jobs, best):
        out.setdefault(key, {}).setdefault(seed, {})[n] = ms
    return out
