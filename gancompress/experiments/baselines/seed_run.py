"""One seed of a baselines run: its recipe, family, device and folders, and the work its rows share
(stages 1-2 in the gcc row's folder, the budgets and the uniform-width nets)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...config.sections import Recipe
from ...families import get_family
from ...families.recipe import load_recipe
from ...files.checkpoint import safe_load
from ...files.rundir import RunDir
from ...run import pipeline
from ...system.devices import pick_device
from ..benchmark import nearest_uniform_width


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
