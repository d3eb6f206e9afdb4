"""Family adapters and their registry: one module per GAN family (Pix2Pix, CycleGAN, SAGAN,
SRGAN) that builds its nets, data, losses and evaluation, and the reading of a recipe against
its family (:mod:`.recipe`).

A family is one module with one :class:`~gancompress.families.base.Family` subclass. Adding a
family adds its module and one entry in :data:`FAMILIES`.

May import: errors, config, system, files, nets, data, metrics, demo, method.
"""
from __future__ import annotations

from ..errors import RecipeError
from .base import Family
from .cyclegan import CycleGANFamily
from .pix2pix import Pix2PixFamily
from .sagan import SAGANFamily
from .srgan import SRGANFamily

#: Family name -> adapter class.
FAMILIES: dict[str, type[Family]] = {
    "pix2pix": Pix2PixFamily,
    "cyclegan": CycleGANFamily,
    "sagan": SAGANFamily,
    "srgan": SRGANFamily,
}


def get_family(name: str) -> type[Family]:
    """The family class registered as ``name``; RecipeError lists the valid names."""
    if name not in FAMILIES:
        raise RecipeError(f"family: unknown family {name!r} (valid: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[name]
