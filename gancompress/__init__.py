"""gancompress: prune and distil trained GAN generators to a MACs budget (GCC, NeurIPS 2021).

The package is grouped in layers, lowest first; a module imports only from its own layer and the
layers before it (each subpackage's docstring says what it holds and repeats its line; the test
``tests/test_architecture.py`` holds the code to it):

Layers: errors, config, system, files, nets, data, metrics, demo, method, families, pretrained,
export, run, experiments, commands, cli, manual.

``errors`` (the one-line user errors) and ``cli`` (the ``gancompress`` entry point) are modules;
the rest are subpackages. ``manual`` writes the generated pages of the documentation
(``python tools/make_docs.py``). Old module paths from before the grouping still import
(:mod:`._moved`).
"""

from . import _moved

__version__ = "0.1.0"

_moved.install()
