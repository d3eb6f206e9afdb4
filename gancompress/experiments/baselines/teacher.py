"""The baselines' one teacher per recipe: trained once, cached, taught from by every row and seed.

The teacher is the family's generator at ``model.ngf_teacher`` with its discriminator, after the
family's pre-training (``train.pretrain_epochs``, SRGAN's MSE SRResNet) trained for
``Recipe.teacher_epochs`` epochs with the family's GAN and task losses (constant learning rate for
half the epochs, then linearly to zero), from ``seed``. It is written where a user's trained model
would come from: rebuildable generator files and plain discriminator state dicts, which the rows
name in ``pretrained.generators`` and ``pretrained.discriminators``.

The cache folder's name holds a digest of everything that shapes the teacher's weights (family,
model, data, training settings, epochs, seed), so a rerun, a resumed run and a run with other
stage-3 settings find it again, and a change that would train another teacher does not.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...config import Recipe, recipe_to_dict
from ...export.generator import save_generator
from ...families import get_family
from ...files.atomic import atomic_write_json
from ...files.checkpoint import atomic_save
from ...files.rundir import RunDir
from ...files.runlock import RunLock
from ...metrics.macs import count_macs
from ...metrics.registry import evaluate_generators
from ...run import stage_runs
from ...run.record import prepare_run_dir
from ...run.stages.gan import GANStage
from ...run.train import train_stage
from ...system.devices import seed_everything
from ...system.finite import check_finite

log = logging.getLogger(__name__)

TEACHER_RECORD = "teacher.json"
#: Training settings that change how often things are written, not the weights.
_NOT_SHAPING = ("log_every", "checkpoint_every", "keep_checkpoints", "samples_per_epoch")


@dataclass(frozen=True)
class Teacher:
    """A trained baselines teacher: its files and what it was measured at.

    Attributes:
        folder: the cache folder.
        generators: generator name -> rebuildable generator file.
        discriminators: generator name -> the discriminator's state-dict file.
        record: ``teacher.json``: settings, MACs, seconds.
    """

    folder: Path
    generators: dict[str, str]
    discriminators: dict[str, str]
    record: dict

    def overrides(self) -> dict[str, object]:
        """The recipe keys that make a run's stage 3 distil from this teacher, frozen."""
        return {"pretrained.generators": dict(self.generators), "pretrained.discriminators": dict(self.discriminators),
                "distill.teacher": "frozen"}


def teacher_key(recipe: Recipe) -> str:
    """A digest of everything that shapes the teacher's weights (12 hex digits): the recipe's
    settings as :func:`teacher_recipe` normalises them (the student's width and stage 3's settings
    do not count)."""
    plain = recipe_to_dict(teacher_recipe(recipe))
    train = {k: v for k, v in plain["train"].items() if k not in _NOT_SHAPING}
    shaping = {"format": 1, "family": plain["family"], "model": plain["model"], "data": plain["data"], "train": train,
               "teacher_epochs": recipe.teacher_epochs, "seed": recipe.seed}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]


def teacher_recipe(recipe: Recipe) -> Recipe:
    """The recipe the teacher's folder records: stage 3's schedule is the teacher's (its epochs,
    half constant, half decaying), no pretrained files, and the teacher's width for both widths."""
    e = recipe.teacher_epochs
    distill = replace(recipe.distill, epochs_const=e - e // 2, epochs_decay=e // 2, lr_schedule="linear",
                      student_pretrain_epochs=0)
    model = replace(recipe.model, ngf_student=recipe.model.ngf_teacher)
    return replace(recipe, distill=distill, model=model, pretrained=replace(recipe.pretrained, generators=None,
                                                                             discriminators=None))


def ensure_teacher(recipe: Recipe, root: Path, device: torch.device, cache_dir: Path | None = None) -> Teacher:
    """The teacher of ``recipe`` from the cache under ``root``, trained there first if needed.

    Training resumes from the folder's checkpoints after an interruption. One process at a time
    trains a given teacher (the folder's lock).
    """
    folder = Path(root) / f"{recipe.family}-{recipe.name}-{teacher_key(recipe)}"
    run = RunDir(folder)
    record_path = folder / TEACHER_RECORD
    if record_path.is_file():
        return _read(folder, record_path)
    lock = RunLock(folder)
    lock.acquire()
    try:
        if record_path.is_file():  # trained by another process meanwhile
            return _read(folder, record_path)
        _train(teacher_recipe(recipe), run, device, cache_dir)
    finally:
        lock.release()
    return _read(folder, record_path)


def _read(folder: Path, record_path: Path) -> Teacher:
    record = json.loads(record_path.read_text())
    return Teacher(folder, record["generators"], record["discriminators"], record)


def _train(recipe: Recipe, run: RunDir, device: torch.device, cache_dir: Path | None) -> None:
    family = get_family(recipe.family)(recipe)
    names = family.generator_names
    ngf = recipe.model.ngf_teacher
    started = time.perf_counter()
    log.info("baselines teacher: training %s (ngf %d) for %d epochs in %s", recipe.family, ngf, recipe.teacher_epochs,
             run)
    prepare_run_dir(recipe, run, resume=run.recipe.exists())
    pre = stage_runs.run_pretrain(family, recipe, run, device, True, ngf, "pretrain_T")
    seed_everything(recipe.seed)
    gens = {n: family.build_generator(n, ngf) for n in names}
    if pre is not None:
        torch.nn.ModuleDict(gens).load_state_dict(pre)
    stage = GANStage(family, recipe.train, device, gens, distill=recipe.distill, name="teacher")
    train_stage(stage, family, recipe, run, device, resume=True)
    files, d_files = {}, {}
    for n in names:
        check_finite(stage.gens[n], f"baselines teacher generator {n}")
        files[n] = str(save_generator(run.generator("teacher", n), stage.gens[n], recipe, n, ngf))
        d_path = run.root / "teacher" / f"discriminator_{n}.pth"
        atomic_save({k: v.detach().cpu() for k, v in stage.discs[n].state_dict().items()}, d_path)
        d_files[n] = str(d_path)
    gens_eval = {n: stage.gens[n].eval() for n in names}
    macs = {n: count_macs(gens_eval[n], family.example_input(n, 1)).as_dict() for n in names}
    atomic_write_json(run.root / TEACHER_RECORD, {
        "format": "gancompress-baselines-teacher", "family": recipe.family,
        "ngf": ngf, "epochs": recipe.teacher_epochs, "pretrain_epochs": recipe.train.pretrain_epochs,
        "seed": recipe.seed, "generators": files, "discriminators": d_files, "macs": macs,
        "seconds": round(time.perf_counter() - started, 1)})


def evaluate_teacher(teacher: Teacher, recipe: Recipe, device: torch.device, cache_dir: Path | None) -> dict:
    """The teacher's metrics under ``recipe``'s evaluation (its seed's draws where the family draws
    codes): ``{generator: {key: value}}``, plus the family's references under ``"references"``."""
    from ...export.generator import load_generator

    family = get_family(recipe.family)(recipe)
    gens = {n: load_generator(p)[0].to(device) for n, p in teacher.generators.items()}
    result = evaluate_generators(family, {"teacher": gens}, device, cache_dir=cache_dir)
    return {n: roles for n, roles in result["metrics"].items()}
