#!/usr/bin/env python
"""Rebuild the generated pages of the documentation: python tools/make_docs.py [--check]."""
import sys
from pathlib import Path

# The pages document the checkout this script sits in, whichever gancompress is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancompress.manual.pages import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
