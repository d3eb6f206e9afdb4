#!/usr/bin/env python
"""The same as `gancompress benchmark` (see `gancompress benchmark --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
