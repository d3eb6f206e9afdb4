#!/usr/bin/env python
"""The same as `gancompress gpu-check` (see `gancompress gpu-check --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["gpu-check", *sys.argv[1:]]))
