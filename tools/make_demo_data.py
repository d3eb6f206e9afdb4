#!/usr/bin/env python
"""Make the demo datasets from the photos that ship inside scikit-image (no download).

    python tools/make_demo_data.py                 # every family, into demo_data/<family>
    python tools/make_demo_data.py pix2pix --out demo_data/pix2pix
"""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancompress.data.demo import DEMO_MAKERS, get_demo_maker  # noqa: E402
from gancompress.errors import GanCompressError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", default=sorted(DEMO_MAKERS), help=f"any of {sorted(DEMO_MAKERS)}")
    parser.add_argument("--out", type=Path, default=None, help="output folder (one family only)")
    parser.add_argument("--root", type=Path, default=Path("demo_data"), help="parent folder of every family's data")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = [f for f in args.families if f not in DEMO_MAKERS]
    if unknown:
        print(f"make_demo_data: error: unknown family {unknown[0]!r} (valid: {', '.join(sorted(DEMO_MAKERS))})",
              file=sys.stderr)
        return 2
    if args.out is not None and len(args.families) != 1:
        print("make_demo_data: error: --out needs exactly one family", file=sys.stderr)
        return 2
    try:
        for family in args.families:
            get_demo_maker(family)(args.out or args.root / family)
    except GanCompressError as exc:
        print(f"make_demo_data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
