"""Stage 3 on a shared CPU: one run alone and two at once, with torch's old thread defaults and with
the settings gancompress now chooses (the cores as threads, fewer while another process keeps them
busy: gancompress/system/coreshare.py), in one run.

Every run is a child process started from a clean environment (no OMP_*/MKL_* variables), the new
ones with exactly the variables the entry point would set. Prints the table of wall times and the
ratios against their targets (new alone no slower than old alone, within 5 %; each of two new runs
at once within 2.3x of its time alone) and writes every figure as JSON (--out). Run it on an
otherwise idle machine. With --threads N the new runs use N threads (the default: the cores).
See gancompress/experiments/bench_cpu.py and gancompress/system/threads.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_recipe_args, positive_int

NAME = "bench-cpu"
HELP = "stage-3 time alone and two at once, old vs new CPU thread settings, in one run"
EXAMPLE = "gancompress bench-cpu recipes/demo/pix2pix.yaml --iters 20 --repeats 3 --out bench_cpu.json"


def add_arguments(p) -> None:
    add_recipe_args(p)
    p.add_argument("--iters", type=positive_int, default=20, metavar="N",
                   help="timed stage-3 iterations per run (default 20)")
    p.add_argument("--warmup", type=positive_int, default=3, metavar="N", help="untimed iterations first (default 3)")
    p.add_argument("--repeats", type=positive_int, default=1, metavar="N",
                   help="repeat the four measurements; medians compared (default 1)")
    p.add_argument("--timeout", type=positive_int, default=3600, metavar="SECONDS",
                   help="seconds one measurement may take (default 3600)")
    p.add_argument("--out", type=Path, default=Path("bench_cpu.json"), metavar="FILE",
                   help="the JSON file of every figure to write (default bench_cpu.json)")


def run(args) -> int:
    from ..experiments.bench_cpu import format_table, run_contention
    from ..files.atomic import atomic_write_text

    result = run_contention(args.recipe, args.overrides, iters=args.iters, warmup=args.warmup,
                            repeats=args.repeats, threads=getattr(args, "threads", None), timeout=args.timeout,
                            progress=print)
    print(format_table(result))
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"figures: {args.out}")
    return 0
