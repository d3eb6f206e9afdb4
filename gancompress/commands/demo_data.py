"""Make the demo datasets from the photos that ship inside scikit-image (no download).

    gancompress make-demo-data                 # every family, into demo_data/<family>
    gancompress make-demo-data pix2pix --out demo_data/pix2pix
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GanCompressError

NAME = "make-demo-data"
HELP = "make the demo datasets, the pix2pix demo's segmenter and the cyclegan/sagan FID feature nets"


FAMILIES = ("cyclegan", "pix2pix", "sagan", "srgan")


def add_arguments(p) -> None:
    p.add_argument("families", nargs="*", default=list(FAMILIES), help=f"any of {', '.join(FAMILIES)}")
    p.add_argument("--out", type=Path, default=None, help="output folder (one family only)")
    p.add_argument("--root", type=Path, default=Path("demo_data"), help="parent folder of every family's data")


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
