#!/usr/bin/env python
"""The same as `gancompress prepare-cityscapes` (see `gancompress prepare-cityscapes --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare-cityscapes", *sys.argv[1:]]))
