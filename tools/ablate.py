#!/usr/bin/env python
"""The same as `gancompress ablate` (see `gancompress ablate --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
