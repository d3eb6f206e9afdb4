#!/usr/bin/env python
"""The same as `gancompress train-segmenter` (see `gancompress train-segmenter --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-segmenter", *sys.argv[1:]]))
