"""What a run folder records about how its weights were made.

``recipe.yaml`` is the resolved recipe the weights were trained with; ``history.jsonl`` has one
line per start or resume (time, PID, command line, the settings a resume changed), and the recipe a
resume replaced is kept as ``history/recipe-<n>.yaml``. A resume that would change a setting
which shaped weights already written (:data:`STRUCTURAL`) is refused: the files would no longer
match the recipe that claims to describe them.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from ..config.sections import Recipe, dump_recipe, recipe_to_dict
from ..errors import GanCompressError, WriteError
from ..files.atomic import atomic_write_text, describe_oserror, remove_stale_tmp
from ..files.rundir import RunDir
from ..system import distributed

log = logging.getLogger(__name__)


def stage_done(path: Path) -> bool:
    """Whether ``path`` (a stage's output) exists, as rank 0 sees it: every rank decides alike."""
    return distributed.broadcast_object(path.exists())


#: Settings that shape the weights a run holds: a resume may not change them once any stage has
#: left a checkpoint or an output (the files would no longer match the recipe).
STRUCTURAL = ("family", "model.", "sparse.method", "prune.", "discriminator.mode", "discriminator.dmd.placement",
              "discriminator.dmd.heads", "discriminator.glead.width", "distill.teacher", "distill.d_layers",
              "distill.student_pretrain_epochs", "pretrained.")


def recipe_changes(old: dict, new: dict, prefix: str = "") -> dict[str, tuple]:
    """Key path -> (old value, new value) of every setting that differs between two recipe dicts."""
    out = {}
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(recipe_changes(a, b, f"{path}."))
        elif a != b:
            out[path] = (a, b)
    return out


def prepare_run_dir(recipe: Recipe, run: RunDir, resume: bool) -> None:
    """Create the run folder and write the resolved recipe; refuse to overwrite a run.

    A resume with changed settings is recorded, never silent: the changes go to ``history.jsonl``
    and the previous recipe is kept as ``history/recipe-<n>.yaml``; a change to a setting that
    shaped the weights already written (:data:`STRUCTURAL`) is refused. Under a process group rank
    0 writes; every rank raises the same errors.
    """
    if stage_done(run.recipe) and not resume:
        raise GanCompressError(f"{run}: already holds a run; pass --resume to continue it, or --run-dir "
                               "to start a new one elsewhere")
    distributed.on_main(_write_run_dir, recipe, run, resume)


def _write_run_dir(recipe: Recipe, run: RunDir, resume: bool) -> None:
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        probe = run.root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise GanCompressError(f"{run}: cannot write the run folder ({exc.strerror}); choose a writable "
                               "--run-dir") from None
    stale = remove_stale_tmp(run.root)
    if stale:
        log.info("removed %d temporary file(s) an interrupted run left in %s", stale, run)
    changes = {}
    if run.recipe.exists():
        previous = yaml.safe_load(run.recipe.read_text())  # our own file, written by dump_recipe
        changes = recipe_changes(previous, recipe_to_dict(recipe))
        fixed = [k for k in changes if k.startswith(STRUCTURAL)]
        if fixed and _has_outputs(run):
            k = fixed[0]
            raise GanCompressError(f"--resume: {k} changed ({changes[k][0]!r} -> {changes[k][1]!r}) but the weights "
                                   f"in {run} were made with the old value; resume with the run's own recipe "
                                   f"({run.recipe}) or start a new run with --run-dir")
        if changes:
            log.warning("resuming %s with changed settings (recorded in %s): %s", run, run.history,
                        ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()))
            atomic_write_text(run.archived_recipe(len(run.archived_recipes()) + 1), run.recipe.read_text())
    record = {"time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "pid": os.getpid(),
              "argv": sys.argv, "resume": resume, "changed": {k: list(v) for k, v in changes.items()}}
    _append_line(run.history, json.dumps(record, default=str))
    atomic_write_text(run.recipe, dump_recipe(recipe))


def _has_outputs(run: RunDir) -> bool:
    """Whether any stage left a checkpoint or an output in the run folder."""
    return any(run.checkpoints.glob("*.pt")) or any(p.exists() for p in (run.sparse, run.pruned)) \
        or any((run.root / role).glob("*.pt") for role in ("student", "teacher"))


def _append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as exc:
        raise WriteError(f"{path}: could not be written ({describe_oserror(exc)}); make the run folder writable") \
            from None
