"""Compress the model you already have: a pytorch-CycleGAN-and-pix2pix generator through each route.

The user's file is written here by the reference nets (tests/reference_cyclegan.py), in the
layout of the real code's ``latest_net_G.pth``; the runs are the tiny pix2pix recipe's.
"""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from reference_cyclegan import RefNLayerD, RefResnet, RefUnet, randomise

from gancompress.export.generator import load_generator
from gancompress.families import get_family
from gancompress.families.recipe import recipe_from_dict
from gancompress.pretrained.loading import load_pretrained_generator
from gancompress.run.pipeline import compress, describe

pytestmark = pytest.mark.slow

NETS = {"unet": lambda: RefUnet(3, 3, 5, 8, norm="batch", dropout=True),
        "resnet": lambda: RefResnet(3, 3, 8, 2, norm="batch", dropout=False)}
ROUTES = [("finetune", "continue"), ("skip", "frozen"), ("finetune", "frozen")]


def _user_files(tmp_path, net: str, with_d: bool):
    g = randomise(NETS[net](), seed=1).eval()
    g_path = tmp_path / "latest_net_G.pth"
    torch.save(g.state_dict(), g_path)
    files = {"generators": {"G": str(g_path)}}
    if with_d:
        d_path = tmp_path / "latest_net_D.pth"
        torch.save(randomise(RefNLayerD(6, 8, 3, "batch"), seed=2).state_dict(), d_path)
        files["discriminators"] = {"G": str(d_path)}
    return g, files


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("sparse,teacher", ROUTES)
def test_a_pretrained_generator_goes_through_each_route(tiny_raw, tmp_path, net, sparse, teacher):
    ref, files = _user_files(tmp_path, net, with_d=sparse == "finetune")
    tiny_raw["model"].update({"netG": net, "n_blocks": 2, "dropout": net == "unet"})
    tiny_raw["pretrained"] = {**files, "sparse": sparse}
    tiny_raw["distill"]["teacher"] = teacher
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml")
    assert recipe.route == ("pretrained-finetune" if sparse == "finetune" else "pretrained-prune")
    text = describe(recipe)
    assert f"route: {recipe.route}" in text and "pretrained.generators.G" in text
    run = tmp_path / "run"
    report = compress(recipe, run, device="cpu")

    route = report["route"]
    assert route["name"] == recipe.route and route["teacher"] == teacher
    given = route["pretrained"][0]
    assert given["file"] == files["generators"]["G"]
    assert given["sha256"] == hashlib.sha256(open(given["file"], "rb").read()).hexdigest()

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    t, _ = load_generator(run / "teacher" / "generator_G.pt")
    with torch.no_grad():
        same = torch.equal(t(x), ref(x))
    assert same == (teacher == "frozen")  # a frozen teacher is the user's model, bit for bit
    sparse_gens = torch.load(run / "sparse" / "model.pt", weights_only=True)["gens"]
    user, _ = load_pretrained_generator(files["generators"]["G"], get_family("pix2pix")(recipe), "G", 8)
    unchanged = all(torch.equal(sparse_gens[f"G.{k}"], v) for k, v in user.items())
    assert unchanged == (sparse == "skip")  # 'skip' prunes the user's weights as they are
    g = report["generators"]["G"]
    assert g["student_within_budget"] and g["student"]["macs_complete"] < g["teacher"]["macs_complete"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    distill_rows = [r for r in rows if r["stage"] == "distill"]
    # the teacher's D trains in stage 3 unless it came trained (a D file, or stage 1's)
    assert ("T_D" in distill_rows[-1]) == (teacher == "continue" or sparse == "skip")
    assert bool([r for r in rows if r["stage"] == "sparse"]) == (sparse == "finetune")


def test_a_pretrained_teacher_teaches_a_fresh_narrower_sparse_model(tiny_raw, tmp_path):
    """Route pretrained-scratch (GCC's setting with a given teacher): stage 1 trains a new sparse
    model at model.ngf_student, the user's wider generator teaches in stage 3, frozen."""
    ref, files = _user_files(tmp_path, "unet", with_d=True)
    tiny_raw["pretrained"] = {**files, "sparse": "scratch"}
    tiny_raw["distill"]["teacher"] = "frozen"
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", ["model.ngf_student=6", "prune.budget=20%"])
    assert recipe.route == "pretrained-scratch" and recipe.teacher_ngf == 8
    run = tmp_path / "run"
    report = compress(recipe, run, device="cpu")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    t, meta = load_generator(run / "teacher" / "generator_G.pt")
    with torch.no_grad():
        assert torch.equal(t(x), ref(x))  # the user's model teaches, bit for bit
    sparse = torch.load(run / "sparse" / "model.pt", weights_only=True)["gens"]
    assert sparse["G.downs.0.0.weight"].shape[0] == 6  # the fresh sparse model's width
    g = report["generators"]["G"]
    assert g["student_within_budget"] and g["teacher"]["macs_complete"] > 4 * g["student"]["macs_complete"]


def test_the_route_settings_are_checked_before_training(tiny_raw, tmp_path):
    from gancompress.errors import GanCompressError, RecipeError
    _, files = _user_files(tmp_path, "unet", with_d=False)
    tiny_raw["pretrained"] = files
    with pytest.raises(GanCompressError, match="distill.teacher: scratch re-initialises the teacher"):
        compress(recipe_from_dict(tiny_raw, "tiny.yaml"), tmp_path / "a", device="cpu")
    tiny_raw["distill"]["teacher"] = "frozen"
    with pytest.raises(GanCompressError, match="model.ngf_student: with pretrained.sparse: finetune"):
        compress(recipe_from_dict(tiny_raw, "tiny.yaml", ["model.ngf_student=6"]), tmp_path / "b", device="cpu")
    with pytest.raises(GanCompressError, match="to load it set model.num_downs: 5 \\(now 6\\)"):
        compress(recipe_from_dict(tiny_raw, "tiny.yaml", ["model.num_downs=6", "data.crop_size=64",
                                                          "data.load_size=64"]), tmp_path / "c", device="cpu")
    with pytest.raises(RecipeError, match="pretrained.generators.X: the pix2pix family has no generator"):
        recipe_from_dict(tiny_raw, "tiny.yaml", ["pretrained.generators={X: a.pth}"])
    assert not any((tmp_path / d).exists() for d in "abc")
