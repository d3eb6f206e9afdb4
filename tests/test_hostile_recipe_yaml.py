"""Recipes that used to hang or crash before a key was checked (recipe_yaml)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gancompress.config import reader as recipe_yaml
from gancompress.config.reader import MAX_BYTES, parse_override_value, read_recipe_yaml
from gancompress.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]

# 342 bytes that expand to 9**9 (387 million) strings once aliases are followed.
LAUGHS = "\n".join(
    [f'a: &a [{", ".join(["lol"] * 9)}]']
    + [f"{k}: &{k} [{', '.join(['*' + p] * 9)}]" for p, k in zip("abcdefgh", "bcdefghi")]) + "\n"


LOADERS = [recipe_yaml._PureLoader] + ([recipe_yaml._FastLoader] if recipe_yaml.CParser is not None else [])


@pytest.fixture(params=LOADERS, ids=lambda c: c.__name__, autouse=True)
def loader(request, monkeypatch):
    """Every test runs on the pure-Python events and, where PyYAML has libyaml, on libyaml's."""
    monkeypatch.setattr(recipe_yaml, "_LOADER", request.param)
    return request.param


def _refused(tmp_path, text: str | bytes, match: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(RecipeError, match=match) as info:
        read_recipe_yaml(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


@pytest.fixture
def composed(monkeypatch):
    """Counts the nodes the loader composes before it refuses: work is bounded by the document's
    bound, not by what the text expands to (a count, unlike a time, does not depend on the load)."""
    seen = {"nodes": 0}
    grow = recipe_yaml._Bounds._grow

    def counting(self, count, mark):
        seen["nodes"] = max(seen["nodes"], self._total + count)
        return grow(self, count, mark)
    monkeypatch.setattr(recipe_yaml._Bounds, "_grow", counting)
    return seen


def test_billion_laughs_is_refused_before_it_expands(tmp_path, composed):
    assert len(LAUGHS) < 400
    _refused(tmp_path, LAUGHS, r"line \d+: holds more than 10000 values \(an alias \*name counts as all it repeats\)")
    assert composed["nodes"] < 2 * recipe_yaml.MAX_NODES  # far from the 387 million it describes


def test_a_huge_flat_document_stops_early(tmp_path, composed):
    _refused(tmp_path, "x: [" + "1, " * 300_000 + "]\n", "holds more than 10000 values")
    assert composed["nodes"] == recipe_yaml.MAX_NODES + 1  # not the 300 000 values the file holds


def test_many_aliases_are_refused(tmp_path):
    text = "a: &a 1\nb: [" + ", ".join(["*a"] * 500) + "]\n"
    _refused(tmp_path, text, "more than 100 aliases")


@pytest.mark.parametrize("text", ["a: &x [1, *x]\n", "a: &x {b: {c: *x}}\n"])
def test_recursive_alias_is_refused(tmp_path, text):
    _refused(tmp_path, text, r"line 1: alias \*x points at a node that contains it")


@pytest.mark.parametrize("flow", [True, False])
def test_deep_nesting_is_refused(tmp_path, flow):
    if flow:
        text = "x: " + "[" * 5000 + "]" * 5000 + "\n"
    else:  # 5000 levels of block mappings (about 25 MB, so 200 levels here stay under the size bound)
        text = "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n"
    _refused(tmp_path, text, "nested deeper than 64 levels|exceeded maximum nesting depth")


def test_non_utf8_names_the_byte_offset_and_line(tmp_path):
    message = _refused(tmp_path, b"name: ok\nfamily: pix\xe9\n", "not UTF-8 text")
    assert "byte 0xe9 at offset 20 (line 2)" in message


def test_utf8_bom_and_latin_text_are_fine(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: caf\xc3\xa9\n")
    assert read_recipe_yaml(path) == {"name": "café"}


def test_control_character_in_file_is_one_line(tmp_path):
    _refused(tmp_path, "name: a\x07b\n", r"line 1: .*character U\+0007 is not allowed")


def test_oversized_file_is_refused_without_parsing(tmp_path):
    _refused(tmp_path, "# " + "x" * MAX_BYTES + "\n", "larger than 1024 KiB")


@pytest.mark.parametrize("text,match", [
    ("name: a\ntrain:\n  lr_g: 1\ntrain:\n  lr_d: 2\n", r"line 4: duplicate key 'train' \(first at line 2\)"),
    ("name: a\ntrain:\n  lr_g: 1\n  beta1: 0.5\n  lr_g: 2\n",
     r"line 5: duplicate key 'train.lr_g' \(first at line 3\)"),
    ("model: {ngf: 8, ngf: 16}\n", r"line 1: duplicate key 'model.ngf'"),
    ("d_layers:\n- {a: 1, a: 2}\n", r"duplicate key 'd_layers\[0\].a'"),
])
def test_duplicate_keys_name_the_key_and_both_lines(tmp_path, text, match):
    assert yaml.safe_load(text) is not None  # plain PyYAML keeps the last value silently
    _refused(tmp_path, text, match)


def test_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_recipe_yaml(path) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}


@pytest.mark.parametrize("text,match", [
    ("a: !!python/object/apply:os.system [echo]\n", "could not determine a constructor"),
    ("a: " + "9" * 5000 + "\n", "integer with more than 40 digits"),
    ("a: 1\n---\nb: 2\n", "expected a single document"),
    ("a: [1, 2\n", "not valid YAML at line 2"),
])
def test_other_bad_files_are_one_line_recipe_errors(tmp_path, text, match):
    _refused(tmp_path, text, match)


def test_missing_path_and_folder_are_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match="cannot read the recipe"):
        read_recipe_yaml(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="not a regular file"):
        read_recipe_yaml(tmp_path)


def test_every_shipped_recipe_reads_as_plain_pyyaml_reads_it():
    from gancompress.families.recipe import recipe_from_dict

    recipes = sorted((ROOT / "recipes").rglob("*.yaml"))
    assert recipes
    for path in recipes:
        raw = read_recipe_yaml(path)
        assert raw == yaml.safe_load(path.read_text()), path
    assert recipe_from_dict(read_recipe_yaml(recipes[0]), str(recipes[0])).name


# --- --set values ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1e3", "0.5", "true", "hinge", "[2, 4]", "{AtoB: 2.4, BtoA: 2.7}", "''", "null"])
def test_override_values_parse_like_yaml(text):
    assert parse_override_value(text, "k") == yaml.safe_load(text)


@pytest.mark.parametrize("text,match", [
    ("1\x07", r"--set distill\.gamma_t: the value holds a control character \(U\+0007 at character 1\)"),
    ("1\nname: x", r"control character \(U\+000A"),
    ("\udcff", "not UTF-8 text"),
    ("&a [*a]", "recursive alias"),
    ("[" * 500 + "]" * 500, "nested deeper|nesting depth"),
    ("{a: 1, a: 2}", "duplicate key 'a'"),
    ("[1, 2", "is not valid YAML"),
    ("x" * 5000, "more than 4096"),
])
def test_bad_override_values_are_one_line_recipe_errors(text, match):
    with pytest.raises(RecipeError, match=match) as info:
        parse_override_value(text, "distill.gamma_t")
    assert "\n" not in str(info.value) and str(info.value).startswith("--set distill.gamma_t: ")
