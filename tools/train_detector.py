#!/usr/bin/env python
"""The same as `gancompress train-detector` (see `gancompress train-detector --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-detector", *sys.argv[1:]]))
