"""Convert the raw Cityscapes download (leftImg8bit/, gtFine/) into the aligned layout that
recipes/pix2pix_cityscapes.yaml reads.

SRC is the folder holding leftImg8bit/ and gtFine/ (leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip unzipped into one folder). OUT_DIR receives <split>/*.png (photo | colour
label, each SIZE x SIZE) and <split>_trainids/*.png (the 19 trainIds, 255 ignored, at full
resolution) for mIoU.
"""
from __future__ import annotations

from pathlib import Path

from .common import positive_int

NAME = "prepare-cityscapes"
HELP = "convert raw Cityscapes into the aligned pix2pix layout"
EXAMPLE = "gancompress prepare-cityscapes ~/downloads/cityscapes datasets/cityscapes"


def add_arguments(p) -> None:
    p.add_argument("src", type=Path, metavar="SRC", help="the directory holding leftImg8bit/ and gtFine/")
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="the output directory (data.root of the recipe)")
    p.add_argument("--size", type=positive_int, default=256, metavar="SIZE",
                   help="side of the square images written (default 256)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], metavar="SPLIT",
                   help="splits to convert (default train val)")


def run(args) -> int:
    from ..data.cityscapes import convert_cityscapes

    convert_cityscapes(args.src, args.out, args.splits, args.size)
    return 0
