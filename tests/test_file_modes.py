"""Files written atomically get the mode a plain open would give them, or keep the mode of the file
they replace: the temporary file's 0600 must not survive the rename."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from gancompress.files.atomic import atomic_write_json, atomic_write_text, current_umask
from gancompress.files.checkpoint import atomic_save


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)
    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_0666_less_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "report.md", "x")
    atomic_write_json(tmp_path / "report.json", {"a": 1})
    atomic_save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert mode(tmp_path / "plain.txt") == expected
    for name in ("report.md", "report.json", "model.pt"):
        assert mode(tmp_path / name) == expected, name


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    target = tmp_path / "report.json"
    atomic_write_json(target, {"a": 1})
    os.chmod(target, 0o640)
    umask(0o077)
    atomic_write_json(target, {"a": 2})
    assert mode(target) == 0o640
    assert target.read_text().strip().endswith("}")
