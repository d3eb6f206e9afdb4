"""Measure stage-3 speed and generator latency of a recipe, side by side in one run.

Prints the ratios (fp32 eager against the fast path; teacher against student; the pruned student
against the uniform-width net of nearest MACs) and writes every figure as JSON (--out). With
--synthetic no data is read: random batches of the recipe's shapes. See gancompress/benchmark.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_device_arg, positive_int

NAME = "benchmark"
HELP = "stage-3 it/s and generator latency, fp32 eager vs the fast path, in one run"


def add_arguments(p) -> None:
    p.add_argument("recipe", help="the recipe YAML file")
    p.add_argument("--synthetic", action="store_true", help="random batches of the recipe's shapes")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1], help="stage-3 batch sizes")
    p.add_argument("--iters", type=positive_int, default=20, help="timed iterations per measurement")
    p.add_argument("--warmup", type=positive_int, default=5, help="untimed iterations first")
    p.add_argument("--compile", action="store_true", help="also time the fast paths with torch.compile")
    p.add_argument("--no-stage3", action="store_true", help="time the generators only")
    p.add_argument("--student", type=Path, default=None,
                   help="a pruned student generator file (runs/x/student/generator_G.pt) for the "
                        "pruned-vs-uniform comparison; default: prune the recipe's sparse model here")
    add_device_arg(p)
    p.add_argument("--out", type=Path, default=Path("benchmark.json"), help="JSON file of every figure")


def run(args) -> int:
    import logging

    from ..experiments.benchmark import run_benchmark
    from ..families.recipe import load_recipe
    from ..files.atomic import atomic_write_text

    logging.getLogger("gancompress.experiments.benchmark").setLevel(logging.INFO)
    recipe = load_recipe(args.recipe)
    result = run_benchmark(recipe, device=args.device, batch_sizes=args.batch_sizes, iters=args.iters,
                           warmup=args.warmup, synthetic=args.synthetic, use_compile=args.compile,
                           stage3=not args.no_stage3, student=args.student)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"figures: {args.out}")
    return 0
