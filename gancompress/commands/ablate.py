"""Run one recipe with each student discriminator and write the ablation table.

Variants (gancompress/ablation.py): none, plain, selective-local, gcc, dmd, selective+dmd, glead.
Stages 1 and 2 run once and are shared; the table goes to <output_dir>/<name>-ablation/ablation.md
(and is printed).
"""
from __future__ import annotations

from pathlib import Path

from .common import add_device_arg, add_recipe_args

NAME = "ablate"
HELP = "run a recipe once per student-discriminator variant and tabulate the results"


def add_arguments(p) -> None:
    add_recipe_args(p)
    p.add_argument("--variants", nargs="+", default=None, metavar="KEY",
                   help="variants to run (default: all, in the order above)")
    p.add_argument("--out", type=Path, default=None, help="ablation folder (default <output_dir>/<name>-ablation)")
    p.add_argument("--resume", action="store_true", help="continue the variants found in the folder")
    add_device_arg(p)


def run(args) -> int:
    from ..ablation import run_ablation

    folder, _ = run_ablation(args.recipe, args.overrides, args.variants, args.out, args.resume, args.device)
    print((folder / "ablation.md").read_text(), end="")
    print(f"table: {folder / 'ablation.md'}")
    return 0
