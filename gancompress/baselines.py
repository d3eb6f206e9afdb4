"""Does compression pay? The student against the small nets people would train instead.

Every row runs once per seed (``recipe.seed``, +1, ...) with the recipe's data, batch size and
data order (both follow the seed) and stage 3's number of iterations and learning-rate schedule
(``distill.epochs_const`` + ``distill.epochs_decay`` epochs):

- ``small-scratch``: the family's generator at the uniform width ``ngf`` whose complete MACs are
  nearest the budget (:func:`~gancompress.benchmark.nearest_uniform_width`), initialised as GCC
  re-initialises its student (``family.reinit_generator``), trained from scratch with the family's
  GAN loss and task loss against a fresh plain discriminator of the family (:class:`GANStage`).
  No teacher.
- ``small-distill``: the same uniform net, from the same initial weights, as the student of GCC's
  stage 3 (:func:`~gancompress.pipeline.make_distill_stage`: the recipe's student discriminator,
  distillation terms and online teacher); no pruning.
- ``pruned-finetune``: the pruned architecture of the seed's stage 2, from the initial weights
  the gcc row's student starts from (re-initialised, or the pruned weights with
  ``prune.inherit_weights``), trained like small-scratch: GAN loss and task loss against a plain
  discriminator, no teacher, no distillation.
- ``gcc``: the whole pipeline (:func:`~gancompress.pipeline.compress`).

Shared work. Stages 1 and 2 (and the teacher's optional pre-training, ``pretrain_T``) run once
per seed, in the gcc row's folder; pruned-finetune and small-distill read them from there.

Teachers. gcc and small-distill each train their own teacher online in stage 3, exactly as the
recipe says (``distill.teacher``: from scratch by default, or the stage-1 model): same recipe,
seed, data order and iterations. small-distill draws its teacher's initial weights from the same
random state as gcc's (stage 3's seed, advanced past the student's re-initialisation as in
:func:`~gancompress.pipeline.run_distill`), so both teachers start identical; they drift apart only
through the random draws of training (dropout, the student's discriminator) that interleave with
their students'. Sharing one trained teacher instead would change the method (GCC's teacher learns
alongside its student), so each row reports its own teacher, and the spread of the gcc rows'
teachers over the seeds says how much a teacher moves by chance. Rows without a teacher are
compared with the gcc rows' teachers. Reference rows come without training: the teacher itself and
whatever baseline the family's evaluation scores (SRGAN's ``bicubic``, pix2pix's ``real`` photos,
CycleGAN's untranslated ``input``).

Every row leaves rebuildable generator files (:func:`~gancompress.export.save_generator`) in
``student/`` (and ``teacher/``) of its run folder. Latency is measured at the end, for every row
and seed in one go: eager fp32 forward passes at batch 1 on the CPU with the generator as shipped
(``family.for_export``), in :data:`LATENCY_ROUNDS` interleaved rounds of ``eval.latency_iters``
timed runs, the fastest round's median (:func:`latency_protocol`).

Layout of ``<output_dir>/<name>-baselines/``::

    recipe.yaml             the resolved recipe (first seed); --resume refuses another one
    seed-<s>/gcc/           the pipeline's run folder; also the seed's shared stages 1-2
    seed-<s>/<row>/         recipe.yaml, checkpoints/, metrics.jsonl, student/, teacher/, row.json
    baselines.json          every figure: per seed, mean ± std, verdicts, latency, machine, wall time
    baselines.md            the table

A row is done when its ``row.json`` exists; ``--resume`` reads done rows back and continues the
others from their checkpoints.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from . import pipeline
from .benchmark import nearest_uniform_width
from .checkpoint import safe_load
from .config import Recipe, dump_recipe, recipe_to_dict
from .errors import RecipeError
from .export import load_generator, save_generator
from .families import get_family
from .fileio import atomic_write_json, atomic_write_text
from .finite import check_finite
from .metrics.latency import measure_latency
from .metrics.macs import count_macs
from .metrics.registry import evaluate_generators
from .recipe import load_recipe
from .rundir import RunDir
from .runlock import RunLock
from .runrecord import prepare_run_dir, recipe_changes
from .runtime import pick_device, seed_everything
from .seeds import RULE, Spread, compare, headline_keys, seed_schedule, spread_or_none, within_std
from .stages import build_pair
from .stages.gan import GANStage
from .train import train_stage

log = logging.getLogger(__name__)

ROW_RECORD = "row.json"
TEACHER_ROW = "teacher"


class SeedRun:
    """One seed of a baselines run: its recipe, family, device and folders, and the work its rows share.

    Args:
        recipe_path: the recipe file.
        overrides: ``--set`` strings; ``seed=<seed>`` is added last.
        seed: this repeat's seed.
        folder: the baselines folder.
        device: 'cpu', 'cuda' or None (CUDA when present).
        like: a run of the same recipe with another seed, whose budgets and widths are reused.
    """

    def __init__(self, recipe_path: str | Path, overrides: list[str], seed: int, folder: Path, device: str | None,
                 like: SeedRun | None = None):
        self.recipe: Recipe = load_recipe(recipe_path, [*overrides, f"seed={seed}"])
        # Budgets and uniform widths do not depend on the seed: another seed's are reused.
        self._budgets = like._budgets if like is not None else None
        self._widths = like._widths if like is not None else None
        self.family = get_family(self.recipe.family)(self.recipe)
        self.seed = seed
        self.device_name = device
        self.device = pick_device(device)
        self.folder = folder
        self.root = folder / f"seed-{seed}"
        self.gcc = RunDir(self.root / "gcc")

    def row_dir(self, key: str) -> RunDir:
        return RunDir(self.root / key)

    # --- shared stages ----------------------------------------------------------------------
    def shared_pruned(self) -> dict:
        """Stage 2's output of this seed (stages 1-2 run in the gcc row's folder if not done yet)."""
        if not self.gcc.pruned.exists():
            pipeline.compress(self.recipe, self.gcc, resume=self.gcc.recipe.exists(), device=self.device_name,
                              until="prune")
        return safe_load(self.gcc.pruned)

    def sparse_state(self) -> dict:
        """Stage 1's output of this seed (the teacher when ``distill.teacher`` is not 'scratch')."""
        self.shared_pruned()
        return safe_load(self.gcc.sparse)

    # --- the uniform net ----------------------------------------------------------------------
    def budgets(self) -> dict[str, int]:
        """Each generator's budget in MACs, as stage 2 prunes to it."""
        if self._budgets is None:
            self._budgets = {n: self.recipe.prune.budget_for(n).macs(pipeline.teacher_macs(self.family, n).complete)
                             for n in self.family.generator_names}
        return self._budgets

    def uniform_widths(self) -> dict[str, tuple[int, int]]:
        """Generator name -> (uniform ngf whose complete MACs are nearest the budget, those MACs)."""
        cfg = self.recipe.model
        widest = max(cfg.ngf_teacher, cfg.ngf_student)
        if self._widths is None:
            self._widths = {n: nearest_uniform_width(self.family, n, b, widest) for n, b in self.budgets().items()}
        return self._widths

    def uniform_generators(self) -> dict[str, nn.Module]:
        """The uniform nets, initialised from stage 3's seed as a re-initialised student is.

        Drawn in a forked random state, so small-scratch and small-distill start from the same
        weights whatever was drawn before.
        """
        widths = self.uniform_widths()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.seed + 1)
            return {n: self.family.reinit_generator(self.family.build_generator(n, w))
                    for n, (w, _) in widths.items()}


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


def train_small_scratch(run: SeedRun, out: RunDir) -> None:
    """The uniform net trained from scratch with the family's losses, no teacher."""
    widths = run.uniform_widths()
    with _row_folder(run, out):
        gens = run.uniform_generators()
        seed_everything(run.recipe.seed + 1)  # the discriminators and the training draws, as in stage 3
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
        teacher = None
        if recipe.distill.teacher != "scratch":
            gens, discs = build_pair(family, recipe.model.ngf_student, recipe.train, dev)
            gens.load_state_dict(sparse_state["gens"])
            discs.load_state_dict(sparse_state["discs"])
            teacher = (gens, discs)
        stage = pipeline.make_distill_stage(family, recipe, dev, student, teacher, teacher_init)
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
        "student discriminator, distillation terms and online teacher) for stage 3's iterations; its teacher "
        "is trained as the gcc row's (distill.teacher), from the same initial weights", train_small_distill,
        "distill"),
    "pruned-finetune": Row(
        "pruned net, no distillation",
        "the pruned architecture of the seed's stage 2, from the gcc student's initial weights (re-initialised, "
        "or the pruned weights with prune.inherit_weights), trained with the family's GAN loss and task loss "
        "against a fresh plain discriminator for stage 3's iterations and schedule; no teacher",
        train_pruned_finetune, "gan"),
    "gcc": Row(
        "GCC (prune + distil)",
        "the whole pipeline (gancompress compress): sparse model, pruning to the budget, GCC's stage 3 with its "
        "online teacher, export", train_gcc, "distill"),
}

#: Run order within a seed: gcc first, since it leaves the stages the others share.
RUN_ORDER = ("gcc", "pruned-finetune", "small-distill", "small-scratch")


def resolve_rows(keys: list[str] | None) -> list[str]:
    """The rows to run, in table order; an unknown key lists the valid ones."""
    if not keys:
        return list(ROWS)
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise RecipeError(f"--rows: unknown row {unknown[0]!r} (valid: {', '.join(ROWS)})")
    return [k for k in ROWS if k in keys]


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


# --------------------------------------------------------------------------------------------
# The table.

def machine_record(device: torch.device) -> dict:
    """Where the figures were measured: cores, torch threads, processor, torch version, device."""
    record = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform(),
              "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
              "training_device": str(device)}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def _spread_dict(s: Spread | None) -> dict | None:
    return s.as_dict() if s is not None else None


def summarise(records: dict[str, dict[int, dict]], latency: dict, generator_names: tuple[str, ...]) -> dict:
    """Mean ± std of every figure per row and generator, and the verdicts.

    Args:
        records: row -> seed -> row.json content.
        latency: from :func:`measure_latencies`.
        generator_names: the family's generators.

    Returns:
        ``{generator: {"primary": key or None, "rows": {row: {...}}}}``; rows are the trained rows,
        then :data:`TEACHER_ROW` (the gcc rows' teachers, or small-distill's) and the family's
        evaluation baselines (e.g. 'bicubic').
    """
    out = {}
    for n in generator_names:
        rows: dict[str, dict] = {}
        for key, by_seed in records.items():
            gens = [r["generators"][n] for r in by_seed.values()]
            metric_keys = {k for g in gens for k in g["student"]["metrics"]}
            entry = {"label": ROWS[key].label, "seeds": sorted(by_seed),
                     "student": {k: spread_or_none(g["student"]["metrics"].get(k) for g in gens) for k in metric_keys},
                     "teacher": {}, "macs": {}, "params_m": None,
                     "iterations": [r.get("iterations") for r in by_seed.values()]}
            if all("teacher" in g for g in gens):
                t_keys = {k for g in gens for k in g["teacher"]["metrics"]}
                entry["teacher"] = {k: spread_or_none(g["teacher"]["metrics"].get(k) for g in gens) for k in t_keys}
            entry["macs"] = {"complete": spread_or_none(g["student"]["macs"]["macs_complete"] for g in gens),
                             "thop": spread_or_none(g["student"]["macs"]["macs"] for g in gens)}
            entry["params_m"] = spread_or_none(g["student"]["macs"]["params"] for g in gens)
            entry["latency_ms"] = spread_or_none(latency.get(key, {}).get(s, {}).get(n) for s in by_seed)
            rows[key] = entry
        teacher_source = next((k for k in ("gcc", "small-distill") if k in records), None)
        if teacher_source is not None and rows[teacher_source]["teacher"]:
            gens = [r["generators"][n] for r in records[teacher_source].values()]
            rows[TEACHER_ROW] = {
                "label": f"teacher (the {teacher_source} rows')", "seeds": sorted(records[teacher_source]),
                "student": rows[teacher_source]["teacher"], "teacher": {},
                "macs": {"complete": spread_or_none(g["teacher"]["macs"]["macs_complete"] for g in gens),
                         "thop": spread_or_none(g["teacher"]["macs"]["macs"] for g in gens)},
                "params_m": spread_or_none(g["teacher"]["macs"]["params"] for g in gens),
                "latency_ms": spread_or_none(latency.get(TEACHER_ROW, {}).get(s, {}).get(n)
                                             for s in records[teacher_source])}
        # The family's evaluation baselines (bicubic, real photos, the untranslated input): the
        # same figures in every row's evaluation; taken from the first row of each seed.
        refs: dict[str, dict[int, dict]] = {}
        for by_seed in records.values():
            for seed, r in by_seed.items():
                for role, values in r["generators"][n].get("references", {}).items():
                    refs.setdefault(role, {}).setdefault(seed, values)
        for role, by_seed in refs.items():
            keys = {k for v in by_seed.values() for k in v}
            rows[role] = {"label": f"{role} (no network)" if role != "real" else "real images (the metric's ceiling)",
                          "seeds": sorted(by_seed), "student": {k: spread_or_none(v.get(k) for v in by_seed.values())
                                                                for k in keys},
                          "teacher": {}, "macs": {}, "params_m": None, "latency_ms": None}
        keys = headline_keys({k for r in rows.values() for k, s in r["student"].items() if s is not None})
        primary = keys[0] if keys else None
        _verdicts(rows, keys)
        out[n] = {"primary": primary, "keys": keys, "rows": rows}
    return out


def _verdicts(rows: dict[str, dict], keys: list[str]) -> None:
    """Fill speed-up and the two verdicts of every row, per headline key."""
    teacher = rows.get(TEACHER_ROW)
    t_ms = teacher["latency_ms"] if teacher else None
    scratch = rows.get("small-scratch")
    for key, row in rows.items():
        row["speedup_vs_teacher"] = (t_ms.mean / row["latency_ms"].mean
                                     if t_ms is not None and row.get("latency_ms") is not None else None)
        row["verdicts"] = {}
        for k in keys:
            s = row["student"].get(k)
            if s is None:
                continue
            v = {}
            ref = scratch["student"].get(k) if scratch is not None and key != "small-scratch" else None
            if ref is not None:
                v["beats_small_scratch"] = compare(k, s, ref)
            own = row["teacher"].get(k)
            t = own if own is not None else (teacher["student"].get(k) if teacher and key != TEACHER_ROW else None)
            if t is not None:
                v["within_teacher_std"] = within_std(k, s, t)
                v["teacher_compared"] = "own" if own is not None else TEACHER_ROW
            row["verdicts"][k] = v


def summary_json(summary: dict) -> dict:
    """:func:`summarise`'s result with every :class:`Spread` as a plain dict."""
    def plain(v):
        if isinstance(v, Spread):
            return v.as_dict()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v
    return plain(summary)


def _fmt(s: Spread | None, digits: int = 4) -> str:
    return "-" if s is None else s.format(digits)


def markdown_table(summary: dict, order: list[str]) -> str:
    """One table per generator: student and teacher metrics (mean ± std), GMACs, params, latency,
    speed-up and the two verdicts on the headline metric."""
    blocks = []
    for n, gen in summary.items():
        rows, keys, primary = gen["rows"], gen["keys"], gen["primary"]
        head = ["row"] + [f"student {k}" for k in keys] + [f"teacher {k}" for k in keys]
        head += ["GMACs (complete)", "GMACs (thop)", "params (M)", "CPU latency b1 (ms)", "speed-up vs teacher",
                 f"beats small-scratch? ({primary})", f"within one teacher std of teacher? ({primary})"]
        lines = [f"### Generator {n}" if len(summary) > 1 else "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for key in [*order, TEACHER_ROW] + [k for k in rows if k not in order and k != TEACHER_ROW]:
            if key not in rows:
                continue
            r = rows[key]
            v = r["verdicts"].get(primary, {})
            within = v.get("within_teacher_std", "-")
            if v.get("teacher_compared") == TEACHER_ROW and within != "-":
                within += " vs the teacher row"
            cells = [f"{key}: {r['label']}"] + [_fmt(r["student"].get(k)) for k in keys]
            cells += [_fmt(r["teacher"].get(k)) for k in keys]
            cells += [_fmt(r["macs"].get("complete")), _fmt(r["macs"].get("thop")), _fmt(r["params_m"]),
                      _fmt(r["latency_ms"], 3),
                      "-" if r["speedup_vs_teacher"] is None else f"{r['speedup_vs_teacher']:.2f}x",
                      v.get("beats_small_scratch", "-"), within]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(line for line in lines if line))
    return "\n\n".join(blocks)


def markdown_report(result: dict) -> str:
    """baselines.md: the table, the seeds and the spread rule, the row definitions, time and machine."""
    m = result["machine"]
    seeds = result["seeds"]
    lines = [f"# Baselines: {result['recipe']} ({result['family']})", "",
             markdown_table(result["_summary"], result["rows"]), "",
             f"Seeds {', '.join(map(str, seeds))}: every figure is the mean ± the sample standard deviation over "
             f"{len(seeds)} seed(s). A difference is called one only where {RULE}; otherwise \"within spread\"."
             + (" With one seed there is no spread and nothing is called." if len(seeds) == 1 else ""),
             "Rows without their own teacher are compared with the teacher row (the gcc rows' teachers). MACs "
             "and parameters are the student's (the teacher row: the teacher's). Latency: "
             f"{result['latency_protocol']}.", ""]
    for n, gen in result["_summary"].items():
        t = gen["rows"].get(TEACHER_ROW)
        if t is not None and gen["primary"] in t["student"]:
            lines.append(f"Teacher's own spread ({n}, {gen['primary']}): {_fmt(t['student'][gen['primary']])} "
                         f"over seeds {', '.join(map(str, t['seeds']))}.")
    iterations = {k: sorted({r.get("iterations") for r in by_seed.values()}, key=str)
                  for k, by_seed in result["runs"].items()}
    lines.append("Training iterations (stage 3's length) per row: "
                 + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in iterations.items()) + ".")
    lines += [f"Note: {note}" for note in result["notes"]]
    lines += ["", "Rows:", ""]
    for key in result["rows"]:
        lines.append(f"- `{key}`: {ROWS[key].definition}.")
    lines += ["", f"Budget and uniform width: {result['uniform']}.", "",
              f"Wall time {result['wall_seconds']:.0f} s (this invocation; the rows' own training and evaluation: "
              f"{result['row_seconds']:.0f} s in all). Machine: {m['cpu_count']} cores, {m['torch_threads']} torch "
              f"threads (OMP_NUM_THREADS={m['omp_num_threads']}), {m['processor']}, torch {m['torch']}, trained on "
              f"{m['training_device']}{', ' + m['gpu'] if 'gpu' in m else ''}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The whole run.

def _check_folder(folder: Path, base: Recipe, resume: bool) -> None:
    """Refuse a folder that holds another run; on --resume, refuse a changed recipe."""
    stored = folder / "recipe.yaml"
    if stored.exists() and not resume:
        raise RecipeError(f"{folder}: already holds a baselines run; pass --resume to continue it, or --out to "
                          "start elsewhere")
    if stored.exists():
        old = yaml.safe_load(stored.read_text())  # our own file, written by dump_recipe
        changes = recipe_changes(old, recipe_to_dict(base))
        if changes:
            k, (a, b) = next(iter(changes.items()))
            raise RecipeError(f"--resume: {k} changed ({a!r} -> {b!r}) since {folder} was started; resume with the "
                              "same recipe and --set, or pass --out to start elsewhere")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stored, dump_recipe(base))


def run_baselines(recipe_path: str, overrides: list[str], *, seeds: int = 1, rows: list[str] | None = None,
                  out_dir: Path | None = None, resume: bool = False, device: str | None = None) -> tuple[Path, dict]:
    """Run the baseline rows of ``recipe_path`` for ``seeds`` seeds and write the table.

    Args:
        recipe_path: the recipe file.
        overrides: ``--set`` strings, applied to every row.
        seeds: how many repeats (seeds ``recipe.seed``, +1, ...).
        rows: row keys (default: all of :data:`ROWS`).
        out_dir: the baselines folder (default ``<output_dir>/<name>-baselines``).
        resume: continue a run found in the folder (done rows are read back).
        device: 'cpu', 'cuda' or None.

    Returns:
        (the folder, the figures written to baselines.json).
    """
    started = time.perf_counter()
    keys = resolve_rows(rows)
    base = load_recipe(recipe_path, overrides)
    folder = Path(out_dir) if out_dir is not None else Path(base.output_dir) / f"{base.name}-baselines"
    schedule = seed_schedule(base.seed, seeds)
    lock = RunLock(folder)
    lock.acquire()  # one baselines process per folder
    try:
        _check_folder(folder, base, resume)
        records: dict[str, dict[int, dict]] = {k: {} for k in keys}
        runs = {}
        for seed in schedule:
            run = SeedRun(recipe_path, overrides, seed, folder, device, like=runs.get(schedule[0]))
            runs[seed] = run
            for key in [k for k in RUN_ORDER if k in keys]:
                records[key][seed] = run_row(run, key, folder / "cache")
        first = runs[schedule[0]]
        latency = measure_latencies(first.family, records, first.recipe.eval.latency_iters)
        summary = summarise(records, latency, first.family.generator_names)
        uniform = ", ".join(f"{n}: budget {first.budgets()[n] / 1e9:.4g} GMACs -> uniform ngf {w} "
                            f"({macs / 1e9:.4g} GMACs complete)" for n, (w, macs) in first.uniform_widths().items())
        notes = []
        if base.prune.inherit_weights and {"gcc", "pruned-finetune"} & set(keys):
            pre = f" after {base.train.pretrain_epochs} epochs of pre-training" if base.train.pretrain_epochs else ""
            notes.append(f"prune.inherit_weights is on: the gcc and pruned-finetune students start from the pruned "
                         f"weights of stage 1 ({base.sparse_epochs} epoch(s) of sparse training{pre}), the small nets "
                         "from scratch, so the pruned rows had that much more training.")
        result = {"recipe": str(recipe_path), "family": base.family, "name": base.name, "notes": notes,
                  "overrides": list(overrides), "seeds": schedule, "rows": keys, "rule": RULE,
                  "definitions": {k: ROWS[k].definition for k in keys}, "uniform": uniform,
                  "summary": summary_json(summary), "latency_ms": latency,
                  "latency_protocol": latency_protocol(first.recipe.eval.latency_iters),
                  "runs": {k: {str(s): r for s, r in by_seed.items()} for k, by_seed in records.items()},
                  "machine": machine_record(first.device),
                  "row_seconds": sum(r.get("seconds", 0.0) for by_seed in records.values() for r in by_seed.values()),
                  "wall_seconds": round(time.perf_counter() - started, 1)}
        atomic_write_text(folder / "baselines.md", markdown_report({**result, "_summary": summary}))
        atomic_write_json(folder / "baselines.json", result)
    finally:
        lock.release()
    return folder, result

