"""Measure a finished run's task metric and latency, and write report.json and report.md."""
from __future__ import annotations

import json
from pathlib import Path

from .common import add_device_arg

NAME = "evaluate"
HELP = "task metric and latency of a finished run; writes report.json and report.md"
EXAMPLE = "gancompress evaluate runs/demo_pix2pix --device cpu"


def add_arguments(p) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run folder (a directory), e.g. runs/demo_pix2pix")
    add_device_arg(p)


def run(args) -> int:
    from ..run.evaluate import evaluate_run

    report = evaluate_run(args.run_dir, args.device)
    print(json.dumps({n: g.get("metrics", {}) for n, g in report["generators"].items()}, indent=2))
    print(f"report: {args.run_dir / 'report.md'}")
    return 0
