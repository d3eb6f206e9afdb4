"""Does compression pay? The student against the small nets people would train instead.

Every row runs once per seed (``recipe.seed``, +1, ...) with the recipe's data, batch size and
data order (both follow the seed) and stage 3's number of iterations and learning-rate schedule
(``distill.epochs_const`` + ``distill.epochs_decay`` epochs):

- ``small-scratch``: the family's generator at the uniform width ``ngf`` whose complete MACs are
  nearest the budget (:func:`~gancompress.experiments.benchmark.nearest_uniform_width`), initialised as GCC
  re-initialises its student (``family.reinit_generator``), trained from scratch with the family's
  GAN loss and task loss against a fresh plain discriminator of the family
  (:class:`~gancompress.run.stages.gan.GANStage`). No teacher.
- ``small-distill``: the same uniform net, from the same initial weights, as the student of GCC's
  stage 3 (:func:`~gancompress.run.pipeline.make_distill_stage`: the recipe's student discriminator,
  distillation terms and teacher); no pruning.
- ``pruned-finetune``: the pruned architecture of the seed's stage 2, from the initial weights
  the gcc row's student starts from (re-initialised, or the pruned weights with
  ``prune.inherit_weights``), trained like small-scratch: GAN loss and task loss against a plain
  discriminator, no teacher, no distillation.
- ``gcc``: the whole pipeline (:func:`~gancompress.run.pipeline.compress`).

Shared work. Stages 1 and 2 (and the teacher's optional pre-training, ``pretrain_T``) run once
per seed, in the gcc row's folder; pruned-finetune and small-distill read them from there.

Teachers. gcc and small-distill each train their own teacher online in stage 3, exactly as the
recipe says (``distill.teacher``: from scratch by default, or the stage-1 model): same recipe,
seed, data order and iterations. small-distill draws its teacher's initial weights from the same
random state as gcc's (stage 3's seed, advanced past the student's re-initialisation as in
:func:`~gancompress.run.pipeline.run_distill`), so both teachers start identical; they drift apart only
through the random draws of training (dropout, the student's discriminator) that interleave with
their students'. Sharing one trained teacher instead would change the method (GCC's teacher learns
alongside its student), so each row reports its own teacher, and the spread of the gcc rows'
teachers over the seeds says how much a teacher moves by chance. Rows without a teacher are
compared with the gcc rows' teachers. Reference rows come without training: the teacher itself and
whatever baseline the family's evaluation scores (SRGAN's ``bicubic``, pix2pix's ``real`` photos,
CycleGAN's untranslated ``input``).

Every row leaves rebuildable generator files (:func:`~gancompress.export.generator.save_generator`) in
``student/`` (and ``teacher/``) of its run folder. Latency is measured at the end, for every row
and seed in one go: eager fp32 forward passes at batch 1 on the CPU with the generator as shipped
(``family.for_export``), in :data:`~gancompress.experiments.baselines.rows.LATENCY_ROUNDS` interleaved rounds
of ``eval.latency_iters`` timed runs, the fastest round's median
(:func:`~gancompress.experiments.baselines.rows.latency_protocol`).

Layout of ``<output_dir>/<name>-baselines/``::

    recipe.yaml             the resolved recipe (first seed); --resume refuses another one
    seed-<s>/gcc/           the pipeline's run folder; also the seed's shared stages 1-2
    seed-<s>/<row>/         recipe.yaml, checkpoints/, metrics.jsonl, student/, teacher/, row.json
    baselines.json          every figure: per seed, mean ± std, verdicts, latency, machine, wall time
    baselines.md            the table

A row is done when its ``row.json`` exists; ``--resume`` reads done rows back and continues the
others from their checkpoints.

Modules: :mod:`.seed_run` holds one seed's recipe, folders and shared work; :mod:`.rows` defines
the rows, trains them and measures their figures and latency; :mod:`.report` turns the figures
into mean ± std, verdicts and the table; this module runs the whole thing (:func:`run_baselines`).
"""
from __future__ import annotations

import time
from pathlib import Path

import yaml

from ...config.sections import Recipe, dump_recipe, recipe_to_dict
from ...errors import RecipeError
from ...families.recipe import load_recipe
from ...files.atomic import atomic_write_json, atomic_write_text
from ...files.runlock import RunLock
from ...run.record import recipe_changes
from ..seeds import RULE, seed_schedule
from .report import machine_record, markdown_report, summarise, summary_json
from .rows import ROWS, RUN_ORDER, latency_protocol, measure_latencies, resolve_rows, run_row
from .seed_run import SeedRun


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
