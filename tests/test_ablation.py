"""tools/ablate.py: variants share stages 1-2, differ in stage 3, and land in one table."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gancompress.errors import GanCompressError, RecipeError
from gancompress.experiments.ablation import (
    dmd_on_rate,
    markdown_table,
    resolve_variants,
    run_ablation,
    spread_summary,
    variant_dir,
    variant_overrides,
)

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_variant_lists_the_valid_ones():
    with pytest.raises(RecipeError, match=r"unknown variant 'gccc' \(valid: none, plain, selective-local, gcc"):
        resolve_variants(["gccc"])
    assert resolve_variants(["dmd", "none"]) == ["none", "dmd"]  # table order, not argument order
    assert resolve_variants(["dmd-random", "dmd"]) == ["dmd", "dmd-random"]  # the rate is measured first


def test_variant_folders_keep_the_single_seed_layout(tmp_path):
    assert variant_dir(tmp_path, "gcc", 3, 3) == tmp_path / "gcc"
    assert variant_dir(tmp_path, "gcc", 4, 3) == tmp_path / "seed-4" / "gcc"


def _metrics(folder: Path, records: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_dmd_random_takes_the_dmd_variants_measured_on_rate(tmp_path):
    # Stage 1 records never count; stage 3 had the mask on in 1 of 4 records (two generators).
    _metrics(tmp_path / "dmd", [{"stage": "sparse", "step": 2, "dmd_on_G": 1.0},
                                {"stage": "distill", "step": 2, "dmd_on_A": 1.0, "dmd_on_B": 0.0},
                                {"stage": "distill", "step": 4, "dmd_on_A": 0.0, "dmd_on_B": 0.0}])
    assert dmd_on_rate(tmp_path / "dmd") == 0.25
    assert variant_overrides("dmd-random", {"dmd": tmp_path / "dmd"}) == [
        "discriminator.mode=dmd", "discriminator.dmd.schedule=random", "discriminator.dmd.random_on_rate=0.25"]
    assert variant_overrides("dmd", {}) == ["discriminator.mode=dmd", "discriminator.dmd.measure=features",
                                            "discriminator.dmd.schedule=retardation"]
    with pytest.raises(GanCompressError, match=r"^variant dmd-random: needs the 'dmd' variant's measured mask "
                                               r"on-rate .*--variants dmd dmd-random\)$"):
        variant_overrides("dmd-random", {})
    _metrics(tmp_path / "plain", [{"stage": "distill", "step": 2, "S_D": 1.0}])
    with pytest.raises(GanCompressError, match="needs the 'dmd' variant's measured mask on-rate"):
        variant_overrides("dmd-random", {"dmd": tmp_path / "plain"})


@pytest.mark.slow
def test_two_variants_share_stages_one_and_two(tiny_raw, tmp_path):
    tiny_raw["discriminator"]["dmd"] = {"interval": 2, "samples": 2}
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_raw))
    keys = ["none", "dmd", "dmd-random"]
    folder, results = run_ablation(str(recipe), [], keys, tmp_path / "abl", resume=False, device="cpu")

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
    # dmd-random: where the recipe schema has DMD's random schedule it runs at dmd's measured rate;
    # where it has not, that variant alone fails in one line naming the key.
    rnd = results["variants"]["dmd-random"]
    if "error" in rnd:
        assert rnd["error"].startswith("variant dmd-random: ") and "discriminator.dmd.schedule" in rnd["error"]
        assert "\n" not in rnd["error"] and not (folder / "dmd-random").exists()
    else:
        dmd_random = yaml.safe_load((folder / "dmd-random" / "recipe.yaml").read_text())["discriminator"]["dmd"]
        assert dmd_random["schedule"] == "random" and dmd_random["random_on_rate"] == pytest.approx(g["dmd_on_share"])
    table = (folder / "ablation.md").read_text().splitlines()
    assert len(table) == 5 and table[2].startswith("| no discriminator") and table[3].startswith("| DMD |")
    assert table[4].startswith("| DMD mask at random")
    assert json.loads((folder / "ablation.json").read_text())["variants"].keys() == set(keys)

    # A second run into the same folder refuses; --resume finds every variant done.
    with pytest.raises(RecipeError, match="--resume"):
        run_ablation(str(recipe), [], ["none", "dmd"], tmp_path / "abl", resume=False, device="cpu")
    _, again = run_ablation(str(recipe), [], ["none", "dmd"], tmp_path / "abl", resume=True, device="cpu")
    assert again["variants"]["dmd"]["generators"] == results["variants"]["dmd"]["generators"]


def _figures(student: float, teacher: float, active: float) -> dict:
    return {"G": {"student": {"miou": student}, "teacher": {"miou": teacher}, "student_gmacs": 0.0228,
                  "active_fraction": active, "dmd_on_share": None}}


def test_table_shows_metrics_macs_and_active_channels():
    results = {"seeds": [0], "variants": {"gcc": {"label": "selective D (full GCC)",
                                                  "spread": spread_summary([_figures(50.25, 52.5, 0.75)])}}}
    lines = markdown_table(results).splitlines()
    assert lines[0] == ("| variant | student miou | teacher miou | student GMACs | active channels (final) | "
                        "DMD mask on |")
    assert lines[2] == "| selective D (full GCC) | 50.25 | 52.5 | 0.0228 | 75 % | - |"


def test_table_over_seeds_shows_mean_std_and_the_spread_verdict():
    # gcc: 50 and 52 (mean 51, std 1.41); plain: 46 and 47 (mean 46.5, std 0.71): 4.5 > 2.12, a
    # difference; none: 50 and 51 (mean 50.5, std 0.71): 0.5 < 2.12, within spread.
    results = {"seeds": [0, 1], "variants": {
        "none": {"label": "no D", "spread": spread_summary([_figures(50, 52, 0.5), _figures(51, 52, 0.5)])},
        "plain": {"label": "plain D", "spread": spread_summary([_figures(46, 52, 1.0), _figures(47, 52, 0.5)])},
        "gcc": {"label": "full GCC", "spread": spread_summary([_figures(50, 52, 0.6), _figures(52, 52, 0.8)])},
        "dmd-random": {"label": "DMD at random", "error": "variant dmd-random: no such key"}}}
    lines = markdown_table(results).splitlines()
    assert lines[0].endswith("| better than full GCC? (miou) |")
    assert lines[2] == "| no D | 50.5 ± 0.71 | 52 ± 0 | 0.0228 ± 0 | 50 ± 0 % | - | within spread (-0.5) |"
    assert lines[3].startswith("| plain D | 46.5 ± 0.71 |") and lines[3].endswith("| no (-4.5) |")
    assert lines[4].startswith("| full GCC | 51 ± 1.4 |") and lines[4].endswith("| 70 ± 14 % | - | - |")
    assert lines[5] == "| DMD at random | failed: variant dmd-random: no such key | - | - | - | - | - |"
    assert "|mean_a - mean_b| > std_a + std_b" in lines[-1]


def test_tool_reports_a_bad_variant_in_one_line():
    # PYTHONPATH: the tool runs this checkout's package, not whichever one is installed.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "ablate.py"), "recipes/demo/pix2pix.yaml",
                           "--variants", "nope"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gancompress: error: --variants: unknown variant 'nope' (valid: none, plain, selective-local, gcc, dmd, "
        "dmd-output, dmd-random, selective+dmd, glead)"]
