#!/usr/bin/env python
"""The same as `gancompress baselines` (see `gancompress baselines --help`); needs the package installed (pip install -e .)."""
import sys

from gancompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["baselines", *sys.argv[1:]]))
