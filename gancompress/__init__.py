"""gancompress: prune and distil trained GAN generators to a MACs budget (GCC, NeurIPS 2021)."""

from . import _moved

__version__ = "0.1.0"

_moved.install()
