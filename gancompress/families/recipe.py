"""Reading a recipe: YAML file -> ``--set`` overrides -> checked, frozen :class:`~gancompress.config.Recipe`.

Every key is checked against the dataclasses of :mod:`gancompress.config` and, for the ``model`` section,
against the family's own dataclass. Unknown keys, missing required keys, wrong types and
out-of-range values raise :class:`RecipeError` naming the file and the key path, e.g.
``recipes/x.yaml: distill.gamma_t: expected a number, got 'abc'``. Dotted overrides
(``--set distill.gamma_t=1e3``) are applied to the raw mapping before the check, so they obey the
same rules.

This module sits above both :mod:`gancompress.config` and the families: it is where the two meet.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from ..config.reader import parse_override_value, read_recipe_yaml
from ..config.schema import accepts_string, build_dataclass, type_at, type_name
from ..config.sections import Recipe
from ..errors import RecipeError
from ..files.rundir import safe_run_name
from ..method.discriminators.modes import MODES
from . import FAMILIES


def load_recipe(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Recipe:
    """Read, override and check a recipe file.

    Args:
        path: the YAML file.
        overrides: ``KEY.PATH=VALUE`` strings applied before checking.

    Returns:
        The frozen :class:`Recipe`, its ``model`` the family's dataclass.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise RecipeError(f"{where}: recipe file not found (pass the path of a YAML recipe, e.g. "
                          "recipes/demo/pix2pix.yaml)")
    return recipe_from_dict(read_recipe_yaml(path), where, overrides)


def apply_override(raw: dict, assignment: str, where: str) -> str | None:
    """Apply one ``KEY.PATH=VALUE`` (VALUE in YAML) to the raw mapping ``raw`` in place.

    Nothing after ``=`` (``--set eval.segmenter=``, the natural way to switch a file off) sets the
    empty string; the key path is returned so that :func:`check_empty_overrides` can refuse it for
    a key that takes no string. Otherwise returns None.
    """
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. distill.gamma_t=1e3")
    key_path, text = assignment.split("=", 1)
    keys = key_path.strip().split(".")
    empty = not text.strip()
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{where}: --set {key_path}: '{key}' is not a section")
        node = child
    node[keys[-1]] = "" if empty else parse_override_value(text, key_path.strip())
    return key_path.strip() if empty else None


def check_empty_overrides(key_paths: list[str], model_type: type) -> None:
    """Refuse an empty ``--set KEY=`` for a key that takes no string, saying what to write instead.

    A key path the recipe does not have is left to the ordinary check (unknown key).
    """
    for key_path in key_paths:
        tp = type_at(Recipe, key_path.split("."), {"model": model_type})
        if tp is None or accepts_string(tp):
            continue
        args = typing.get_args(tp)
        if type(None) in args:
            instead = f"--set {key_path}=null for none, or a value"
        elif typing.get_origin(tp) in (tuple, list) or any(typing.get_origin(a) in (tuple, list) for a in args):
            instead = f"--set {key_path}=[] for an empty list, or a value"
        else:
            instead = "a value after '='"
        raise RecipeError(f"--set {key_path}=: nothing after '=', but this key takes {type_name(tp)}, not the "
                          f"empty string; write {instead}")


def recipe_from_dict(raw: Any, where: str = "<recipe>", overrides=()) -> Recipe:
    """Check a raw mapping (as read from YAML) and build the :class:`Recipe`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping of recipe keys at the top level, got {type(raw).__name__}")
    raw = _deep_copy(raw)
    empty = [k for k in (apply_override(raw, a, where) for a in overrides) if k is not None]
    family_name = raw.get("family")
    if not isinstance(family_name, str) or family_name not in FAMILIES:
        raise RecipeError(f"{where}: family: expected one of {', '.join(sorted(FAMILIES))}, got {family_name!r}")
    family = FAMILIES[family_name]
    check_empty_overrides(empty, family.ModelConfig)
    recipe = build_dataclass(Recipe, raw, "", where, overrides_types={"model": family.ModelConfig})
    safe_run_name(recipe.name, where)
    if isinstance(recipe.prune.budget, dict):
        names, given = set(family.generator_names), set(recipe.prune.budget)
        if given != names:
            raise RecipeError(
                f"{where}: prune.budget: expected one budget for each generator {sorted(names)}, got {sorted(given)}")
    for kind in ("generators", "discriminators"):
        files = getattr(recipe.pretrained, kind) or {}
        unknown = sorted(set(files) - set(family.generator_names))
        if unknown:
            raise RecipeError(f"{where}: pretrained.{kind}.{unknown[0]}: the {family_name} family has no generator "
                              f"{unknown[0]!r} (valid: {', '.join(family.generator_names)})")
    given = set(recipe.pretrained.generators or {})
    if given and given != set(family.generator_names):
        missing = sorted(set(family.generator_names) - given)
        raise RecipeError(f"{where}: pretrained.generators: also name a file for generator {missing[0]!r} (the "
                          f"{family_name} family has {', '.join(family.generator_names)})")
    if recipe.discriminator.mode not in MODES:
        raise RecipeError(f"{where}: discriminator.mode: expected one of {', '.join(MODES)}, "
                          f"got {recipe.discriminator.mode!r}")
    return recipe


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
