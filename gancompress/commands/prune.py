"""Run a recipe's stages up to pruning and print the pruned MACs of every generator.

Stage 1 trains (or fine-tunes) the sparse model and stage 2 prunes it to the budget; the run
folder then holds sparse/model.pt and pruned/pruned.pt. Use it to check that a budget is
reachable and what it leaves before paying for distillation: gancompress compress with the same
recipe and --resume skips the finished stages and goes on from there.
"""
from __future__ import annotations

from . import compress

NAME = "prune"
HELP = "run the stages up to pruning (sparse model, prune) and print the pruned MACs"
EXAMPLE = "gancompress prune recipes/demo/pix2pix.yaml --set prune.budget=25%"


def add_arguments(p) -> None:
    compress.add_arguments(p)


def run(args) -> int:
    return compress.run_until(args, "prune")
