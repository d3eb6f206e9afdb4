"""Measure stage-3 speed and generator latency of a recipe, side by side in one run.

With --runtimes it times teacher and student on the deployment runtimes instead (eager,
torchscript, onnxruntime, openvino; --precisions fp32,int8), from a recipe or a finished run
folder, and prints the table (gancompress/experiments/runtime_bench.py). Otherwise it prints the ratios (fp32 eager against the fast path; teacher against student; the pruned student
against the uniform-width net of nearest MACs) and writes every figure as JSON (--out). With
--synthetic no data is read: random batches of the recipe's shapes. See gancompress/benchmark.py.
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from .common import add_device_arg, int_list, positive_int

NAME = "benchmark"
HELP = "stage-3 it/s and generator latency, fp32 eager vs the fast path, in one run"
EXAMPLE = ("gancompress benchmark recipes/pix2pix_cityscapes.yaml --synthetic --runtimes onnxruntime "
           "--precisions fp32,int8 --batch-sizes 1,8 --out bench.json")


def _name_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_arguments(p) -> None:
    p.add_argument("recipe", help="the recipe YAML file, or (with --runtimes) a finished run folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe key, e.g. --set data.crop_size=128 (repeatable; not with a run folder)")
    p.add_argument("--synthetic", action="store_true", help="random batches of the recipe's shapes")
    p.add_argument("--batch-sizes", type=int_list, nargs="+", default=[[1]],
                   help="batch sizes, '1,8' or '1 8' (stage 3, or the runtimes' table)")
    p.add_argument("--runtimes", type=_name_list, default=None, metavar="NAMES",
                   help="time teacher and student on these runtimes only, e.g. eager,torchscript,onnxruntime,openvino")
    p.add_argument("--precisions", type=_name_list, default=["fp32"], metavar="NAMES",
                   help="with --runtimes: fp32 and/or int8 (int8 on onnxruntime and openvino)")
    p.add_argument("--max-time", type=_seconds, default=2.0, metavar="SECONDS",
                   help="with --runtimes: the most seconds one measurement takes (it stops once its median is stable)")
    p.add_argument("--iters", type=positive_int, default=20, help="timed iterations per measurement")
    p.add_argument("--warmup", type=positive_int, default=5, help="untimed iterations first")
    p.add_argument("--compile", action="store_true", help="also time the fast paths with torch.compile")
    p.add_argument("--no-stage3", action="store_true", help="time the generators only")
    p.add_argument("--student", type=Path, default=None,
                   help="a pruned student generator file (runs/x/student/generator_G.pt) for the "
                        "pruned-vs-uniform comparison; default: prune the recipe's sparse model here")
    p.add_argument("--round-to", type=positive_int, default=None, metavar="N",
                   help="with --runtimes: also time the student pruned with prune.round_to N beside the unrounded one")
    add_device_arg(p)
    p.add_argument("--out", type=Path, default=Path("benchmark.json"), metavar="FILE",
                   help="JSON file of every figure (default benchmark.json)")


def run(args) -> int:
    import logging

    from ..experiments.benchmark import run_benchmark
    from ..families.recipe import load_recipe
    from ..files.atomic import atomic_write_text

    batch_sizes = [b for group in args.batch_sizes for b in group]
    if args.runtimes is not None:
        return _runtimes(args, batch_sizes)
    if args.round_to is not None:
        from ..errors import GanCompressError

        raise GanCompressError("benchmark --round-to times the deployment runtimes: add --runtimes, "
                               "e.g. --runtimes onnxruntime")
    logging.getLogger("gancompress.experiments.benchmark").setLevel(logging.INFO)
    recipe = load_recipe(args.recipe, args.overrides)
    result = run_benchmark(recipe, device=args.device, batch_sizes=batch_sizes, iters=args.iters,
                           warmup=args.warmup, synthetic=args.synthetic, use_compile=args.compile,
                           stage3=not args.no_stage3, student=args.student)
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"figures: {args.out}")
    return 0


def _runtimes(args, batch_sizes: list[int]) -> int:
    from ..errors import GanCompressError
    from ..experiments.runtime_bench import run_runtime_benchmark, summary_lines
    from ..families.recipe import load_recipe
    from ..files.atomic import atomic_write_text

    target = Path(args.recipe)
    if target.is_dir():
        if args.overrides:
            raise GanCompressError(f"benchmark: --set changes a recipe, and {target} is a run folder; "
                                   "pass the recipe file instead")
        kwargs = {"run_dir": target}
    else:
        kwargs = {"recipe": load_recipe(target, args.overrides), "student": args.student}
    result = run_runtime_benchmark(**kwargs, runtimes=args.runtimes, batch_sizes=batch_sizes,
                                   precisions=args.precisions, max_time=args.max_time, device=args.device or "cpu",
                                   synthetic=args.synthetic, round_to=args.round_to)
    result["command"] = _runtimes_command(args, batch_sizes)
    print("\n".join(summary_lines(result)))
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"figures: {args.out}")
    return 0


def _runtimes_command(args, batch_sizes: list[int]) -> str:
    """The --runtimes command as one could type it again (global options aside)."""
    words = ["gancompress", NAME, str(args.recipe)]
    for o in args.overrides:
        words += ["--set", o]
    words += [w for w, on in (("--synthetic", args.synthetic),) if on]
    if args.student is not None:
        words += ["--student", str(args.student)]
    if args.round_to:
        words += ["--round-to", str(args.round_to)]
    words += ["--runtimes", ",".join(args.runtimes), "--precisions", ",".join(args.precisions),
              "--batch-sizes", ",".join(map(str, batch_sizes)), "--max-time", f"{args.max_time:g}"]
    if args.device:
        words += ["--device", args.device]
    return shlex.join(words + ["--out", str(args.out)])
