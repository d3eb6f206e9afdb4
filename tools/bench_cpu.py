#!/usr/bin/env python
"""The same as `gancompress bench-cpu` (see `gancompress bench-cpu --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench-cpu", *sys.argv[1:]]))
