"""The recipe's sections as typed, frozen dataclasses, their schema and the bounded YAML reader."""
from __future__ import annotations

from .sections import (
    MAX_EPOCHS,
    MAX_GMACS,
    MAX_OPSET,
    MAX_SEED,
    MAX_WORKERS,
    Budget,
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

__all__ = ["MAX_EPOCHS", "MAX_GMACS", "MAX_OPSET", "MAX_SEED", "MAX_WORKERS", "Budget", "ClassifierConfig",
           "DMDConfig", "DataConfig", "DiscriminatorConfig", "DistillConfig", "EvalConfig", "ExportConfig",
           "GLeaDConfig", "PretrainedConfig", "PruneConfig", "Recipe", "SparseConfig", "TrainConfig",
           "dump_recipe", "recipe_to_dict"]
