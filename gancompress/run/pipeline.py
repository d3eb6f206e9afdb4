"""The stage order: sparse teacher -> prune -> distill -> export and report, each resumable.

This module holds the order (:func:`compress`) and the dry-run text (:func:`describe`); each
stage's own run is in :mod:`.stage_runs`, the report in :mod:`.report`.

A stage is done when its output file exists in the run folder (:class:`~gancompress.files.rundir.RunDir`
names them all); ``--resume`` skips finished stages and continues the unfinished one from its
latest checkpoint. Every recipe mistake is caught by :func:`~gancompress.run.preflight.preflight`
before stage 1 trains.

Under ``torchrun`` (``distributed``) every rank trains; rank 0 alone writes the run folder, prunes
and reports, while the others wait for it and then read what it wrote (the folder must be on a
filesystem every rank sees). Whether a stage is done is decided on rank 0's view of the folder,
so every rank takes the same path. The other ranks stop after stage 3.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config.sections import Recipe, dump_recipe
from ..families import get_family
from ..families.base import Family
from ..files.atomic import atomic_write_json
from ..files.rundir import RunDir
from ..files.runlock import RunLock
from ..system import distributed
from ..system.devices import pick_device
from . import latency_budget
from .evaluate import evaluate_run
from .preflight import preflight
from .record import prepare_run_dir
from .report import build_report
from .routes import discriminator_lines, route_lines

# Each stage's run lives in .stage_runs; the names are re-exported here, where they used to be.
from .stage_runs import (  # noqa: F401
    make_distill_stage,
    make_sparse_stage,
    pretrain_student,
    prune_generator,
    pruned_generator,
    run_distill,
    run_export,
    run_pretrain,
    run_prune,
    run_sparse,
    teacher_macs,
)

log = logging.getLogger(__name__)

STAGES = ("sparse", "prune", "distill", "report")


def describe(recipe: Recipe, device: str | None = None) -> str:
    """The dry-run text: resolved recipe, teacher MACs and params, and the budget of each generator
    (a latency budget: the untrained teacher's and the smallest net's latency, timed on ``device``)."""
    family = get_family(recipe.family)(recipe)
    lines = (["# resolved recipe", dump_recipe(recipe).rstrip(), ""] + route_lines(family, recipe)
             + discriminator_lines(recipe) + [""])
    for name in family.generator_names:
        m = teacher_macs(family, name)
        shape = tuple(family.example_input(name, 1).shape)
        lines.append(f"teacher {name} (ngf {recipe.model.ngf_teacher}) at input {shape}: "
                     f"{m.thop / 1e9:.4g} GMACs (thop), {m.complete / 1e9:.4g} GMACs complete, "
                     f"{m.params / 1e6:.4g} M params")
        if m.missed:
            lines.append("  missed by thop: " + ", ".join(f"{k} {v / 1e9:.4g} G" for k, v in m.missed.items()))
        budget = recipe.prune.budget_for(name)
        if budget.is_latency:
            lines += latency_budget.dry_run_lines(family, recipe, name, budget, pick_device(device))
            continue
        macs = budget.macs(m.complete)
        lines.append(f"budget {name}: {macs / 1e9:.4g} GMACs ({macs / m.complete:.1%} of the teacher, "
                     f"tolerance {recipe.prune.tolerance:.0%})")
    return "\n".join(lines)


def compress(recipe: Recipe, run_dir: str | Path | RunDir, *, resume: bool = False, device: str | None = None,
             until: str = "report") -> dict:
    """Run the pipeline on ``recipe`` into ``run_dir``; returns the report (or a stage summary).

    Args:
        recipe: the resolved recipe.
        run_dir: the run folder.
        resume: continue a run found in ``run_dir``.
        device: 'cpu', 'cuda' or None (CUDA when present).
        until: stop after 'sparse', 'prune', 'distill' or run everything ('report').

    Under a process group (``distributed.process_group``) every rank calls this alike; ranks
    other than 0 return ``{"stage": "distill", "rank": r}`` after stage 3, while rank 0 exports,
    reports and evaluates.
    """
    if until not in STAGES:
        raise ValueError(f"until: expected one of {', '.join(STAGES)}, got {until!r}")
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    dev = pick_device(device)
    if dev.type == "cuda" and recipe.train.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    family = get_family(recipe.family)(recipe)
    preflight(family, recipe, dev)
    lock = RunLock(run.root)
    distributed.on_main(lock.acquire)  # one process per run folder, released even on SIGKILL
    try:
        return _run_stages(family, recipe, run, dev, resume, until, device)
    finally:
        lock.release()


def _run_stages(family: Family, recipe: Recipe, run: RunDir, dev: torch.device, resume: bool, until: str,
                device: str | None) -> dict:
    prepare_run_dir(recipe, run, resume)
    sparse_state = run_sparse(family, recipe, run, dev, resume)
    if until == "sparse":
        return {"stage": "sparse", "path": str(run.sparse)}
    pruned = run_prune(family, recipe, run, sparse_state, dev)
    if until == "prune":
        return {"stage": "prune", "generators": {n: {"macs": e["macs"] / 1e9, "budget": e["budget"] / 1e9,
                                                     **({"latency": e["latency"]} if "latency" in e else {})}
                                                 for n, e in pruned.items()}}
    run_distill(family, recipe, run, dev, resume, sparse_state, pruned)
    if until == "distill":
        return {"stage": "distill"}
    if distributed.rank() != 0:
        return {"stage": "distill", "rank": distributed.rank()}
    exports = run_export(family, recipe, run)
    atomic_write_json(run.report_json, build_report(family, recipe, run, pruned, exports))
    return evaluate_run(run, device)
