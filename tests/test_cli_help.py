"""What a newcomer reads in ``gancompress ... --help``: each command's own text, plain, with the
paths it names said to be files or directories, one example at the end, and every exit status."""
from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from gancompress import cli
from gancompress.commands import COMMANDS
from gancompress.experiments.ablation_variants import VARIANTS

ROOT = Path(__file__).resolve().parents[1]



def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_plain_text_drops_restructuredtext_marks():
    assert cli.plain_text("see ``x.y`` and :mod:`gancompress.run` or :func:`~a.b.c`") == "see x.y and gancompress.run or c"
    assert cli.plain_text(":class:`the report <gancompress.run.report.Report>`") == "the report"


def test_every_command_has_its_own_description():
    helps = {name: p.format_help() for name, p in subparsers().items()}
    assert set(helps) == set(COMMANDS)
    descriptions = {name: p.description for name, p in subparsers().items()}
    assert len(set(descriptions.values())) == len(descriptions)
    assert descriptions["prune"].startswith("Run a recipe's stages up to pruning")


def test_no_help_shows_restructuredtext_marks():
    texts = {"gancompress": cli.build_parser().format_help(), **{n: p.format_help() for n, p in subparsers().items()}}
    for name, text in texts.items():
        assert "``" not in text and not re.search(r":[a-z]+:`", text), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_help_ends_with_an_example(name):
    text = subparsers()[name].format_help().rstrip()
    last = text.splitlines()
    assert last[-2] == "example:" and last[-1].strip().startswith(f"gancompress {name} "), last[-3:]


def test_every_out_option_says_file_or_directory():
    for name, p in subparsers().items():
        for action in p._actions:
            if "--out" in action.option_strings:
                assert action.metavar in ("FILE", "DIR"), name
                words = action.help.lower()
                said = "file" in words if action.metavar == "FILE" else ("directory" in words or "folder" in words)
                assert said, (name, action.help)


def test_gpu_check_refuses_zero_jobs(capsys):
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["gpu-check", "--jobs", "0"])
    assert info.value.code == 2
    assert "argument --jobs: must be >= 1, got 0" in capsys.readouterr().err


def test_ablate_help_lists_every_variant():
    text = subparsers()["ablate"].format_help()
    listed = re.findall(r"^  (\S+) +", text.split("variants (--variants KEY ...):")[1].split("\n\n")[0], re.M)
    assert listed == list(VARIANTS)


def test_every_status_a_command_returns_is_documented():
    """Every literal ``return N`` of cli.main and the commands' run functions, and argparse's 2."""
    statuses = {2}
    for path in [ROOT / "gancompress" / "cli.py", *(ROOT / "gancompress" / "commands").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Return) and node.value is not None:
                for leaf in ast.walk(node.value):
                    if isinstance(leaf, ast.Constant) and type(leaf.value) is int:
                        statuses.add(leaf.value)
    assert statuses <= set(cli.EXIT_STATUSES), statuses - set(cli.EXIT_STATUSES)
    text = cli.build_parser().format_help()
    for code in cli.EXIT_STATUSES:
        assert re.search(rf"^  {code} ", text, re.M), code
