"""The manual: generated pages match what tools/make_docs.py writes, every link resolves, the README
keeps its promises, and the generators render what their sources say."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gancompress.config.schema import setting
from gancompress.experiments.baselines.report import render_markdown
from gancompress.manual import command_reference, error_index, pages, recipe_reference, results
from gancompress.manual.links import anchors, broken_links, slug

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def expected():
    return pages.expected(ROOT)


def test_every_generated_page_is_current(expected):
    problems = pages.stale(ROOT, expected)
    commands = "docs/reference/commands.md (differs)"
    recorded = re.search(r"formatted by Python (\d+\.\d+)'s argparse", (ROOT / "docs/reference/commands.md").read_text())
    if commands in problems and recorded and recorded.group(1) != command_reference.python_version():
        problems.remove(commands)  # argparse lays help out differently in another Python version
    assert problems == [], "run: python tools/make_docs.py\n" + "\n".join(problems)


def test_every_link_and_anchor_resolves(expected):
    assert pages.links(ROOT, expected) == []


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## The `x` key: what it does\n\nsee [b](b.md#there), [c](c.md), "
                                   "[here](#the-x-key-what-it-does), [gone](#gone), `[code](nowhere.md)`, "
                                   "[web](https://example.org/x.md)\n\n```\n[fenced](nowhere.md)\n```\n")
    (tmp_path / "b.md").write_text("# Here\n")
    problems = broken_links(tmp_path / "a.md")
    assert [p.split(": ", 1)[1] for p in problems] == [
        "b.md#there (no heading #there in b.md)", "c.md (no such file)", "#gone (no heading #gone in a.md)"]


def test_anchors_follow_githubs_rules():
    assert slug("Compress the model you already have") == "compress-the-model-you-already-have"
    assert slug("MACs: thop and complete") == "macs-thop-and-complete"
    assert slug("`gancompress prune`, step 2 (of 4)") == "gancompress-prune-step-2-of-4"
    assert slug("selective+dmd") == "selectivedmd"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A b\n") == {"a", "a-1", "a-b"}


def test_every_recipe_key_has_a_meaning():
    assert recipe_reference.undocumented() == []

    @dataclasses.dataclass(frozen=True)
    class Section:
        said: int = setting(1, "a key with a meaning", lo=0)
        unsaid: int = setting(2, lo=1)

    tables = {"toy": recipe_reference.keys(Section, "toy.")}
    assert recipe_reference.undocumented(tables) == ["toy: toy.unsaid"]
    said = tables["toy"][0]
    assert (said.path, said.type, said.default, said.bounds) == ("toy.said", "integer", "`1`", ">= 0")


def test_the_recipe_reference_lists_every_key_of_every_section():
    text = (ROOT / "docs/reference/recipe.md").read_text()
    for rows in recipe_reference.sections().values():
        for key in rows:
            assert f"| `{key.path}` |" in text
    assert "| `discriminator.dmd.threshold` | number | `0.84` | -1 to 1 |" in text
    assert "| `discriminator.mode` | `selective` / `plain` / `none` / `dmd` / `selective+dmd` / `glead` |" in text


def test_the_readme_keeps_its_promises():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    commands = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert commands[1] == ci, "the README's test command must be exactly what .ci/run runs"
    assert commands[0].endswith("gancompress make-demo-data pix2pix && gancompress compress recipes/demo/pix2pix.yaml")
    assert (ROOT / "recipes/demo/pix2pix.yaml").is_file()
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dates belong in CHANGELOG.md"
    assert not re.search(r"\b\d+ tests\b", text), "test counts and suite times leave the README"
    required = re.search(r"python_requires = >=(\S+)", (ROOT / "setup.cfg").read_text()).group(1)
    assert f"Python {required} or newer" in text
    for page in ("results", "pipeline", "recipes", "discriminator_modes", "metrics", "performance", "run_folder",
                 "datasets", "troubleshooting", "architecture"):
        assert f"(docs/{page}.md)" in text, page


def test_the_error_index_reads_messages_from_the_source(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "errors.py").write_text("class GanCompressError(Exception):\n    pass\n\n\n"
                                       "class DataError(GanCompressError):\n    pass\n")
    (package / "a.py").write_text(
        "from .errors import DataError\n\n\nclass LocalError(DataError):\n    pass\n\n\n"
        "def f(root, n):\n"
        "    if n:\n        raise LocalError(f'{root}: no image files ({n + 1} expected)')\n"
        "    raise DataError('data.root is empty: set it' + ' to a folder')\n\n\n"
        "def g():\n    raise ValueError('not a user error')\n")
    found = error_index.user_errors(package)
    assert [(m.module, m.error, m.text) for m in found] == [
        ("pkg/a.py", "LocalError", "<root>: no image files (<...> expected)"),
        ("pkg/a.py", "DataError", "data.root is empty: set it to a folder")]


def test_the_error_index_holds_the_recipe_errors():
    texts = {m.text for m in error_index.user_errors()}
    assert "<where>: <key_path>: required key is missing" in texts
    assert any(t.startswith("--set <key_path>=: nothing after '='") for t in texts)


def _report(metric: float) -> dict:
    side = {"macs": 0.4, "macs_complete": 0.5, "params": 2.0}
    small = {"macs": 0.1, "macs_complete": 0.125, "params": 0.5}
    return {"family": "pix2pix", "recipe": "demo_pix2pix", "route": {"name": "scratch"},
            "generators": {"G": {"teacher": side, "student": small,
                                 "latency": {"device": "cpu", "models": {"teacher": {"eager_b1_fp32": {"median_ms": 9.0}},
                                                                         "student": {"eager_b1_fp32": {"median_ms": 3.0}}}},
                                 "metrics": {"teacher": {"miou": 52.0, "miou_images": 16}, "student": {"miou": metric}},
                                 "protocol": {}}},
            "training": {"precision": "fp32", "device": "cpu", "seed": 0, "sparse_epochs": 90, "distill_epochs": 60,
                         "batch_size": 4}}


def _baselines() -> dict:
    metric = {"per_seed": {"0": 50.0, "1": 52.0}, "mean": 51.0, "std": 1.4}
    row = {"label": "GCC (prune + distil)", "definition": "the whole method", "metrics": {"miou": metric},
           "gmacs_complete": 0.02, "params_m": 0.03, "latency_ms": {"mean": 3.6, "std": 0.1}, "diagnostics": {}}
    entry = {"headline": "miou", "budget_gmacs": 0.02,
             "teacher": {"metrics": {"miou": metric}, "gmacs_complete": 0.07, "params_m": 1.8, "latency_ms": 6.9},
             "sparse_model": {"metrics": {}, "gmacs_complete": 0.07}, "pruned_before_finetune": {"metrics": {},
                                                                                                 "gmacs_complete": 0.02},
             "rows": {"gcc": row}, "references": {}, "paired": {}, "targets": []}
    settings = {"recipe": "recipes/demo/pix2pix.yaml", "command": "gancompress baselines recipes/demo/pix2pix.yaml",
                "json_name": "baselines_pix2pix.json", "commit": {"commit": "abc", "dirty": False},
                "machine": {"cpu_count": 2, "torch_threads": 1, "processor": "x86_64", "torch": "2.14.1",
                            "training_device": "cpu"}}
    return {"format": "gancompress-baselines/2", "family": "pix2pix", "seeds": [0, 1], "settings": settings,
            "generators": {"G": entry}, "date": "2026-12-07T00:00:00+00:00"}


def test_results_pages_are_rendered_from_their_json(tmp_path):
    import json

    folder = tmp_path / "results"
    assert results.pages(folder) == {} and results.index_part(folder, "results/") == "No results are committed yet."
    assert "No demo report is committed yet" in results.demo_part(folder, "docs/results/")
    folder.mkdir()
    (folder / "baselines_pix2pix.json").write_text(json.dumps(_baselines()))
    (folder / results.DEMO_REPORT).write_text(json.dumps(_report(48.0)))
    (folder / "notes.json").write_text(json.dumps({"something": "else"}))
    (folder / "old.md").write_text("a page whose JSON was removed\n")
    rendered = results.pages(folder)
    assert set(rendered) == {folder / "baselines_pix2pix.md", folder / "demo_pix2pix.md"}
    assert rendered[folder / "baselines_pix2pix.md"] == render_markdown(_baselines())
    table = results.demo_part(folder, "docs/results/")
    assert "| MACs, complete (G) | 0.5 | 0.125 (4x fewer) |" in table
    assert "| latency eager_b1_fp32 (ms, cpu) | 9 | 3 (3x faster) |" in table
    assert "| miou | 52 | 48 |" in table and "miou_images" not in table
    assert "[demo_pix2pix.md](docs/results/demo_pix2pix.md)" in table
    assert results.orphans(folder) == [folder / "old.md"]
    index = results.index_part(folder, "results/")
    assert "[baselines_pix2pix](results/baselines_pix2pix.md)" in index and "seeds 0, 1" in index


def test_generated_parts_are_rewritten_between_their_markers_only():
    text = "before\n<!-- generated:exit-statuses -->\nstale\n<!-- end:exit-statuses -->\nafter\n"
    filled = pages.fill(text, ROOT / "docs", ROOT)
    assert filled.startswith("before\n<!-- generated:exit-statuses -->\n| status | meaning |")
    assert filled.endswith("<!-- end:exit-statuses -->\nafter\n") and "stale" not in filled
    assert pages.fill(filled, ROOT / "docs", ROOT) == filled
    with pytest.raises(ValueError, match="unknown generated part 'nope'"):
        pages.fill("<!-- generated:nope -->\n<!-- end:nope -->", ROOT, ROOT)


def test_the_layers_table_follows_the_declared_order():
    table = pages.layers_part(ROOT / "gancompress")
    listed = re.findall(r"^\| `(\w+)(?:/|\.py)` \|", table, re.M)
    assert listed == pages.layers(ROOT / "gancompress")
    assert "| `config/` |" in table and "| `errors` |" in table.splitlines()[3]
