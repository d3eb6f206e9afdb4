"""Reading recipe YAML with bounds, so a hostile or careless file fails fast with one line.

``yaml.safe_load`` runs no code, but it still builds whatever the text describes: a few hundred
bytes of nested aliases ("billion laughs") expand to billions of nodes once the mapping is copied
or printed, an alias inside its own anchor makes a self-containing list that recursion never
leaves, thousands of nested brackets exhaust Python's stack, and a key given twice silently keeps
the last value (a whole ``train:`` section can vanish). The loader here checks all of that while
the YAML events are composed into nodes, before any Python object is built:

- the file is at most :data:`MAX_BYTES` and valid UTF-8 (the error gives the byte offset);
- at most :data:`MAX_ALIASES` aliases, and at most :data:`MAX_NODES` values with every alias
  expanded (counted as they are composed, so a huge document stops early);
- an alias may not point at a node that contains it;
- nesting is at most :data:`MAX_DEPTH` levels (libyaml, when PyYAML has it, refuses past 1000 itself);
- a mapping may not repeat a key (the error names the key path and both lines);
- integers have at most :data:`MAX_INT_DIGITS` characters.

Every refusal is a :class:`~gancompress.errors.RecipeError` with one line naming the file (or the
``--set`` key) and the line of the problem.
"""
from __future__ import annotations

import codecs
import os
import stat
import unicodedata
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from ..errors import RecipeError

#: Largest recipe file read; real recipes are a few KiB.
MAX_BYTES = 1 << 20
#: Most aliases (``*name``) in one document.
MAX_ALIASES = 100
#: Most values (keys, scalars, lists, mappings) in the document once every alias is expanded; the
#: largest shipped recipe has 115.
MAX_NODES = 10_000
#: Deepest nesting of mappings and lists (a real recipe nests 3 or 4 levels).
MAX_DEPTH = 64
#: Longest integer literal (a 64-bit seed has 20 characters; Python refuses past 4300 digits).
MAX_INT_DIGITS = 40
#: Longest ``--set`` value.
MAX_OVERRIDE_CHARS = 4096

_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"


def _printable(text: str, limit: int = 80) -> str:
    """``text`` on one line: control and other unprintable characters escaped, cut at ``limit``."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return out if len(out) <= limit else out[: limit - 3] + "..."


class _Refused(yaml.MarkedYAMLError):
    """A bound was hit; ``problem`` says which, ``problem_mark`` where."""

    def __init__(self, problem: str, mark):
        super().__init__(problem=problem, problem_mark=mark)


class _Bounds:
    """Counting and refusing, mixed into a loader before its Composer and SafeConstructor: counts
    aliases, expanded size and depth while composing nodes, refuses recursive aliases, duplicate
    keys and overlong integers."""

    def _init_bounds(self) -> None:
        self._depth = 0
        self._aliases = 0
        self._total = 0                       # nodes so far, each alias counted as what it expands to
        self._composing: set[str] = set()    # anchors whose node is still being composed
        self._sizes: dict[int, int] = {}      # id(node) -> node count with aliases expanded
        self._path: list[str] = []            # key path of the node being composed

    def _grow(self, count: int, mark) -> None:
        self._total += count
        if self._total > MAX_NODES:
            raise _Refused(f"holds more than {MAX_NODES} values (an alias *name counts as all it repeats); "
                           "a recipe has about a hundred", mark)

    # --- composing ---------------------------------------------------------------------------
    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name); a recipe needs a few at most",
                               event.start_mark)
            if event.anchor in self._composing:
                raise _Refused(f"alias *{_printable(event.anchor)} points at a node that contains it "
                               "(a recursive alias)", event.start_mark)
            node = super().compose_node(parent, index)
            self._grow(self._sizes[id(node)], event.start_mark)
            return node
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._grow(1, event.start_mark)  # counted as it starts, so a huge flat list stops early
        label = self._label(parent, index)
        if label is not None:
            self._path.append(label)
        anchor = event.anchor
        if anchor is not None:
            self._composing.add(anchor)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._composing.discard(anchor)
            if label is not None:
                self._path.pop()
        self._record_size(node)
        return node

    @staticmethod
    def _label(parent, index) -> str | None:
        """The path segment of a child: its key in a mapping, ``[i]`` in a list, None for a key."""
        if isinstance(parent, SequenceNode):
            return f"[{index}]"
        if isinstance(parent, MappingNode) and index is not None:
            return str(index.value) if isinstance(index, ScalarNode) else "<key>"
        return None

    def _record_size(self, node) -> None:
        """Remember ``node``'s expanded size, which an alias to it adds to the total."""
        if isinstance(node, ScalarNode):
            size = 1
        elif isinstance(node, SequenceNode):
            size = 1 + sum(self._sizes[id(child)] for child in node.value)
        else:
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        self._sizes[id(node)] = size

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[object, ScalarNode] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # '<<' merges may be overridden by explicit keys; that is not a duplicate
            # Keys compare as Python will compare them in the dict (1, 0x1 and true are one key).
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue
            if first is not key_node:
                where = "".join(seg if seg.startswith("[") else "." + seg
                                for seg in self._path + [str(key_node.value)]).lstrip(".")
                raise _Refused(f"duplicate key '{_printable(where)}' (first at line {first.start_mark.line + 1}); "
                               "YAML would keep only the last one, so remove or merge one of them",
                               key_node.start_mark)
        return node

    # --- constructing ------------------------------------------------------------------------
    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_DIGITS:
            raise _Refused(f"integer with more than {MAX_INT_DIGITS} digits", node.start_mark)
        return super().construct_yaml_int(node)


class _PureLoader(_Bounds, yaml.SafeLoader):
    """The bounds on PyYAML's pure-Python reader, scanner and parser."""

    def __init__(self, stream: str):
        yaml.SafeLoader.__init__(self, stream)
        self._init_bounds()


_PureLoader.add_constructor(_INT_TAG, _PureLoader.construct_yaml_int)
_LOADER: type = _PureLoader

try:  # libyaml's C scanner and parser make the events ~50x faster; composing stays ours.
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    CParser = None
if CParser is not None:
    class _FastLoader(_Bounds, Composer, CParser, SafeConstructor, Resolver):
        """The bounds on libyaml's events (pure PyYAML scans dense text at ~70 KB/s)."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._init_bounds()

    _FastLoader.add_constructor(_INT_TAG, _FastLoader.construct_yaml_int)
    _LOADER = _FastLoader


def _line_of(exc: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(exc, "position", None)  # ReaderError: a character index into the text
    if position is not None:
        return text.count("\n", 0, position) + 1
    return None


def _problem(exc: BaseException) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"character U+{char:04X} is not allowed in YAML (a control character or binary data?)"
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return _printable("; ".join(parts) or exc.__class__.__name__, 200)
    return _printable(str(exc) or exc.__class__.__name__, 200)


def _parse(text: str) -> object:
    """Parse one YAML document with the bounded loader; YAMLError/ValueError on failure."""
    loader = _LOADER(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_recipe_yaml(path: Path) -> object:
    """Read and parse a recipe file within the bounds above.

    Args:
        path: the YAML file.

    Returns:
        What the document holds (normally a dict; None for an empty file), made of dicts, lists,
        strings, numbers, booleans, None and dates only.

    Raises:
        RecipeError: one line naming ``path`` and what is wrong (missing, not a regular file,
            too large, not UTF-8 with the byte offset, not valid YAML or over a bound, with the line).
    """
    path = Path(path)
    where = _printable(str(path), 200)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise RecipeError(f"{where}: cannot read the recipe ({exc.strerror}); pass the path of a YAML recipe, "
                          "e.g. recipes/demo/pix2pix.yaml") from None
    if not stat.S_ISREG(info.st_mode):
        raise RecipeError(f"{where}: not a regular file; pass the path of a YAML recipe")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more, whatever the size claimed
    except OSError as exc:
        raise RecipeError(f"{where}: cannot read the recipe ({exc.strerror})") from None
    if len(data) > MAX_BYTES:
        raise RecipeError(f"{where}: larger than {MAX_BYTES // 1024} KiB; a recipe is a few KiB of YAML, "
                          "so this is probably not a recipe")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise RecipeError(f"{where}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} (line {line}) "
                          "cannot be decoded; save the recipe as UTF-8") from None
    try:
        return _parse(text)
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        line = _line_of(exc, text) if isinstance(exc, yaml.YAMLError) else None
        if isinstance(exc, _Refused):  # valid YAML, but over a bound
            raise RecipeError(f"{where}: line {line}: {_problem(exc)}") from None
        at = f" at line {line}" if line is not None else ""
        raise RecipeError(f"{where}: not valid YAML{at}: {_problem(exc)}") from None


def parse_override_value(text: str, key_path: str) -> object:
    """Parse the value of a ``--set KEY.PATH=VALUE`` override with the same bounds as a file.

    Args:
        text: the VALUE part, as given on the command line.
        key_path: the KEY.PATH part, for messages.

    Returns:
        The parsed value (a number, string, boolean, None, list or mapping).

    Raises:
        RecipeError: one line naming ``--set KEY.PATH``: the value holds a control character or
            undecodable bytes, is longer than :data:`MAX_OVERRIDE_CHARS`, or is not valid YAML.
    """
    name = f"--set {_printable(key_path)}"
    if len(text) > MAX_OVERRIDE_CHARS:
        raise RecipeError(f"{name}: the value has {len(text)} characters, more than {MAX_OVERRIDE_CHARS}")
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":  # the shell passed bytes that are not UTF-8 (Python keeps them as surrogates)
            raise RecipeError(f"{name}: the value is not UTF-8 text (undecodable byte at character {i}); "
                              "pass plain UTF-8 text")
        if category == "Cc":
            raise RecipeError(f"{name}: the value holds a control character (U+{ord(char):04X} at character {i}); "
                              "pass plain text on one line, e.g. --set distill.gamma_t=1e3")
    try:
        return _parse(text)
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as exc:
        if isinstance(exc, _Refused):
            raise RecipeError(f"{name}: the value '{_printable(text, 60)}' is refused: {_problem(exc)}") from None
        raise RecipeError(f"{name}: the value '{_printable(text, 60)}' is not valid YAML ({_problem(exc)})") from None
