"""Does the distillation pay? The GCC student against the same pruned net trained without it.

One teacher is trained once (and cached under <output_dir>/teachers); stages 1-2 run once from it;
then, on the same seeds, the rows pruned-finetune (the pruned net, no teacher), kd (distillation
against a plain D), gcc (distillation and the selective D) and small-scratch (the uniform net of
equal MACs, as many generator updates). The table gives every row per seed and mean ± std, and the
paired differences gcc - pruned-finetune and gcc - kd with 95 % bootstrap intervals. The result is
written as JSON and Markdown to the run's folder and, outside --quick, to
docs/results/baselines_<family>.json and .md.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .common import add_device_arg, add_recipe_args, positive_int

NAME = "baselines"
HELP = "measure whether distillation pays: gcc, kd, pruned-finetune and small-scratch over seeds"
EXAMPLE = "gancompress baselines recipes/demo/pix2pix.yaml --quick"
RESULTS_DIR = Path("docs") / "results"


def add_arguments(p) -> None:
    add_recipe_args(p)
    p.add_argument("--quick", action="store_true",
                   help="check the machinery: baselines.quick_seeds seeds (2), every stage baselines.quick_length "
                        "as long; writes the same JSON into the run's folder only")
    p.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                   help="seeds recipe.seed, +1, ..., +N-1 (default baselines.seeds, or quick_seeds with --quick)")
    p.add_argument("--rows", nargs="+", default=None, metavar="KEY",
                   help="rows to run (default all: small-scratch pruned-finetune kd gcc)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="the run's folder, holding every row's run folder and baselines.json "
                        "(default <output_dir>/<name>-baselines, or -baselines-quick)")
    p.add_argument("--teachers", type=Path, default=None, metavar="DIR",
                   help="the folder of cached teachers (default <output_dir>/teachers)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR, metavar="DIR",
                   help="folder for the full protocol's JSON and Markdown (default docs/results; not with --quick)")
    p.add_argument("--results-name", default=None, metavar="NAME",
                   help="their file name without suffix (default baselines_<family>)")
    p.add_argument("--resume", action="store_true", help="continue the run found in the folder")
    add_device_arg(p)


def command_line(args) -> str:
    """The command as one could type it again."""
    threads = getattr(args, "threads", None)  # the global option: it changes the timings recorded
    words = ["gancompress", *(["--threads", str(threads)] if threads else []), "baselines", str(args.recipe)]
    for o in args.overrides:
        words += ["--set", o]
    results = None if args.results == RESULTS_DIR else args.results
    for flag, value in (("--seeds", args.seeds), ("--out", args.out), ("--teachers", args.teachers),
                        ("--results", results), ("--results-name", args.results_name), ("--device", args.device)):
        if value is not None:
            words += [flag, str(value)]
    if args.rows:
        words += ["--rows", *args.rows]
    words += [w for w, on in (("--quick", args.quick), ("--resume", args.resume)) if on]
    return shlex.join(words)


def run(args) -> int:
    from ..experiments.baselines import run_baselines

    folder, _ = run_baselines(args.recipe, args.overrides, quick=args.quick, seeds=args.seeds, rows=args.rows,
                              out_dir=args.out, resume=args.resume, device=args.device, teachers=args.teachers,
                              results_dir=args.results, results_name=args.results_name,
                              command=command_line(args))
    print((folder / "baselines.md").read_text(), end="")
    print(f"table: {folder / 'baselines.md'}")
    return 0
