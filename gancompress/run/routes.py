"""How a run gets its teacher: trained from scratch, or a model the user already has.

The route is a property of the recipe (:attr:`~gancompress.config.sections.Recipe.route`): 'scratch' (GCC:
stage 1 trains the sparse model, stage 3 the teacher alongside the student), 'pretrained-finetune'
(stage 1 fine-tunes the user's generators with the L1 penalty), 'pretrained-prune' (no stage 1:
the user's weights are pruned as they are) or 'pretrained-scratch' (stage 1 trains a fresh, narrower
sparse model; the user's generators only teach). This module reads the user's files into our nets
(:mod:`gancompress.pretrained` does the key mapping), says what a route runs and skips, and builds
the teacher stage 3 continues from.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import nn

from ..config.sections import Recipe
from ..families.base import Family
from ..method import coordination
from .stages import build_pair

log = logging.getLogger(__name__)

ROUTES = {
    "scratch": "stage 1 trains the sparse model from scratch, stage 2 prunes it, stage 3 distils",
    "pretrained-finetune": "stage 1 fine-tunes the pretrained generators with the L1 penalty for sparse.epochs, "
                           "stage 2 prunes them, stage 3 distils from the pretrained teacher",
    "pretrained-prune": "no stage 1: stage 2 prunes the pretrained generators by their own statistics, "
                        "stage 3 distils from the pretrained teacher",
    "pretrained-scratch": "stage 1 trains a fresh sparse model of width model.ngf_student, stage 2 prunes it, "
                          "stage 3 distils from the pretrained teacher (GCC's setting with a given teacher)",
}


def load_pretrained(family: Family, recipe: Recipe) -> dict | None:
    """The user's pretrained weights in our keys, or None without ``pretrained.generators``.

    Returns:
        {"gens": a ModuleDict state dict of all generators ('<name>.<key>'), "discs": name -> state
        dict of the discriminators given, "files": [{"role", "name", "file", "sha256", "layout"}]}.
    """
    from ..pretrained.loading import load_pretrained_discriminator, load_pretrained_generator

    p = recipe.pretrained
    if not p.generators:
        return None
    gens, discs, files = {}, {}, []
    for n, path in p.generators.items():
        state, info = load_pretrained_generator(path, family, n, recipe.model.ngf_teacher)
        gens.update({f"{n}.{k}": v for k, v in state.items()})
        files.append({"role": "generator", "name": n, "file": str(path), "sha256": info.sha256, "layout": info.layout})
    for n, path in (p.discriminators or {}).items():
        discs[n], info = load_pretrained_discriminator(path, family, n)
        files.append({"role": "discriminator", "name": n, "file": str(path), "sha256": info.sha256,
                      "layout": info.layout})
    return {"gens": gens, "discs": discs, "files": files}


def route_lines(family: Family, recipe: Recipe) -> list[str]:
    """What the recipe's route runs and skips, for ``--dry-run`` and the log."""
    lines = [f"route: {recipe.route}: {ROUTES[recipe.route]}"]
    teacher = {"scratch": "trained online from scratch alongside the student (GCC)",
               "continue": "trained on during stage 3", "frozen": "frozen during stage 3 (the cheapest)"}
    lines.append(f"teacher: {teacher[recipe.distill.teacher]}")
    if recipe.pretrained.generators:
        from ..pretrained.loading import check_pretrained
        lines += check_pretrained(family, recipe.pretrained.generators, recipe.pretrained.discriminators,
                                  ngf=recipe.model.ngf_teacher)
        missing = [n for n in family.generator_names if n not in (recipe.pretrained.discriminators or {})]
        if missing:
            lines.append(f"teacher discriminator {', '.join(missing)}: no pretrained.discriminators file, so "
                         + ("the one stage 1 trains against the fine-tuned generator is used"
                            if recipe.route == "pretrained-finetune" else "trained from scratch in stage 3"))
    return lines


def discriminator_lines(recipe: Recipe) -> list[str]:
    """When the selective discriminator can act, for ``--dry-run``: its retention factors start at
    ``alpha_init`` and move about their learning rate a step, so a run too short for any of them
    to reach tau trains a plain discriminator."""
    c = recipe.discriminator
    if "selective" not in c.mode:
        return []
    distance, epochs = c.alpha_init - c.tau, recipe.distill_epochs
    if c.alpha_lr == "auto":
        return [f"discriminator: alpha_lr auto: set when stage 3 starts so that a retention factor can move from "
                f"alpha_init {c.alpha_init:g} to tau {c.tau:g} within alpha_reach {c.alpha_reach:g} of stage 3's "
                f"iterations (GCC's {coordination.PAPER_ALPHA_LR:g} where that is enough)"]
    need = math.ceil(distance / float(c.alpha_lr))
    return [f"discriminator: alpha_lr {float(c.alpha_lr):g}: a retention factor needs at least {need} iterations to "
            f"move from alpha_init {c.alpha_init:g} to tau {c.tau:g}; stage 3's {epochs} epochs must hold at least "
            f"{math.ceil(need / max(1, epochs))} iterations each (training items / batch size) or the selective "
            "discriminator never switches a channel off; alpha_lr: auto fits the rate to the run"]


def stage3_teacher(family: Family, recipe: Recipe, device: torch.device,
                   sparse_state: dict) -> tuple[tuple[nn.ModuleDict, nn.ModuleDict] | None, bool]:
    """The teacher stage 3 continues from, and whether its discriminator still needs training.

    ``distill.teacher: scratch`` builds a fresh teacher in the stage (None here). Otherwise the
    teacher is the user's pretrained generators (their original weights, not the fine-tuned
    sparse model), or the stage-1 model; its discriminator comes from ``pretrained.discriminators``,
    else from stage 1 when stage 1 trained one against it, else it starts untrained (logged) and
    is trained in stage 3 even when the teacher generator is frozen.
    """
    if recipe.distill.teacher == "scratch":
        return None, False
    gens, discs = build_pair(family, recipe.teacher_ngf, recipe.train, device)
    pre = load_pretrained(family, recipe)
    gens.load_state_dict(pre["gens"] if pre is not None else sparse_state["gens"])
    discs.load_state_dict(sparse_state["discs"])
    fresh = False
    if pre is not None:
        for n in family.generator_names:
            if n in pre["discs"]:
                discs[n].load_state_dict(pre["discs"][n])
            elif recipe.route != "pretrained-finetune":  # stage 1's D judged another generator, or none
                fresh = True
                log.info("teacher discriminator %s: no pretrained.discriminators file, so it is trained from scratch "
                         "in stage 3", n)
    return (gens, discs), fresh
