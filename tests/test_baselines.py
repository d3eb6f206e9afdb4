"""gancompress baselines: does the distillation pay? One teacher, shared stages 1-2, every row on the
same seeds, paired differences with bootstrap intervals, the result as JSON and tables from it."""
import json
from pathlib import Path

import pytest
import torch
import yaml

import gancompress.experiments.baselines.rows as rows_module
import gancompress.experiments.baselines.teacher as teacher_module
import gancompress.run.stage_runs as stage_runs
from gancompress.cli import main
from gancompress.errors import RecipeError
from gancompress.experiments.baselines import run_baselines
from gancompress.experiments.baselines.protocol import quick_keys
from gancompress.experiments.baselines.report import headroom, render_markdown, targets
from gancompress.experiments.baselines.rows import resolve_rows, small_pretrain_epochs
from gancompress.experiments.baselines.stats import paired_difference
from gancompress.experiments.benchmark import nearest_uniform_width
from gancompress.export.generator import load_generator
from gancompress.families import get_family
from gancompress.families.recipe import load_recipe, recipe_from_dict
from gancompress.metrics.macs import count_macs

# --- paired statistics ---------------------------------------------------------------------------


def test_paired_difference_is_the_mean_per_seed_difference_with_a_bootstrap_interval():
    a, b = {0: 3.0, 1: 5.0, 2: 4.0, 3: 6.0}, {0: 1.0, 1: 2.0, 2: 2.0, 3: 3.0}
    d = paired_difference(a, b, higher_is_better=True, resamples=2000)
    assert d["per_seed"] == {"0": 2.0, "1": 3.0, "2": 2.0, "3": 3.0}
    assert d["mean"] == pytest.approx(2.5)
    assert 2.0 <= d["ci_low"] < 2.5 < d["ci_high"] <= 3.0
    assert d == paired_difference(a, b, higher_is_better=True, resamples=2000)  # reproducible
    # FID: lower is better, so a row with the lower FID comes out positive
    fid = paired_difference({0: 10.0, 1: 12.0}, {0: 15.0, 1: 14.0}, higher_is_better=False, resamples=500)
    assert fid["mean"] == pytest.approx(3.5) and fid["ci_low"] == pytest.approx(2.0) and fid["ci_high"] == 5.0
    one = paired_difference({0: 1.0}, {0: 0.5}, higher_is_better=True, resamples=100)
    assert one["ci_low"] == one["ci_high"] == one["mean"] == 0.5
    assert paired_difference({0: 1.0}, {1: 2.0}, higher_is_better=True)["mean"] is None  # no common seed


def test_an_interval_straddling_zero_is_not_a_win():
    d = paired_difference({0: 1.0, 1: -1.0, 2: 0.5}, {0: 0.0, 1: 0.0, 2: 0.0}, higher_is_better=True, resamples=2000)
    assert d["ci_low"] < 0 < d["ci_high"]


def _entry(gcc, finetune, head="psnr", teacher=None, bicubic=None):
    def metric(values):
        return {"metrics": {head: {"per_seed": {str(i): v for i, v in enumerate(values)},
                                   "mean": sum(values) / len(values), "std": 0.1}}}
    e = {"headline": head, "rows": {"gcc": metric(gcc), "pruned-finetune": metric(finetune)},
         "paired": {"gcc - pruned-finetune": {head: paired_difference(
             dict(enumerate(gcc)), dict(enumerate(finetune)), higher_is_better=head != "fid", resamples=500)}},
         "teacher": {"metrics": {}}, "references": {}}
    if teacher is not None:
        e["teacher"] = {"metrics": {head: {"mean": teacher[0], "std": teacher[1]}}}
    if bicubic is not None:
        e["references"] = {"bicubic": {"metrics": {"psnr": {"mean": bicubic}}}}
    return e


def test_targets_are_judged_on_the_figures():
    met = targets("pix2pix", _entry([2.0, 2.2, 2.1], [1.0, 1.1, 1.0], head="miou"))
    assert met[0]["met"] is True and met[0]["value"][0] > 0
    assert targets("pix2pix", _entry([1.0, 1.2, 0.9], [1.0, 1.1, 1.0], head="miou"))[0]["met"] is False
    sr = targets("srgan", _entry([25.5, 25.6], [25.1, 25.4], bicubic=25.0))
    assert [t["met"] for t in sr] == [True, False]  # pruned-finetune's 25.1 is under bicubic + 0.3
    assert sr[1]["value"] == {"gcc": pytest.approx(0.5), "pruned-finetune": pytest.approx(0.1)}
    sagan = targets("sagan", _entry([40.0, 42.0], [50.0, 50.0], head="fid", teacher=(39.0, 2.5)))
    assert sagan[0]["met"] is True
    assert targets("sagan", _entry([50.0, 52.0], [50.0, 50.0], head="fid", teacher=(39.0, 2.5)))[0]["met"] is False


def test_headroom_says_whether_the_teacher_beats_finetuning_alone():
    def entry(teacher, finetune):
        d = paired_difference(dict(enumerate(teacher)), dict(enumerate(finetune)), higher_is_better=False,
                              resamples=500)
        return {"headline": "fid", "paired": {"teacher - pruned-finetune": {"fid": d}}}
    # FID: the teacher at 3.1 on every seed, the fine-tuned students around it -> nothing to distil
    flat = headroom(entry([3.1] * 3, [3.0, 3.3, 2.9]))
    assert flat["teacher_better"] is False and flat["interval"][0] < 0
    room = headroom(entry([3.1] * 3, [5.0, 6.1, 5.5]))
    assert room["teacher_better"] is True and room["mean"] == pytest.approx(2.433, abs=1e-3)
    assert headroom({"headline": "fid", "paired": {}}) is None


def test_the_recorded_command_keeps_threads_and_a_results_folder():
    import argparse

    from gancompress.commands import baselines as command
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["r.yaml", "--set", "seed=3", "--results", "runs/probe", "--seeds", "2"])
    args.threads = 2
    assert command.command_line(args) == ("gancompress --threads 2 baselines r.yaml --set seed=3 --seeds 2 "
                                          "--results runs/probe")
    plain = parser.parse_args(["r.yaml"])  # the default folder and no --threads: neither is written
    assert command.command_line(plain) == "gancompress baselines r.yaml"


def test_quick_mode_shortens_every_stage(tiny_raw):
    r = recipe_from_dict(tiny_raw, "tiny.yaml", ["distill.epochs_const=40", "distill.epochs_decay=20",
                                                 "sparse.epochs=10", "train.pretrain_epochs=8",
                                                 "baselines.quick_length=0.25"])
    assert quick_keys(r) == {"baselines.teacher_epochs": 30, "sparse.epochs": 3, "distill.epochs_const": 10,
                             "distill.epochs_decay": 5, "train.pretrain_epochs": 2,
                             "distill.student_pretrain_epochs": 0}


def test_unknown_row_lists_the_valid_ones(capsys):
    with pytest.raises(RecipeError, match=r"unknown row 'tiny' \(valid: small-scratch, pruned-finetune, kd, gcc\)"):
        resolve_rows(["tiny"])
    assert resolve_rows(["gcc", "small-scratch"]) == ["small-scratch", "gcc"]
    assert main(["baselines", "recipes/demo/pix2pix.yaml", "--rows", "nope"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "gancompress: error: --rows: unknown row 'nope' (valid: small-scratch, pruned-finetune, kd, gcc)"]


def test_small_scratch_gets_the_pretraining_the_pruned_rows_got(tiny_raw):
    def epochs(*over):
        return small_pretrain_epochs(recipe_from_dict(tiny_raw, "tiny.yaml", list(over)))
    assert epochs() == 0
    assert epochs("distill.student_pretrain_epochs=7") == 7  # stage pretrain_P
    scratch = ["pretrained.generators={G: g.pt}", "pretrained.sparse=scratch", "distill.teacher=frozen",
               "train.pretrain_epochs=5"]
    assert epochs(*scratch) == 0  # a re-initialised student loses the sparse model's pre-training
    assert epochs(*scratch, "prune.inherit_weights=true") == 5  # ... an inheriting one keeps it


# --- the whole protocol on the tiny recipe ------------------------------------------------------------

def _tiny_recipe(tiny_raw, tmp_path) -> Path:
    tiny_raw["data"]["max_items"] = 4                      # 2 iterations an epoch at batch 2
    tiny_raw["distill"].update({"epochs_const": 1, "epochs_decay": 0})
    tiny_raw["sparse"]["epochs"] = 1
    tiny_raw["baselines"] = {"teacher_epochs": 2, "seeds": 2, "bootstrap_resamples": 200}
    tiny_raw["train"]["checkpoint_every"] = 100           # at the end of each stage only
    tiny_raw["prune"].update({"tolerance": 0.2, "inherit_weights": True})
    tiny_raw["output_dir"] = str(tmp_path / "runs")
    tiny_raw["eval"].update({"latency": False, "latency_iters": 2})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    return path


def _clone(module_dict) -> dict:
    return {k: v.detach().clone() for k, v in module_dict.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_one_teacher_shared_stages_every_row_on_the_same_seeds_json_and_resume(tiny_raw, tmp_path, monkeypatch):
    recipe = _tiny_recipe(tiny_raw, tmp_path)
    trained, starts = [], {}

    def counting(real):
        def wrapper(stage, *args, **kwargs):
            trained.append(stage.name)
            return real(stage, *args, **kwargs)
        return wrapper

    real_make, real_gan = stage_runs.make_distill_stage, rows_module.GANStage

    def make_distill_stage(*args, **kwargs):
        stage = real_make(*args, **kwargs)
        starts.setdefault("distill", []).append((_clone(stage.s_gens), _clone(stage.t_gens)))
        return stage

    def gan_stage(*args, **kwargs):
        stage = real_gan(*args, **kwargs)
        starts.setdefault("gan", []).append(_clone(stage.gens))
        return stage

    for module in (stage_runs, rows_module, teacher_module):
        monkeypatch.setattr(module, "train_stage", counting(module.train_stage))
    monkeypatch.setattr(stage_runs, "make_distill_stage", make_distill_stage)
    monkeypatch.setattr(rows_module, "GANStage", gan_stage)
    monkeypatch.setattr(rows_module, "LATENCY_ROUNDS", 1)

    results = tmp_path / "results"
    folder, result = run_baselines(str(recipe), [], out_dir=tmp_path / "bl", device="cpu", results_dir=results,
                                   command="gancompress baselines tiny.yaml")

    # One teacher, stages 1-2 once, then per seed: gcc and kd distil, pruned-finetune and small-scratch train plainly.
    assert trained == ["teacher", "sparse"] + ["distill", "distill", "gan", "gan"] * 2
    assert result["seeds"] == [0, 1]
    g = result["generators"]["G"]
    assert list(g["rows"]) == ["small-scratch", "pruned-finetune", "kd", "gcc"]
    for key, row in g["rows"].items():
        assert set(row["metrics"]["psnr"]["per_seed"]) == {"0", "1"}
    # The same start for every pruned row of a seed; the frozen shared teacher for both distilling rows.
    for s in range(2):
        (gcc_s, gcc_t), (kd_s, kd_t) = starts["distill"][2 * s], starts["distill"][2 * s + 1]
        finetune = starts["gan"][2 * s]
        assert _equal(gcc_s, kd_s) and _equal(gcc_s, finetune) and _equal(gcc_t, kd_t)
    t_recipe = load_recipe(folder / "seed-0" / "gcc" / "recipe.yaml")
    assert t_recipe.route == "pretrained-finetune" and t_recipe.distill.teacher == "frozen"
    teacher, _ = load_generator(t_recipe.pretrained.generators["G"])
    assert _equal(starts["distill"][0][1], {f"G.{k}": v for k, v in teacher.state_dict().items()})

    # Paired differences, signed so that positive means the first row is better, with an interval.
    d = g["paired"]["gcc - pruned-finetune"]["psnr"]
    per_seed = {s: g["rows"]["gcc"]["metrics"]["psnr"]["per_seed"][s] - g["rows"]["pruned-finetune"]["metrics"]["psnr"]
                ["per_seed"][s] for s in ("0", "1")}
    assert d["per_seed"] == pytest.approx(per_seed)
    assert d["ci_low"] <= d["mean"] <= d["ci_high"]
    assert set(g["paired"]) >= {"gcc - pruned-finetune", "gcc - kd", "gcc - small-scratch"}
    # small-scratch is the uniform net of nearest MACs, with stage 1's updates on top of stage 3's
    r = load_recipe(recipe)
    family = get_family(r.family)(r)
    budget = r.prune.budget_for("G").macs(stage_runs.teacher_macs(family, "G").complete)
    width, macs = nearest_uniform_width(family, "G", budget, max(r.model.ngf_teacher, r.model.ngf_student))
    scratch, meta = load_generator(folder / "seed-0" / "small-scratch" / "student" / "generator_G.pt")
    assert meta["ngf"] == width and count_macs(scratch, family.example_input("G", 1)).complete == macs
    assert g["rows"]["small-scratch"]["iterations"] == [4] and g["rows"]["pruned-finetune"]["iterations"] == [2]
    # the sparse model and the pruned net are scored before anything trains them
    assert g["sparse_model"]["metrics"]["psnr"]["mean"] is not None
    assert g["pruned_before_finetune"]["metrics"]["psnr"]["mean"] is not None

    # The data: in the folder and in the results folder, with the command, machine and commit; the
    # tables are rendered from the JSON alone.
    stored = json.loads((results / "baselines_pix2pix.json").read_text())
    assert stored == json.loads((folder / "baselines.json").read_text())
    assert stored["settings"]["command"] == "gancompress baselines tiny.yaml"
    assert stored["settings"]["machine"]["cpu_count"] and "commit" in stored["settings"]["commit"]
    assert render_markdown(stored) == (results / "baselines_pix2pix.md").read_text()
    assert "| gcc - pruned-finetune |" in render_markdown(stored)

    # Again: refused without --resume; a changed recipe refused; with --resume every row is read back and
    # the cached teacher is not trained again.
    with pytest.raises(RecipeError, match="--resume"):
        run_baselines(str(recipe), [], out_dir=tmp_path / "bl", device="cpu", results_dir=results)
    with pytest.raises(RecipeError, match=r"--resume: distill.gamma_t changed"):
        run_baselines(str(recipe), ["distill.gamma_t=3"], out_dir=tmp_path / "bl", resume=True, device="cpu",
                      results_dir=results)
    trained.clear()
    _, again = run_baselines(str(recipe), [], out_dir=tmp_path / "bl", resume=True, device="cpu", results_dir=results)
    assert trained == []
    assert again["generators"]["G"]["rows"]["gcc"]["metrics"] == g["rows"]["gcc"]["metrics"]
    # Another folder with the same teacher settings reuses the cached teacher.
    run_baselines(str(recipe), [], out_dir=tmp_path / "bl2", device="cpu", results_dir=results, rows=["gcc"],
                  seeds=1)
    assert "teacher" not in trained and trained.count("sparse") == 1


def test_resume_takes_a_key_added_since_the_run_started_at_its_default(tiny_recipe, tmp_path):
    """A run folder written before a key existed resumes; a setting that really changed does not."""
    from dataclasses import replace

    from gancompress.config import recipe_to_dict
    from gancompress.errors import RecipeError
    from gancompress.experiments.baselines import _check_folder

    old = recipe_to_dict(tiny_recipe)
    del old["eval"]["runtime_max_time"]  # as a recipe.yaml of an older version holds it
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(yaml.safe_dump(old))
    _check_folder(folder, tiny_recipe, resume=True)
    with pytest.raises(RecipeError, match="seed changed"):
        _check_folder(folder, replace(tiny_recipe, seed=5), resume=True)


def test_a_run_that_outlasts_a_commit_names_both():
    import copy

    from gancompress.experiments.baselines.report import render_markdown

    result = json.loads(Path("docs/results/baselines_srgan.json").read_text())
    start = result["settings"]["commit"]["commit"]
    assert f"Commit {start};" in render_markdown(result) or f"Commit {start} (with" in render_markdown(result)
    later = copy.deepcopy(result)
    later["settings"]["commit"] = {"commit": "a" * 40, "dirty": False}
    later["settings"]["commit_at_end"] = {"commit": "b" * 40, "dirty": True}
    text = render_markdown(later)
    assert f"Commit {'a' * 40} at the start, {'b' * 40} (with uncommitted changes) at the end;" in text
    assert "commit_at_end" not in text  # not listed among the settings


def test_each_generator_lists_its_own_mask_points():
    from gancompress.experiments.baselines.report import render_markdown

    result = json.loads(Path("docs/results/baselines_cyclegan.json").read_text())
    text = render_markdown(result)
    sections = text.split("## Generator ")[1:]
    assert [s.split("\n", 1)[0] for s in sections] == ["AtoB", "BtoA"]
    lowest = [next(line for line in s.split("\n") if "lowest active fraction" in line) for s in sections]
    for name, line in zip(("AtoB", "BtoA"), lowest):
        # one entry per seed, from that generator's own log key
        assert line.count("seed ") == len(result["seeds"])
        for seed in result["seeds"]:
            d = result["generators"][name]["rows"]["gcc"]["diagnostics"][str(seed)]
            assert "/".join(f"{x:.2g}" for x in d[f"active_{name}"]["lowest"]) in line
    assert lowest[0] != lowest[1]
