"""Family adapters and their registry.

A family is one module with one :class:`~gancompress.families.base.Family` subclass named
``FAMILY``. Adding a family adds its module and one entry below.
"""
from __future__ import annotations

import importlib

FAMILIES = {
    "pix2pix": "gancompress.families.pix2pix",
    "cyclegan": "gancompress.families.cyclegan",
    "sagan": "gancompress.families.sagan",
    "srgan": "gancompress.families.srgan",
}


def get_family(name: str):
    """The family class registered as ``name``; KeyError lists the valid names."""
    if name not in FAMILIES:
        raise KeyError(f"unknown family {name!r} (valid: {', '.join(sorted(FAMILIES))})")
    return importlib.import_module(FAMILIES[name]).FAMILY
