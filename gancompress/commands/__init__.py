"""The subcommands of ``gancompress``, one module each.

A command module has ``NAME``, ``HELP`` (one line for the command list), a docstring (its
``--help`` description, plain text), ``EXAMPLE`` (one command line that ends its ``--help``),
``add_arguments(parser)`` and ``run(args) -> int`` (the exit status, one of
``cli.EXIT_STATUSES``). An option naming a path says whether it is a file or a directory (metavar
FILE or DIR). User mistakes are raised as :class:`~gancompress.errors.GanCompressError`;
``cli.main`` prints them in one line and exits 2. Adding a command is one module and one entry
below.

May import: every layer (commands and the ``cli`` entry point are the top).
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: Subcommand name -> module (imported when the command runs, so ``--help`` stays fast).
COMMANDS: dict[str, str] = {
    "compress": "compress",
    "prune": "prune",
    "export": "export",
    "evaluate": "evaluate",
    "macs": "macs",
    "ablate": "ablate",
    "baselines": "baselines",
    "benchmark": "benchmark",
    "bench-cpu": "bench_cpu",
    "gpu-check": "gpu_check",
    "train-detector": "train_detector",
    "train-segmenter": "train_segmenter",
    "make-demo-data": "demo_data",
    "prepare-cityscapes": "prepare_cityscapes",
}


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{COMMANDS[name]}")
