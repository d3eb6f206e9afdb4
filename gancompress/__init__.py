"""gancompress: prune and distil trained GAN generators to a MACs budget (GCC, NeurIPS 2021)."""

__version__ = "0.1.0"
