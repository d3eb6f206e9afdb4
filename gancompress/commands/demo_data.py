"""Make the demo datasets from the photos that ship inside scikit-image (no download).

Without a family name it makes every family's, each into <root>/<family> (demo_data/<family>):
the images in that family's layout, and for pix2pix its segmenter (mIoU), for cyclegan and sagan
a small FID feature net, which the demo recipes name.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GanCompressError

NAME = "make-demo-data"
HELP = "make the demo datasets, the pix2pix demo's segmenter and the cyclegan/sagan FID feature nets"
EXAMPLE = "gancompress make-demo-data pix2pix"


FAMILIES = ("cyclegan", "pix2pix", "sagan", "srgan")


def add_arguments(p) -> None:
    p.add_argument("families", nargs="*", default=list(FAMILIES), metavar="FAMILY",
                   help=f"any of {', '.join(FAMILIES)} (default: all)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="the output directory, instead of <root>/<family> (one family only)")
    p.add_argument("--root", type=Path, default=Path("demo_data"), metavar="DIR",
                   help="parent directory of every family's data (default demo_data)")


def run(args) -> int:
    from ..demo.makers import DEMO_MAKERS, get_demo_maker

    unknown = [f for f in args.families if f not in DEMO_MAKERS]
    if unknown:
        raise GanCompressError(f"unknown family {unknown[0]!r} (valid: {', '.join(sorted(DEMO_MAKERS))})")
    if args.out is not None and len(args.families) != 1:
        raise GanCompressError("--out needs exactly one family")
    for family in args.families:
        get_demo_maker(family)(args.out or args.root / family)
    return 0
