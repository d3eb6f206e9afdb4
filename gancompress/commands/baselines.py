"""Compare the compressed student with the small nets one would train instead, over seeds.

Rows (gancompress/baselines/rows.py): small-scratch (the uniform-width net nearest the MACs budget,
trained from scratch), small-distill (the same net as GCC's stage-3 student), pruned-finetune (the
pruned architecture trained without distillation), gcc (the whole pipeline); plus the teacher and
the family's evaluation baselines (SRGAN: bicubic). Each runs for seeds recipe.seed, +1, ... with
stage 3's data and iterations; stages 1-2 run once per seed. The table (mean ± std, GMACs, params,
CPU latency, speed-up, verdicts) goes to <output_dir>/<name>-baselines/baselines.md and is printed.
"""
from __future__ import annotations

from pathlib import Path

from .common import add_device_arg, add_recipe_args, positive_int

NAME = "baselines"
HELP = "compare the student with small nets trained directly (from scratch, distilled, pruned) over seeds"


def add_arguments(p) -> None:
    add_recipe_args(p)
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="repeat every row with seeds recipe.seed, +1, ..., +N-1 (default 1)")
    p.add_argument("--rows", nargs="+", default=None, metavar="KEY",
                   help="rows to run (default: all: small-scratch small-distill pruned-finetune gcc)")
    p.add_argument("--out", type=Path, default=None, help="baselines folder (default <output_dir>/<name>-baselines)")
    p.add_argument("--resume", action="store_true", help="continue the run found in the folder")
    add_device_arg(p)


def run(args) -> int:
    from ..experiments.baselines import run_baselines

    folder, _ = run_baselines(args.recipe, args.overrides, seeds=args.seeds, rows=args.rows, out_dir=args.out,
                              resume=args.resume, device=args.device)
    print((folder / "baselines.md").read_text(), end="")
    print(f"table: {folder / 'baselines.md'}")
    return 0
