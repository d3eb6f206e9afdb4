"""The module paths of gancompress before it was grouped into layers still import, as the same modules."""
from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from gancompress import _moved


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_path_is_the_new_module(old):
    new = importlib.import_module(f"gancompress.{_moved.MOVED[old]}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop(f"gancompress.{old}", None)
        module = importlib.import_module(f"gancompress.{old}")
    assert module is new
    assert module.__spec__.name == new.__name__  # the module keeps its own spec
    assert any(issubclass(w.category, DeprecationWarning) and new.__name__ in str(w.message) for w in caught)


def test_submodule_of_a_moved_package_is_not_loaded_twice():
    from gancompress.stages.distill import DistillStage  # noqa: F401  (the old path)

    from gancompress.run.stages import distill
    assert sys.modules["gancompress.stages.distill"] is distill
    assert DistillStage is distill.DistillStage


def test_names_users_import_still_work():
    from gancompress.fast_infer import FastGenerator  # noqa: F401
    from gancompress.recipe import load_recipe  # noqa: F401
    from gancompress.rundir import RunDir  # noqa: F401

    from gancompress.config import Budget, Recipe  # noqa: F401
    from gancompress.export import load_generator
    from gancompress.export.generator import load_generator as moved
    assert load_generator is moved


def test_unknown_names_are_not_answered():
    assert _moved.new_location("gancompress.nets.unet") is None
    assert _moved.new_location("torch.prune") is None
    assert _moved.new_location("gancompress.prune") == "gancompress.method.pruning"
    assert _moved.new_location("gancompress.gpu_check.check") == "gancompress.experiments.gpu_check.check"
