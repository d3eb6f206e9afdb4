#!/usr/bin/env python
"""The same as `gancompress compress` (see `gancompress compress --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["compress", *sys.argv[1:]]))
