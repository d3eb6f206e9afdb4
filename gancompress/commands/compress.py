"""Run every stage of a recipe: sparse model, prune, distil, export and report.

The run folder (--run-dir, default <output_dir>/<name>) receives every stage's output and
report.json / report.md; a folder that already holds a run is continued with --resume, never
overwritten. --dry-run prints the resolved recipe, its route, the teacher's MACs and the budget
without touching data; for a latency budget it times the untrained teacher and the smallest
prunable net on the budget's runtime and says whether the target lies between. Under torchrun every process trains data-parallel and rank 0 prints the
results: torchrun --nproc_per_node=N --no-python gancompress compress RECIPE.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_recipe_args, add_run_args

NAME = "compress"
HELP = "run every stage of a recipe: sparse model, prune, distil, export, report"
EXAMPLE = "gancompress compress recipes/demo/pix2pix.yaml --set distill.gamma_t=1e3 --run-dir runs/try1"


def add_arguments(p) -> None:
    add_recipe_args(p)
    add_run_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved recipe, the teacher's MACs and the budget (a latency budget: whether "
                        "it is reachable); touch no data")


def run(args) -> int:
    return run_until(args, "report")


def run_until(args, until: str) -> int:
    """Run the recipe's stages up to ``until`` ('prune' or 'report') and print the results."""
    from ..families.recipe import load_recipe
    from ..run.pipeline import compress, describe
    from ..system import distributed

    launch = distributed.launch_env()
    leader = launch is None or launch.rank == 0  # only rank 0 prints results
    # Recipe errors come before the process group, alike on every rank.
    recipe = load_recipe(args.recipe, args.overrides)
    if getattr(args, "dry_run", False):
        if leader:
            print(describe(recipe, args.device))
        return 0
    run_dir = args.run_dir if args.run_dir is not None else Path(recipe.output_dir) / recipe.name
    with distributed.process_group(args.device):
        result = compress(recipe, run_dir, resume=args.resume, device=args.device, until=until)
    if not leader:
        return 0
    if until == "report":
        for name, g in result["generators"].items():
            lat = g.get("latency_budget")
            budget = (f"latency budget {lat['target_ms']:g} ms on {lat['runtime']} at batch {lat['batch']}: "
                      f"measured {lat['measured_ms']:.3g} ms" if lat else f"budget {g['budget']:.4g}")
            print(f"{name}: teacher {g['teacher']['macs']:.4g} GMACs -> student {g['student']['macs']:.4g} GMACs "
                  f"(complete {g['student']['macs_complete']:.4g}, {budget}), "
                  f"params {g['teacher']['params']:.4g} M -> {g['student']['params']:.4g} M")
        print(f"report: {Path(run_dir) / 'report.json'}")
    else:
        print(json.dumps(result, indent=2))
    return 0
