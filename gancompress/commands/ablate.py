"""Run one recipe with each student discriminator and write the ablation table.

Stages 1 and 2 run once per seed and are shared, so every variant distils the same pruned
architecture from the same sparse model; with --seeds N every variant runs for seeds
recipe.seed, +1, ... and the table shows mean ± std. The table goes to
<output_dir>/<name>-ablation/ablation.md (and is printed). A variant that cannot run fails alone,
in one line, and the command exits with status 1.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..experiments.ablation_variants import VARIANTS
from .common import add_device_arg, add_recipe_args, positive_int

NAME = "ablate"
HELP = "run a recipe once per student-discriminator variant and tabulate the results"
EXAMPLE = "gancompress ablate recipes/demo/pix2pix.yaml --variants plain gcc dmd --seeds 3"


def _variant_lines() -> str:
    """One line per variant of the registry, in its order: key and label."""
    return "\n".join(f"  {key:<16} {label}" for key, (label, _) in VARIANTS.items())


def add_arguments(p) -> None:
    p.description = (p.description or "") + "\n\nvariants (--variants KEY ...):\n" + _variant_lines()
    add_recipe_args(p)
    p.add_argument("--variants", nargs="+", default=None, metavar="KEY",
                   help="variants to run (default: all, in the order above)")
    p.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                   help="repeat every variant with seeds recipe.seed, +1, ..., +N-1 (default 1)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="the ablation directory, holding every variant's run folder and the tables "
                        "(default <output_dir>/<name>-ablation)")
    p.add_argument("--resume", action="store_true", help="continue the variants found in the folder")
    add_device_arg(p)


def run(args) -> int:
    from ..experiments.ablation import run_ablation

    folder, results = run_ablation(args.recipe, args.overrides, args.variants, args.out, args.resume, args.device,
                                   seeds=args.seeds)
    print((folder / "ablation.md").read_text(), end="")
    print(f"table: {folder / 'ablation.md'}")
    failed = [v["error"] for v in results["variants"].values() if "error" in v]
    for message in failed:
        print(f"gancompress: error: {message}", file=sys.stderr)
    return 1 if failed else 0
