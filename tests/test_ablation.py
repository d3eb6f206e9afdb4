"""tools/ablate.py: variants share stages 1-2, differ in stage 3, and land in one table."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gancompress.ablation import markdown_table, resolve_variants, run_ablation
from gancompress.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(RecipeError, match=r"unknown variant 'gccc' \(valid: none, plain, selective-local, gcc"):
        resolve_variants(["gccc"])
    assert resolve_variants(["dmd", "none"]) == ["none", "dmd"]  # table order, not argument order


@pytest.mark.slow
def test_two_variants_share_stages_one_and_two(tiny_raw, tmp_path):
    tiny_raw["discriminator"]["dmd"] = {"interval": 2, "samples": 2}
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_raw))
    folder, results = run_ablation(str(recipe), [], ["none", "dmd"], tmp_path / "abl", resume=False, device="cpu")

    none, dmd = folder / "none", folder / "dmd"
    for shared in ("sparse/model.pt", "pruned/pruned.pt"):
        assert (none / shared).read_bytes() == (dmd / shared).read_bytes()
    # stage 3 differs: the recipes say so and the students differ
    assert yaml.safe_load((none / "recipe.yaml").read_text())["discriminator"]["mode"] == "none"
    assert yaml.safe_load((dmd / "recipe.yaml").read_text())["discriminator"]["mode"] == "dmd"
    assert (none / "student" / "generator_G.pt").read_bytes() != (dmd / "student" / "generator_G.pt").read_bytes()

    g = results["variants"]["dmd"]["generators"]["G"]
    assert g["dmd_on_share"] is not None and 0.0 <= g["dmd_on_share"] <= 1.0
    assert results["variants"]["none"]["generators"]["G"]["dmd_on_share"] is None
    table = (folder / "ablation.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| no discriminator") and table[3].startswith("| DMD |")
    assert json.loads((folder / "ablation.json").read_text())["variants"].keys() == {"none", "dmd"}

    # A second run into the same folder refuses; --resume finds every variant done.
    with pytest.raises(RecipeError, match="--resume"):
        run_ablation(str(recipe), [], ["none", "dmd"], tmp_path / "abl", resume=False, device="cpu")
    _, again = run_ablation(str(recipe), [], ["none", "dmd"], tmp_path / "abl", resume=True, device="cpu")
    assert again["variants"]["dmd"]["generators"] == results["variants"]["dmd"]["generators"]


def test_table_shows_metrics_macs_and_active_channels():
    results = {"variants": {"gcc": {"label": "selective D (full GCC)", "generators": {"G": {
        "student": {"miou": 50.25}, "teacher": {"miou": 52.5}, "student_gmacs": 0.0228,
        "active_fraction": 0.75, "dmd_on_share": None}}}}}
    lines = markdown_table(results).splitlines()
    assert lines[0] == ("| variant | student miou | teacher miou | student GMACs | active channels (final) | "
                        "DMD mask on |")
    assert lines[2] == "| selective D (full GCC) | 50.25 | 52.5 | 0.0228 | 75 % | - |"


@pytest.mark.slow
def test_tool_reports_a_bad_variant_in_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "ablate.py"), "recipes/demo/pix2pix.yaml",
                           "--variants", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gancompress: error: --variants: unknown variant 'nope' (valid: none, plain, selective-local, gcc, dmd, "
        "selective+dmd, glead)"]
