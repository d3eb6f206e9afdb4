"""Does the distillation pay? GCC's student against the same pruned net trained without it, over seeds.

``gancompress baselines RECIPE`` runs one protocol (docs/results.md says what it found):

1. **One teacher** (:mod:`.teacher`): the family's generator at ``model.ngf_teacher``, trained once
   (``Recipe.teacher_epochs``) and cached under ``<output_dir>/teachers``; every row and seed
   distils from it, frozen, as from a model the user already has.
2. **Stages 1-2 once** (:mod:`.protocol`), in ``shared/``: the sparse model (the teacher fine-tuned
   with the L1 penalty, or a fresh narrower one when ``model.ngf_student`` is smaller: GCC's
   setting) and its pruning to the budget; the sparse model and the pruned net are scored before
   anything else trains them.
3. **Rows per seed** (:mod:`.rows`), the same seeds for every row: ``pruned-finetune`` (the pruned
   net, no teacher), ``kd`` (content and Gram terms against a plain D), ``gcc`` (the whole method:
   the selective D as well) and ``small-scratch`` (the uniform net of equal MACs, as many generator
   updates as the pruned rows, stage 1 included).
4. **Paired statistics** (:mod:`.stats`): for gcc - pruned-finetune, gcc - kd and others, the mean
   per-seed difference with a 95 % bootstrap interval, positive when the first row is better.

The result is data: ``baselines.json`` in the run's folder and, outside ``--quick``,
``docs/results/baselines_<family>.json`` with the Markdown tables rendered from it
(:func:`.report.render_markdown`). ``--quick`` runs the same rows on ``baselines.quick_seeds``
seeds with every stage ``baselines.quick_length`` as long, to check the machinery.

Layout of the run's folder (default ``<output_dir>/<name>-baselines``, ``-baselines-quick``)::

    recipe.yaml             the resolved recipe (quick lengths applied); --resume refuses another
    shared/                 stages 1-2 (a pipeline run folder) and shared.json (their figures)
    seed-<s>/<row>/         each row's run folder: recipe.yaml, checkpoints/, metrics.jsonl, student/, row.json
    teacher_eval.json       the teacher's metrics under each seed's evaluation
    cache/                  real images' features for FID/KID
    baselines.json, baselines.md

A row is done when its ``row.json`` exists; ``--resume`` reads done rows back and continues the
others from their checkpoints, the teacher and the shared stages included.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ...config import dump_recipe, recipe_to_dict
from ...errors import RecipeError
from ...families.recipe import load_recipe
from ...files.atomic import atomic_write_json, atomic_write_text
from ...files.runlock import RunLock
from ...run.record import recipe_changes
from ..provenance import commit_record, machine_record
from .protocol import Protocol
from .report import build_result, render_markdown
from .rows import RUN_ORDER, latency_protocol, measure_latencies, resolve_rows, run_row
from .teacher import evaluate_teacher


def _stored_settings(stored: Path) -> dict:
    """The settings of a run folder's recipe.yaml as this version resolves them: a key added since
    the run started takes its default, as it would have then, so it does not count as a change."""
    try:
        return recipe_to_dict(load_recipe(stored))
    except RecipeError:  # a key this version no longer knows: compare the file as written
        return yaml.safe_load(stored.read_text())  # our own file, written by dump_recipe


def _check_folder(folder: Path, recipe, resume: bool) -> None:
    """Refuse a folder that holds another run; on --resume, refuse a changed recipe."""
    stored = folder / "recipe.yaml"
    if stored.exists() and not resume:
        raise RecipeError(f"{folder}: already holds a baselines run; pass --resume to continue it, or --out to "
                          "start elsewhere")
    if stored.exists():
        changes = recipe_changes(_stored_settings(stored), recipe_to_dict(recipe))
        if changes:
            k, (a, b) = next(iter(changes.items()))
            raise RecipeError(f"--resume: {k} changed ({a!r} -> {b!r}) since {folder} was started; resume with the "
                              "same recipe, --set and --quick, or pass --out to start elsewhere")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(stored, dump_recipe(recipe))


def run_baselines(recipe_path: str, overrides: list[str], *, quick: bool = False, seeds: int | None = None,
                  rows: list[str] | None = None, out_dir: Path | None = None, resume: bool = False,
                  device: str | None = None, teachers: Path | None = None, results_dir: Path | None = None,
                  results_name: str | None = None, command: str = "") -> tuple[Path, dict]:
    """Run the protocol on ``recipe_path`` and write its result.

    Args:
        recipe_path: the recipe file; ``overrides`` its ``--set`` strings.
        quick: 2 seeds (``baselines.quick_seeds``), every stage ``baselines.quick_length`` as long.
        seeds: how many seeds instead of the recipe's (``recipe.seed``, +1, ...).
        rows: row keys (default all).
        out_dir: the run's folder (default ``<output_dir>/<name>-baselines[-quick]``).
        resume: continue a run found in the folder.
        device: 'cpu', 'cuda' or None.
        teachers: the teacher cache (default ``<output_dir>/teachers``).
        results_dir: where the full protocol's JSON and tables go (default ``docs/results``; never
            in quick mode).
        results_name: their file name without suffix (default ``baselines_<family>``).
        command: the command line, for the record.

    Returns:
        (the run's folder, the result written to baselines.json).
    """
    started = time.perf_counter()
    at_start = commit_record()  # the code that trains; a run can outlast a commit or two
    keys = resolve_rows(rows)
    user = load_recipe(recipe_path, overrides)
    folder = Path(out_dir) if out_dir is not None else Path(user.output_dir) / (
        f"{user.name}-baselines" + ("-quick" if quick else ""))
    lock = RunLock(folder)
    lock.acquire()  # one baselines process per folder
    try:
        p = Protocol(recipe_path, overrides, quick=quick, seeds=seeds, folder=folder,
                     teachers=Path(teachers) if teachers is not None else Path(user.output_dir) / "teachers",
                     device=device)
        _check_folder(folder, p.user, resume)
        teacher = p.teacher()
        shared = p.shared_stages()
        records: dict[str, dict[int, dict]] = {k: {} for k in keys}
        for seed in p.seeds:
            for key in [k for k in RUN_ORDER if k in keys]:
                records[key][seed] = run_row(p, key, seed)
        teacher_eval = _teacher_eval(p, teacher)
        first = p.recipe(p.seeds[0])
        family = p.family(first)
        files = {f"{key}@{s}": {n: g["file"] for n, g in r["generators"].items()}
                 for key, by_seed in records.items() for s, r in by_seed.items()}
        files["teacher"] = dict(teacher.generators)
        latency = measure_latencies(family, files, first.eval.latency_iters)
        shared = {**shared, "teacher_macs": teacher.record["macs"]}
        name = results_name or f"baselines_{first.family}"
        settings = {"recipe": str(recipe_path), "command": command, "quick": quick, "route": first.route,
                    "inherit_weights": first.prune.inherit_weights, "ngf_teacher": first.model.ngf_teacher,
                    "ngf_student": first.model.ngf_student, "teacher_epochs": teacher.record["epochs"],
                    "sparse_epochs": first.sparse_epochs if first.route != "pretrained-prune" else 0,
                    "distill_epochs": first.distill_epochs, "pretrain_epochs": first.train.pretrain_epochs,
                    "student_pretrain_epochs": first.distill.student_pretrain_epochs,
                    "batch_size": first.data.batch_size, "discriminator": first.discriminator.mode,
                    "tau": first.discriminator.tau, "alpha_lr": first.discriminator.alpha_lr,
                    "gamma_m": first.distill.gamma_m, "gamma_t": first.distill.gamma_t,
                    "balance": first.distill.balance,
                    "uniform_widths": {n: w for n, (w, _) in p.uniform_widths(first).items()},
                    "latency": latency_protocol(first.eval.latency_iters), "json_name": f"{name}.json",
                    "teacher_seconds": teacher.record["seconds"],
                    "row_seconds": round(sum(r.get("seconds", 0.0) for by_seed in records.values()
                                             for r in by_seed.values()), 1),
                    "wall_seconds": round(time.perf_counter() - started, 1),
                    "machine": machine_record(p.device), "commit": at_start}
        at_end = commit_record()
        if at_end != at_start:
            settings["commit_at_end"] = at_end
        result = build_result(family=first.family, names=family.generator_names, records=records,
                              teacher_eval=teacher_eval, shared=shared, latency=latency, settings=settings,
                              resamples=first.baselines.bootstrap_resamples)
        markdown = render_markdown(result)
        atomic_write_json(folder / "baselines.json", result)
        atomic_write_text(folder / "baselines.md", markdown)
        if not quick:
            target = Path(results_dir) if results_dir is not None else Path("docs") / "results"
            atomic_write_json(target / f"{name}.json", result)
            atomic_write_text(target / f"{name}.md", markdown)
    finally:
        lock.release()
    return folder, result


def _teacher_eval(p: Protocol, teacher) -> dict[int, dict]:
    """The teacher scored under every seed's evaluation (cached in the folder)."""
    path = p.folder / "teacher_eval.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    out = {}
    for seed in p.seeds:
        if str(seed) not in done:
            done[str(seed)] = evaluate_teacher(teacher, p.recipe(seed), p.device, p.cache)
            atomic_write_json(path, done)
        out[seed] = done[str(seed)]
    return out
