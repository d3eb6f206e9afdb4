"""Argument groups several commands share."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="the recipe YAML file, e.g. recipes/demo/pix2pix.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a recipe key, e.g. --set distill.gamma_t=1e3 (repeatable)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when present")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                   help="the run folder, a directory (default: <output_dir>/<name> of the recipe)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run folder")
    add_device_arg(p)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: '1,8' -> [1, 8] (each >= 1)."""
    return [positive_int(t) for t in text.split(",") if t.strip()]
