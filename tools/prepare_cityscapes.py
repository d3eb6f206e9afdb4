#!/usr/bin/env python
"""Convert the raw Cityscapes download into the aligned layout recipes/pix2pix_cityscapes.yaml reads.

    python tools/prepare_cityscapes.py /path/to/cityscapes datasets/cityscapes
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancompress.data.cityscapes import convert_cityscapes  # noqa: E402
from gancompress.errors import GanCompressError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="folder holding leftImg8bit/ and gtFine/")
    parser.add_argument("out", type=Path, help="output folder (data.root of the recipe)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert_cityscapes(args.src, args.out, args.splits, args.size)
    except GanCompressError as exc:
        print(f"prepare_cityscapes: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
