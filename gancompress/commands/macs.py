"""MACs (thop's count and the complete one) and parameters of a recipe's teacher, or of a generator file.

For a recipe it prints what compress --dry-run prints: the resolved recipe, its route, the
teacher's MACs and parameters and the budget. For a generator file (.pt, as written into a run's
teacher/ and student/ folders) it prints the counts as JSON.
"""
from __future__ import annotations

import json

NAME = "macs"
HELP = "MACs and params of a recipe's teacher, or of a generator file"
EXAMPLE = "gancompress macs runs/demo_pix2pix/student/generator_G.pt"


def add_arguments(p) -> None:
    p.add_argument("target", metavar="RECIPE|GENERATOR", help="a recipe YAML file or a generator .pt file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe key (recipes only; repeatable)")


def run(args) -> int:
    from ..export.generator import load_generator
    from ..families.recipe import load_recipe
    from ..metrics.macs import count_macs
    from ..run.pipeline import describe

    if args.target.endswith((".yaml", ".yml")):
        print(describe(load_recipe(args.target, args.overrides)))
        return 0
    generator, meta = load_generator(args.target)
    m = count_macs(generator, meta["family"].example_input(meta["name"], 1))
    print(json.dumps(m.as_dict(), indent=2))
    return 0
