import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gancompress.config.sections import Budget
from gancompress.errors import RecipeError
from gancompress.families.recipe import load_recipe, recipe_from_dict
from gancompress.system.threads import child_env

ROOT = Path(__file__).resolve().parents[1]


def _error(raw, overrides=()):
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(raw, "r.yaml", overrides)
    return str(info.value)


def test_wrong_type_names_file_and_key_path(tiny_raw):
    tiny_raw["distill"]["gamma_t"] = "abc"
    assert _error(tiny_raw) == "r.yaml: distill.gamma_t: expected a number, got 'abc'"


def test_unknown_key_lists_valid_keys(tiny_raw):
    tiny_raw["distill"]["gama_t"] = 1.0
    msg = _error(tiny_raw)
    assert msg.startswith("r.yaml: distill.gama_t: unknown key")
    assert "gamma_t" in msg


def test_missing_required_key(tiny_raw):
    del tiny_raw["name"]
    assert _error(tiny_raw) == "r.yaml: name: required key is missing"


def test_family_model_section_is_checked_by_the_family(tiny_raw):
    tiny_raw["model"]["ngf_teacher"] = 1.5
    assert "model.ngf_teacher: expected an integer" in _error(tiny_raw)


def test_unknown_family_lists_valid_ones(tiny_raw):
    tiny_raw["family"] = "stylegan9"
    assert "pix2pix" in _error(tiny_raw)


@pytest.mark.parametrize("key,value,needle", [
    (("discriminator", "tau"), 1.5, "discriminator.tau: must be <= 1"),
    (("prune", "budget"), -2.0, "prune.budget: a GMACs budget must be a positive number"),
    (("prune", "budget"), "150%", "prune.budget: a ratio budget must lie in"),
    (("prune", "budget"), 1e300, "prune.budget: a GMACs budget must be a positive number below"),
    (("seed",), 2**63, "seed: must be <= "),
    (("data", "batch_size"), 0, "data.batch_size: must be >= 1"),
    (("train", "gan_loss"), "wasserstein", "train.gan_loss: expected one of"),
])
def test_out_of_range_values(tiny_raw, key, value, needle):
    if len(key) == 1:
        tiny_raw[key[0]] = value
    else:
        tiny_raw[key[0]][key[1]] = value
    assert needle in _error(tiny_raw)


def test_overrides_are_typed_and_checked(tiny_raw):
    recipe = recipe_from_dict(tiny_raw, "r.yaml", ["distill.gamma_t=1e3", "prune.budget=0.5"])
    assert recipe.distill.gamma_t == 1000.0
    assert recipe.prune.budget == Budget("gmacs", 0.5)
    assert "distill.nope: unknown key" in _error(tiny_raw, ["distill.nope=1"])


DEMO = ROOT / "recipes" / "demo" / "pix2pix.yaml"


def test_an_empty_override_is_the_empty_string_for_string_keys():
    recipe = load_recipe(DEMO, ["eval.segmenter=", "data.train_split= ", "pretrained.generators.G="])
    assert recipe.eval.segmenter == "" and recipe.data.train_split == ""
    assert recipe.pretrained.generators == {"G": ""}
    assert load_recipe(DEMO, ["eval.segmenter=''"]).eval.segmenter == ""


@pytest.mark.parametrize("assignment,instead", [
    ("data.num_workers=", "write --set data.num_workers=null for none"),
    ("classifier.paths=", "write --set classifier.paths=[] for an empty list"),
    ("eval.latency=", "takes true or false, not the empty string; write a value after '='"),
    ("model.ngf_student=", "takes an integer, not the empty string"),
])
def test_an_empty_override_of_a_key_that_takes_no_string_is_one_line(assignment, instead):
    with pytest.raises(RecipeError) as info:
        load_recipe(DEMO, [assignment])
    message = str(info.value)
    assert message.startswith(f"--set {assignment}: nothing after '='") and instead in message
    assert "\n" not in message and "got None" not in message


def test_an_empty_override_of_an_unknown_key_says_unknown_key():
    with pytest.raises(RecipeError, match="distill.nope: unknown key"):
        load_recipe(DEMO, ["distill.nope="])


def test_budget_forms():
    assert Budget.from_raw(3.0) == Budget("gmacs", 3.0)
    assert Budget.from_raw("25%") == Budget("ratio", 0.25)
    assert Budget.from_raw("25%").macs(4_000_000_000) == 1_000_000_000
    assert Budget.from_raw("3").macs(1) == 3_000_000_000
    for raw in (3.0, "25%"):
        assert Budget.from_raw(Budget.from_raw(raw).to_raw()) == Budget.from_raw(raw)
    with pytest.raises(ValueError):
        Budget.from_raw("lots")


def test_recipe_is_frozen(tiny_recipe):
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_recipe.distill.gamma_t = 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_recipe.model.ngf_student = 3
    assert tiny_recipe.distill.gamma_t != 3.0


def test_shipped_recipes_load():
    recipes = {str(p.relative_to(ROOT / "recipes")): load_recipe(p) for p in sorted((ROOT / "recipes").rglob("*.yaml"))}
    assert len(recipes) >= 10
    for where, recipe in recipes.items():
        assert recipe.name and where.split("/")[-1].startswith(recipe.family)  # files are named <family>_...
    city = recipes["pix2pix_cityscapes.yaml"]  # GCC's Table I, Pix2Pix row
    assert (city.family, city.model.ngf_teacher, city.model.ngf_student) == ("pix2pix", 64, 32)
    assert (city.distill.gamma_m, city.distill.gamma_t, city.train.gan_loss) == (50, 1e4, "hinge")
    assert city.prune.budget.kind == "gmacs" and city.prune.budget.value == 3.0
    assert city.discriminator.tau == 0.5
    horse = recipes["cyclegan_horse2zebra.yaml"]
    assert horse.prune.budget_for("AtoB").value == 2.4 and horse.prune.budget_for("BtoA").value == 2.7
    assert horse.discriminator.tau == 0.1 and horse.train.gan_loss == "lsgan"
    assert recipes["srgan_coco.yaml"].train.gan_loss == "vanilla"
    assert recipes["demo/pix2pix.yaml"].data.root.endswith("demo_data/pix2pix")


def test_bad_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


@pytest.mark.slow
def test_cli_user_error_is_one_line_and_nonzero(tmp_path, tiny_raw):
    tiny_raw["distill"]["gamma_t"] = "abc"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "compress.py"), str(path)],
                          capture_output=True, text=True, cwd=tmp_path, env=child_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"gancompress: error: {path}: distill.gamma_t: expected a number, got 'abc'"]


@pytest.mark.slow
def test_cityscapes_dry_run_prints_teacher_macs_and_budget():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "compress.py"),
                           str(ROOT / "recipes" / "pix2pix_cityscapes.yaml"), "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT, env=child_env(PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert "18.15 GMACs (thop)" in proc.stdout
    assert "budget G: 3 GMACs" in proc.stdout
