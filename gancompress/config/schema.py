"""Checking raw recipe mappings against frozen dataclasses.

The lowest layer of recipe handling: it knows types, ranges and key paths, nothing about GANs.
``sections.py`` declares the sections with it and the families declare their ``model`` sections
with it, so neither has to import the other.

A recipe key is declared with :func:`setting`: its default, its one-line meaning (the generated
recipe reference, docs/reference/recipe.md, prints it) and its range; :func:`bounded` gives a
range alone. A value type with its own syntax (the pruning budget) is a class with
``from_raw(value)`` (raising ValueError with a readable reason) and ``to_raw()``. Every failure is a :class:`RecipeError` naming the file and the key path, e.g.
``recipes/x.yaml: distill.gamma_t: expected a number, got 'abc'``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from ..errors import RecipeError


def bounded(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    """Field metadata: the value must lie in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    return {"range": (lo, hi, lo_open)}


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> Any:
    """A recipe key: a dataclass field with its ``default`` (none: required), its one-line meaning
    ``doc`` and, for numbers, the range [lo, hi] (``lo_open``: (lo, hi])."""
    metadata = {"doc": doc}
    if lo is not None or hi is not None:
        metadata.update(bounded(lo, hi, lo_open=lo_open))
    return dataclasses.field(default=default, metadata=metadata)


def field_range(f: dataclasses.Field) -> tuple[float | None, float | None, bool] | None:
    """The (lo, hi, lo_open) range declared on a dataclass field, or None."""
    return f.metadata.get("range")


def field_doc(f: dataclasses.Field) -> str:
    """The one-line meaning declared on a dataclass field ('' when it has none)."""
    return f.metadata.get("doc", "")


def _has_syntax(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "from_raw") and hasattr(tp, "to_raw")


def type_name(tp: Any) -> str:
    """How a type reads in an error message ('a number', "one of 'a', 'b'", ...)."""
    origin = typing.get_origin(tp)
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if _has_syntax(tp):
        return getattr(tp, "DESCRIPTION", tp.__name__)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "a list of " + type_name(typing.get_args(tp)[0]).replace("a ", "").replace("an ", "") + "s"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return str(tp)


def type_at(cls: type, keys: list[str], overrides_types: dict | None = None) -> Any:
    """The declared type of the key path ``keys`` inside dataclass ``cls``, or None if there is none.

    Walks nested dataclasses and mapping values (``pretrained.generators.G`` is a ``str``);
    ``overrides_types`` replaces top-level field types as in :func:`build_dataclass`.
    """
    tp: Any = cls
    for depth, key in enumerate(keys):
        options = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
        found = None
        for option in options:
            if dataclasses.is_dataclass(option):
                hints = typing.get_type_hints(option)
                if depth == 0 and overrides_types:
                    hints.update(overrides_types)
                found = hints.get(key)
            elif typing.get_origin(option) is dict:
                found = typing.get_args(option)[1]
            if found is not None:
                break
        if found is None:
            return None
        tp = found
    return tp


def accepts_string(tp: Any) -> bool:
    """Whether a value of type ``tp`` may be any string (``str``, ``Any`` or a union holding ``str``)."""
    if tp is str or tp is Any:
        return True
    return typing.get_origin(tp) in (Union, types.UnionType) and any(accepts_string(a) for a in typing.get_args(tp))


def key_repr(key: Any) -> str:
    """A key as shown in a key path: plain identifiers bare, anything else quoted."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def convert(tp: Any, value: Any, path: str, where: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise RecipeError naming ``where`` and ``path``."""

    def fail(expected: str | None = None) -> RecipeError:
        return RecipeError(f"{where}: {path}: expected {expected or type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        specific = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, path, where)
            except RecipeError as exc:
                # A value type that understood the form but not the value says why (e.g. '150%').
                if _has_syntax(arg) and specific is None and not isinstance(value, dict):
                    specific = exc
        raise specific or fail()
    if tp is Any:
        return value
    if _has_syntax(tp):
        try:
            return tp.from_raw(value)
        except ValueError as exc:
            raise RecipeError(f"{where}: {path}: {exc}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:
                raise fail("a finite number") from None
        elif isinstance(value, str):
            # YAML 1.1 reads "1e3" (no dot) as a string; accept any plain numeric string.
            try:
                number = float(value)
            except ValueError:
                raise fail() from None
        else:
            raise fail()
        if not math.isfinite(number):
            raise fail("a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str):
            return value
        raise fail()
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail()
        item_tp = typing.get_args(tp)[0]
        items = [convert(item_tp, v, f"{path}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise fail("a non-empty mapping")
        _, val_tp = typing.get_args(tp)
        return {str(k): convert(val_tp, v, f"{path}.{key_repr(k)}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path, where)
    raise TypeError(f"unsupported recipe type {tp!r} at {path}")


def check_range(f: dataclasses.Field, value: Any, path: str, where: str) -> None:
    """Raise RecipeError if ``value`` lies outside the range declared on field ``f``."""
    bounds = field_range(f)
    if bounds is None or value is None or isinstance(value, (bool, str)):
        return  # a word a numeric field also takes ('auto') has no range
    lo, hi, lo_open = bounds
    if lo is not None and (value < lo or (lo_open and value == lo)):
        op = ">" if lo_open else ">="
        raise RecipeError(f"{where}: {path}: must be {op} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise RecipeError(f"{where}: {path}: must be <= {hi}, got {value!r}")


def build_dataclass(cls: type, raw: Any, path: str, where: str, overrides_types: dict | None = None):
    """Build dataclass ``cls`` from the mapping ``raw``; errors name ``where`` and the key path.

    Args:
        cls: a frozen dataclass type.
        raw: the mapping read from YAML (``None`` means an empty mapping).
        path: the key path of ``raw`` inside the recipe ('' for the top level).
        where: the recipe file name, for messages.
        overrides_types: optional field name -> type replacing the declared type (used for the
            family-specific ``model`` section).

    A dataclass may define ``validate() -> str | None``; a returned string is raised as the error
    (prefixed with the section's key path).
    """
    prefix = f"{path}." if path else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: {path or '<top level>'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    if overrides_types:
        hints.update(overrides_types)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise RecipeError(f"{where}: {prefix}{key_repr(key)}: unknown key (valid keys here: {valid})")
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{prefix}{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{where}: {key_path}: required key is missing")
            if dataclasses.is_dataclass(hints[name]) and not dataclasses.is_dataclass(f.default):
                kwargs[name] = build_dataclass(hints[name], {}, key_path, where)
            continue
        value = convert(hints[name], raw[name], key_path, where)
        check_range(f, value, key_path, where)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            raise RecipeError(f"{where}: {prefix}{problem}")
    return obj


def to_plain(value: Any) -> Any:
    """A dataclass tree as plain YAML-able data (tuples become lists, value types their raw form)."""
    if hasattr(value, "to_raw") and not isinstance(value, type):
        return value.to_raw()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(x) for x in value]
    if isinstance(value, dict):
        return {k: to_plain(x) for k, x in value.items()}
    return value
