#!/usr/bin/env python
"""Compress a GAN as a recipe says: python tools/compress.py RECIPE [--set k=v] [--run-dir D] [--resume] [--dry-run]."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancompress.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["compress", *sys.argv[1:]]))
