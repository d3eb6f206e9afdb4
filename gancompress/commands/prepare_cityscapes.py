"""Convert the raw Cityscapes download (leftImg8bit/, gtFine/) into the aligned layout that
recipes/pix2pix_cityscapes.yaml reads."""
from __future__ import annotations

from pathlib import Path

from .common import positive_int

NAME = "prepare-cityscapes"
HELP = "convert raw Cityscapes into the aligned pix2pix layout"


def add_arguments(p) -> None:
    p.add_argument("src", type=Path, help="folder holding leftImg8bit/ and gtFine/")
    p.add_argument("out", type=Path, help="output folder (data.root of the recipe)")
    p.add_argument("--size", type=positive_int, default=256, help="side of the square images written")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="splits to convert")


def run(args) -> int:
    from ..data.cityscapes import convert_cityscapes

    convert_cityscapes(args.src, args.out, args.splits, args.size)
    return 0
