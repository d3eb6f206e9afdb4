"""The recipe: its sections as typed, frozen dataclasses, and the reading that checks them.

- :mod:`.sections`: one dataclass per recipe section (``data``, ``train``, ``prune``, ...), each key
  with its default, meaning and range; the ``model`` section is each family's own dataclass;
  :mod:`.budget`: the typed pruning :class:`Budget`.
- :mod:`.schema`: checks a raw mapping against a dataclass (types, ranges, unknown keys), with
  errors that name the key path.
- :mod:`.reader`: the bounded YAML reader (size, depth, duplicate keys) and ``--set`` values.

Knows no family: reading a recipe against its family is :mod:`gancompress.families.recipe`.

May import: errors.
"""
from __future__ import annotations

from .budget import MAX_GMACS, Budget
from .sections import (
    MAX_EPOCHS,
    MAX_OPSET,
    MAX_SEED,
    MAX_WORKERS,
    BaselinesConfig,
    ClassifierConfig,
    DataConfig,
    DiscriminatorConfig,
    DistillConfig,
    DMDConfig,
    EvalConfig,
    ExportConfig,
    GLeaDConfig,
    PretrainedConfig,
    PruneConfig,
    Recipe,
    SparseConfig,
    TrainConfig,
    dump_recipe,
    recipe_to_dict,
)

__all__ = ["MAX_EPOCHS", "MAX_GMACS", "MAX_OPSET", "MAX_SEED", "MAX_WORKERS", "BaselinesConfig", "Budget", "ClassifierConfig",
           "DMDConfig", "DataConfig", "DiscriminatorConfig", "DistillConfig", "EvalConfig", "ExportConfig",
           "GLeaDConfig", "PretrainedConfig", "PruneConfig", "Recipe", "SparseConfig", "TrainConfig",
           "dump_recipe", "recipe_to_dict"]
