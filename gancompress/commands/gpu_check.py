"""Run every CUDA path in one prepared check and print one table (see gancompress/experiments/gpu_check/).

Rows: FastGenerator parity (CUDA graph, compile), stage-3 speed at batch 1 and 16 (fp32 eager vs
bf16 + channels_last), generator latency at batch 1/16/64, pruned vs uniform-width students, every
demo recipe end to end in bf16 + channels_last and in fp32 (student metric vs CPU runs), the
Cityscapes recipe's projected full run, torchrun on NCCL and gloo, and train.compile. Each row
passes with its figure, fails with a one-line reason or is skipped with why; every figure goes to
the JSON file (--out), written after each row. On the CPU (--device cpu) it runs the rows that
make sense there; --quick is the form CI runs, e.g.
gancompress gpu-check --device cpu --quick --rows 'demo/sagan/*' 'parity/*'. The command exits
with status 1 when a row fails.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device_arg, positive_int

NAME = "gpu-check"
HELP = "run every CUDA path (bf16, channels_last, CUDA graphs, compile, NCCL) in one check; one table + JSON"
EXAMPLE = "gancompress gpu-check --device cuda --out gpu_check.json --work /tmp/gc"


def add_arguments(p) -> None:
    add_device_arg(p)
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), metavar="FILE",
                   help="the JSON file of every row and figure to write (default gpu_check.json)")
    p.add_argument("--work", type=Path, default=None, metavar="DIR",
                   help="directory for the demo data, runs and logs (default: a new temporary directory, kept)")
    p.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                   help="skip the rows that would not finish within this many seconds (default 450 on CUDA; "
                        "on the CPU, where every row's limit is 10x, 4500)")
    p.add_argument("--rows", nargs="+", default=None, metavar="PATTERN",
                   help="only the rows whose name matches a shell pattern, e.g. 'demo/*' (see --list)")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="rows run side by side after the timings, at least 1 (default 4 on CUDA, 1 on the CPU)")
    p.add_argument("--quick", action="store_true", help="a few iterations per row (the CI form; metrics not compared)")
    p.add_argument("--recipes", type=Path, default=None, metavar="DIR",
                   help="directory holding pix2pix_cityscapes.yaml and demo/ (default: the checkout's recipes/)")
    p.add_argument("--demo-seed", type=int, default=0, metavar="SEED",
                   help="seed of the demo rows (the CPU reference ranges were made with 0, 1 and 2)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # a row's in-process work, in its own process
    p.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)


def run(args) -> int:
    from ..experiments import gpu_check

    if args.worker is not None:
        gpu_check.run_worker(args.worker, args.worker_args, args.device, args.out)
        return 0
    if args.list:
        for row in gpu_check.select_rows(gpu_check.all_rows(), args.rows):
            print(f"{row.name:28}  {row.what}")
        return 0
    records, table = gpu_check.run_check(device=args.device, out=args.out, work=args.work,
                                         recipes=args.recipes or gpu_check.DEFAULT_RECIPES, budget_s=args.budget_s,
                                         patterns=args.rows, quick=args.quick, demo_seed=args.demo_seed,
                                         jobs=args.jobs)
    print(table)
    print(f"figures: {args.out}")
    return 1 if any(r["status"] == "fail" for r in records) else 0
