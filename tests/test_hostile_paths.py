"""A recipe's name becomes a folder: only plain folder names are accepted."""
from __future__ import annotations

import pytest

from gancompress.errors import RecipeError
from gancompress.files.rundir import MAX_NAME, safe_run_name


@pytest.mark.parametrize("name", ["pix2pix_cityscapes", "horse2zebra-v1.2", "expérience", "a", "x" * MAX_NAME])
def test_plain_names_pass(name):
    assert safe_run_name(name, "r.yaml") == name


@pytest.mark.parametrize("name,why", [
    ("../escape", "is not a plain folder name"),
    ("../../etc", "is not a plain folder name"),
    ("/tmp/abs", "is not a plain folder name"),
    ("runs/x", "is not a plain folder name"),
    ("a\\b", "is not a plain folder name"),
    ("..", "is not a plain folder name"),
    (".hidden", "is not a plain folder name"),
    ("a\nb", "is not a plain folder name"),
    ("a\x00b", "is not a plain folder name"),
    ("tab\there", "is not a plain folder name"),
    ("two words", "is not a plain folder name"),
    ("", "is empty"),
    ("x" * (MAX_NAME + 1), "has 101 characters, more than 100"),
    ("漢" * 90, "longer than 255 bytes"),
])
def test_unsafe_names_are_one_line_recipe_errors(name, why):
    with pytest.raises(RecipeError, match=why) as info:
        safe_run_name(name, "r.yaml")
    message = str(info.value)
    assert message.startswith("r.yaml: name: ") and "\n" not in message and "\x00" not in message
    assert "letters, digits, '.', '_' or '-'" in message  # the allowed form
