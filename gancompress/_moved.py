"""Old module paths of gancompress, kept importable after the package was grouped into layers.

``import gancompress.prune`` (and every ``from gancompress.<old> import name``) keeps working: a
finder on ``sys.meta_path`` answers an old dotted name with the module that now holds its code,
the same module object (so a monkeypatch through either name patches the one module), and warns
once with a :class:`DeprecationWarning` naming the new path. Nothing here is imported until an
old name is asked for.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: Old module path (under ``gancompress.``) -> the module that holds its code now.
MOVED: dict[str, str] = {
    "schema": "config.schema",
    "recipe_yaml": "config.reader",
    "threads": "system.threads",
    "coreshare": "system.coreshare",
    "runtime": "system.devices",
    "distributed": "system.distributed",
    "finite": "system.finite",
    "fast_infer": "system.fast_infer",
    "optim": "system.optim",
    "fileio": "files.atomic",
    "checkpoint": "files.checkpoint",
    "paths": "files.rundir",
    "rundir": "files.rundir",
    "runlock": "files.runlock",
    "layers": "nets.layers",
    "vgg": "nets.vgg",
    "data.demo": "demo.makers",
    "data.demo_cyclegan": "demo.cyclegan",
    "data.demo_sagan": "demo.sagan",
    "data.demo_srgan": "demo.srgan",
    "losses": "method.losses",
    "sparsity": "method.sparsity",
    "prune": "method.pruning",
    "pruners": "method.layer_pruners",
    "distill": "method.taps",
    "coordination": "method.coordination",
    "discriminators": "method.discriminators",
    "detector": "method.classifier",
    "recipe": "families.recipe",
    "onnx_export": "export.onnx_file",
    "portable": "export.portable",
    "portable_loader": "export.portable_loader",
    "pipeline": "run.pipeline",
    "stages": "run.stages",
    "routes": "run.routes",
    "preflight": "run.preflight",
    "train": "run.train",
    "runrecord": "run.record",
    "evaluate": "run.evaluate",
    "ablation": "experiments.ablation",
    "baselines": "experiments.baselines",
    "benchmark": "experiments.benchmark",
    "contention": "experiments.bench_cpu",
    "gpu_check": "experiments.gpu_check",
    "seeds": "experiments.seeds",
}


def new_location(fullname: str) -> str | None:
    """The module now holding old module ``fullname`` ('gancompress.prune' -> 'gancompress.method.pruning'),
    or None when ``fullname`` is not an old path. A submodule of a moved package moves with it."""
    prefix = "gancompress."
    if not fullname.startswith(prefix):
        return None
    parts = fullname[len(prefix):].split(".")
    for cut in range(len(parts), 0, -1):
        new = MOVED.get(".".join(parts[:cut]))
        if new is not None:
            return prefix + ".".join([new, *parts[cut:]])
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.target}; import it from there", DeprecationWarning,
                      stacklevel=2)
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        """The target module ran when it was imported: only give it back its own spec, which the
        import system replaced with the alias's."""
        module.__spec__ = self._spec


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds old gancompress module paths and hands back the module that holds their code now."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_location(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once: a submodule of a moved package
    ('gancompress.stages.distill') must not be found by the path finder a second time under its old
    name, which would make a second copy of the module."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
