#!/usr/bin/env python
"""The same as `gancompress make-demo-data` (see `gancompress make-demo-data --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-demo-data", *sys.argv[1:]]))
