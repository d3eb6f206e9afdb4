"""One baselines run's recipes, folders, teacher and shared stages.

The recipe a row of seed ``s`` runs is the user's recipe (with ``--set``), shortened in quick mode
(every stage ``baselines.quick_length`` as long), with the shared teacher as its frozen
pretrained model and ``seed: s``. The sparse model is the teacher itself, fine-tuned with the L1
penalty (``pretrained.sparse: finetune``) when ``model.ngf_student`` equals ``model.ngf_teacher``,
and a fresh, narrower model (``pretrained.sparse: scratch``, GCC's setting) when it is smaller.
Stages 1-2 run once, in ``shared/``, with the first seed; every seed's distilling rows start stage 3
from a copy of their outputs.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import torch
from torch import nn

from ...config import Recipe, recipe_to_dict
from ...families import get_family
from ...families.recipe import load_recipe, recipe_from_dict
from ...files.atomic import atomic_write_json
from ...files.checkpoint import safe_load
from ...files.rundir import RunDir
from ...metrics.macs import count_macs
from ...metrics.registry import evaluate_generators
from ...run import pipeline, stage_runs
from ...run.record import prepare_run_dir
from ...system.devices import pick_device
from ..benchmark import nearest_uniform_width
from .teacher import Teacher, ensure_teacher

log = logging.getLogger(__name__)

SHARED_RECORD = "shared.json"


def with_keys(recipe: Recipe, keys: dict[str, object], where: str) -> Recipe:
    """``recipe`` with dotted ``keys`` set to plain values, checked like a recipe file."""
    raw = recipe_to_dict(recipe)
    for dotted, value in keys.items():
        *path, leaf = dotted.split(".")
        node = raw
        for part in path:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return recipe_from_dict(raw, where)


def quick_keys(recipe: Recipe) -> dict[str, object]:
    """Every stage's epochs times ``baselines.quick_length`` (at least one where there were any)."""
    f = recipe.baselines.quick_length

    def scaled(epochs: int, least: int = 1) -> int:
        return max(least, math.ceil(epochs * f)) if epochs else 0

    d = recipe.distill
    keys = {"baselines.teacher_epochs": scaled(recipe.teacher_epochs), "sparse.epochs": scaled(recipe.sparse_epochs),
            "distill.epochs_const": scaled(d.epochs_const), "distill.epochs_decay": scaled(d.epochs_decay, 0),
            "train.pretrain_epochs": scaled(recipe.train.pretrain_epochs),
            "distill.student_pretrain_epochs": scaled(d.student_pretrain_epochs)}
    if d.lr_step_every:
        keys["distill.lr_step_every"] = scaled(d.lr_step_every)
    return keys


class Protocol:
    """A baselines run of one recipe.

    Args:
        recipe_path: the recipe file; ``overrides`` its ``--set`` strings.
        quick: shorten every stage and use ``baselines.quick_seeds`` seeds.
        seeds: how many seeds (None: ``baselines.seeds`` or ``quick_seeds``).
        folder: the run's folder; ``teachers``: the teacher cache.
        device: 'cpu', 'cuda' or None.
    """

    def __init__(self, recipe_path: str | Path, overrides: list[str], *, quick: bool, seeds: int | None,
                 folder: Path, teachers: Path, device: str | None):
        self.where = str(recipe_path)
        user = load_recipe(recipe_path, overrides)
        self.quick = quick
        self.user = with_keys(user, quick_keys(user), self.where) if quick else user
        count = seeds or (user.baselines.quick_seeds if quick else user.baselines.seeds)
        self.seeds = [self.user.seed + k for k in range(count)]
        self.folder, self.teachers = Path(folder), Path(teachers)
        self.device_name, self.device = device, pick_device(device)
        self.cache = self.folder / "cache"
        self._teacher: Teacher | None = None
        self._widths: dict[str, tuple[int, int]] | None = None

    # --- recipes ------------------------------------------------------------------------------
    @property
    def sparse_route(self) -> str:
        """'finetune' (the sparse model is the teacher, fine-tuned) or 'scratch' (a narrower one)."""
        m = self.user.model
        return "scratch" if m.ngf_student != m.ngf_teacher else self.user.pretrained.sparse

    def teacher(self) -> Teacher:
        if self._teacher is None:
            self._teacher = ensure_teacher(self.user, self.teachers, self.device, self.cache)
        return self._teacher

    def recipe(self, seed: int, extra: dict[str, object] | None = None) -> Recipe:
        """The recipe every row of ``seed`` runs (``extra``: a row's own keys)."""
        keys = {**self.teacher().overrides(), "pretrained.sparse": self.sparse_route, "seed": seed, **(extra or {})}
        return with_keys(self.user, keys, self.where)

    def family(self, recipe: Recipe):
        return get_family(recipe.family)(recipe)

    # --- stages 1-2, once --------------------------------------------------------------------
    @property
    def shared(self) -> RunDir:
        return RunDir(self.folder / "shared")

    def shared_stages(self) -> dict:
        """Stages 1-2 from the teacher, with the first seed (run once), and the metrics of the
        sparse model before pruning and of the pruned net before any fine-tuning."""
        record_path = self.shared.root / SHARED_RECORD
        if record_path.is_file():
            return json.loads(record_path.read_text())
        recipe = self.recipe(self.seeds[0])
        pipeline.compress(recipe, self.shared, resume=self.shared.recipe.exists(), device=self.device_name,
                          until="prune")
        family = self.family(recipe)
        sparse_state = safe_load(self.shared.sparse)
        pruned = safe_load(self.shared.pruned)
        names = family.generator_names
        sparse = nn.ModuleDict({n: family.build_generator(n, recipe.model.ngf_student) for n in names})
        sparse.load_state_dict(sparse_state["gens"])
        nets = {"sparse": {n: sparse[n].eval().to(self.device) for n in names},
                "pruned": {n: stage_runs.pruned_generator(family, recipe, n, pruned[n], True).eval().to(self.device)
                           for n in names}}
        with torch.no_grad():
            result = evaluate_generators(family, nets, self.device, cache_dir=self.cache)
        record = {"sparse_epochs": recipe.sparse_epochs, "route": recipe.route,
                  "metrics": result["metrics"],
                  "macs": {n: {role: count_macs(nets[role][n], family.example_input(n, 1)).as_dict()
                               for role in nets} for n in names},
                  "budget_gmacs": {n: pruned[n]["budget"] / 1e9 for n in names}}
        atomic_write_json(record_path, record)
        return record

    def start_from_shared(self, recipe: Recipe, run: RunDir) -> None:
        """A distilling row's folder: its recipe, then stages 1-2's outputs copied from ``shared/``."""
        prepare_run_dir(recipe, run, resume=run.recipe.exists())
        for src in [self.shared.sparse, self.shared.pruned, *sorted(self.shared.root.glob("pretrain/*.pt"))]:
            dst = run.root / src.relative_to(self.shared.root)
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)

    # --- the uniform nets ------------------------------------------------------------------------
    def uniform_widths(self, recipe: Recipe) -> dict[str, tuple[int, int]]:
        """Generator name -> (the uniform width whose complete MACs are nearest its budget, those MACs).

        A latency budget has its MACs once stage 2 has searched them: those of the shared pruned net."""
        if self._widths is None:
            family = self.family(recipe)
            widest = max(recipe.model.ngf_teacher, recipe.model.ngf_student)
            self._widths = {}
            for n in family.generator_names:
                budget = recipe.prune.budget_for(n)
                macs = (self.shared_stages()["budget_gmacs"][n] * 1e9 if budget.is_latency
                        else budget.macs(stage_runs.teacher_macs(family, n).complete))
                self._widths[n] = nearest_uniform_width(family, n, int(macs), widest)
        return self._widths
