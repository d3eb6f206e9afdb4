"""The ``gancompress`` command line: compress, prune, export, evaluate, macs.

User mistakes end in one line on stderr and exit status 2; an interrupted run says how to resume.

Several processes: ``torchrun --nproc_per_node=N tools/compress.py RECIPE`` (or ``torchrun
--nproc_per_node=N --no-python gancompress compress RECIPE``) trains data-parallel; rank 0 prints
the results, and the other ranks log warnings only.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import GanCompressError

log = logging.getLogger("gancompress")


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="the recipe YAML file, e.g. recipes/demo/pix2pix.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe key, e.g. --set distill.gamma_t=1e3 (repeatable)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=None, help="run folder (default: <output_dir>/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when present")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gancompress", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="run every stage of a recipe: sparse teacher, prune, distill, export")
    _add_recipe_args(p)
    _add_run_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved recipe, the teacher's MACs and the budget; touch no data")

    p = sub.add_parser("prune", help="run the stages up to pruning and print the pruned MACs")
    _add_recipe_args(p)
    _add_run_args(p)

    p = sub.add_parser("export", help="export a student generator file to TorchScript (and ONNX)")
    p.add_argument("generator", type=Path, help="a generator file, e.g. runs/x/student/generator_G.pt")
    p.add_argument("--out", type=Path, required=True, help="output TorchScript file (.pt)")
    p.add_argument("--onnx", type=Path, default=None, help="also write ONNX here")

    p = sub.add_parser("evaluate", help="task metric, latency and ONNX parity of a finished run; writes report.md")
    p.add_argument("run_dir", type=Path, help="the run folder, e.g. runs/demo_pix2pix")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)

    p = sub.add_parser("macs", help="MACs and params of a recipe's teacher, or of a generator file")
    p.add_argument("target", help="a recipe YAML or a generator .pt file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    return parser


def _run_dir(recipe, given: Path | None) -> Path:
    return given if given is not None else Path(recipe.output_dir) / recipe.name


def cmd_compress(args, until: str = "report") -> int:
    from . import distributed
    from .config import load_recipe
    from .pipeline import compress, describe

    launch = distributed.launch_env()
    leader = launch is None or launch.rank == 0  # only rank 0 prints results
    # Recipe errors come before the process group, alike on every rank.
    recipe = load_recipe(args.recipe, args.overrides)
    if getattr(args, "dry_run", False):
        if leader:
            print(describe(recipe))
        return 0
    run_dir = _run_dir(recipe, args.run_dir)
    with distributed.process_group(args.device):
        result = compress(recipe, run_dir, resume=args.resume, device=args.device, until=until)
    if not leader:
        return 0
    if until == "report":
        for name, g in result["generators"].items():
            print(f"{name}: teacher {g['teacher']['macs']:.4g} GMACs -> student {g['student']['macs']:.4g} GMACs "
                  f"(complete {g['student']['macs_complete']:.4g}, budget {g['budget']:.4g}), "
                  f"params {g['teacher']['params']:.4g} M -> {g['student']['params']:.4g} M")
        print(f"report: {run_dir / 'report.json'}")
    else:
        print(json.dumps(result, indent=2))
    return 0


def cmd_export(args) -> int:
    from .export import export_torchscript, load_generator

    generator, meta = load_generator(args.generator)
    family, name = meta["family"], meta["name"]
    shipped = family.for_export(generator)
    example = family.example_input(name, 1)
    info = export_torchscript(shipped, example, args.out)
    print(f"TorchScript: {info['path']} (max |diff| vs eager {info['max_abs_diff']:.2e})")
    if args.onnx is not None:
        from .onnx_export import export_onnx, onnx_parity
        export_onnx(shipped, example, args.onnx, opset=meta["recipe"].export.opset)
        print(f"ONNX: {args.onnx} (max |diff| vs eager {onnx_parity(args.onnx, shipped, example):.2e})")
    return 0


def cmd_macs(args) -> int:
    from .config import load_recipe
    from .metrics.macs import count_macs
    from .pipeline import describe

    if args.target.endswith((".yaml", ".yml")):
        print(describe(load_recipe(args.target, args.overrides)))
        return 0
    from .export import load_generator
    generator, meta = load_generator(args.target)
    m = count_macs(generator, meta["family"].example_input(meta["name"], 1))
    print(json.dumps(m.as_dict(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (the console script exits with it)."""
    args = build_parser().parse_args(argv)
    from .distributed import RankStoppedError, launch_env

    launch = None
    try:
        launch = launch_env()
        follower = launch is not None and launch.rank != 0
        # Ranks other than 0 would repeat rank 0's progress lines; they keep warnings only.
        level = logging.DEBUG if args.verbose else logging.WARNING if follower else logging.INFO
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
        if args.command == "compress":
            return cmd_compress(args)
        if args.command == "prune":
            return cmd_compress(args, until="prune")
        if args.command == "export":
            return cmd_export(args)
        if args.command == "macs":
            return cmd_macs(args)
        if args.command == "evaluate":
            from .evaluate import evaluate_run
            report = evaluate_run(args.run_dir, args.device)
            print(json.dumps({n: g.get("metrics", {}) for n, g in report["generators"].items()}, indent=2))
            print(f"report: {args.run_dir / 'report.md'}")
            return 0
    except GanCompressError as exc:
        follower = launch is not None and launch.rank != 0
        if not (follower and isinstance(exc, RankStoppedError)):  # rank 0 prints the cause itself
            where = f" (rank {launch.rank})" if follower else ""
            print(f"gancompress: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gancompress: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
