"""gancompress baselines: the student against small nets trained directly, over seeds."""
import json
from pathlib import Path

import pytest
import torch
import yaml

import gancompress.experiments.baselines.rows as baselines
import gancompress.run.pipeline as pipeline
import gancompress.run.report as run_report
from gancompress.cli import main
from gancompress.errors import RecipeError
from gancompress.experiments.baselines import run_baselines
from gancompress.experiments.baselines.report import markdown_table, summarise
from gancompress.experiments.baselines.rows import TEACHER_ROW, resolve_rows
from gancompress.experiments.benchmark import nearest_uniform_width
from gancompress.experiments.seeds import Spread, compare, differs, seed_schedule, within_std
from gancompress.export.generator import load_generator
from gancompress.families import get_family
from gancompress.families.recipe import load_recipe
from gancompress.metrics.macs import count_macs

# --- the spread rule ------------------------------------------------------------------------------

def test_spread_is_mean_and_sample_std():
    s = Spread.of([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert s.format() == "2 ± 1"
    one = Spread.of([5.0])
    assert one.std is None and one.format() == "5"
    assert Spread.from_dict(s.as_dict()) == s
    assert seed_schedule(7, 3) == [7, 8, 9]


def test_difference_only_beyond_both_spreads():
    a, b = Spread.of([10.0, 12.0]), Spread.of([13.0, 15.0])   # means 11 and 14, stds 1.414 each
    near = Spread.of([12.0, 14.0])                              # mean 13: 2 < 2.83
    assert differs(a, b) is True and differs(a, near) is False
    assert differs(a, Spread.of([30.0])) is None                # one seed: no spread to judge by
    assert compare("psnr", b, a) == "yes (+3)"
    assert compare("psnr", a, b) == "no (-3)"
    assert compare("psnr", near, a) == "within spread (+2)"
    assert compare("fid", a, b) == "yes (-3)"                   # FID: lower is better
    assert compare("psnr", Spread.of([14.0]), a) == "one seed, no spread (+3)"


def test_within_one_teacher_std():
    teacher = Spread.of([20.0, 22.0])                           # mean 21, std 1.414
    assert within_std("psnr", Spread.of([20.0, 20.0]), teacher) == "yes (-1)"
    assert within_std("psnr", Spread.of([19.0, 19.0]), teacher) == "no, worse (-2)"
    assert within_std("psnr", Spread.of([23.0, 23.0]), teacher) == "no, better (+2)"
    assert within_std("fid", Spread.of([23.0, 23.0]), teacher) == "no, worse (+2)"
    assert within_std("psnr", Spread.of([21.0]), Spread.of([21.0])) == "one seed, no spread (+0)"


# --- the table from fixed figures -----------------------------------------------------------------

def _record(student: float, macs: float, teacher: float | None = None) -> dict:
    def role(psnr):
        return {"metrics": {"psnr": psnr, "ssim": 0.5}, "macs": {"macs": macs, "macs_complete": macs, "params": 0.1},
                "file": "unused"}
    g = {"student": role(student), "references": {"bicubic": {"psnr": 17.0, "ssim": 0.4}}}
    if teacher is not None:
        g["teacher"] = role(teacher)
        g["teacher"]["macs"] = {"macs": 0.01, "macs_complete": 0.01, "params": 0.4}
    return {"generators": {"G": g}, "iterations": 8}


def test_summary_verdicts_speedup_and_table():
    records = {
        "small-scratch": {0: _record(18.0, 0.003), 1: _record(18.2, 0.003)},       # 18.1 ± 0.14
        "small-distill": {0: _record(18.1, 0.003, 20.0), 1: _record(18.3, 0.003, 20.2)},  # 18.2: within spread
        "gcc": {0: _record(19.0, 0.0031, 20.0), 1: _record(19.4, 0.0029, 20.4)},   # 19.2 ± 0.28: beats it
    }
    latency = {"small-scratch": {0: {"G": 2.0}, 1: {"G": 2.0}}, "small-distill": {0: {"G": 2.0}, 1: {"G": 2.0}},
               "gcc": {0: {"G": 2.4}, 1: {"G": 2.6}}, TEACHER_ROW: {0: {"G": 5.0}, 1: {"G": 5.0}}}
    summary = summarise(records, latency, ("G",))
    g = summary["G"]
    assert g["primary"] == "psnr" and g["keys"] == ["psnr", "ssim"]
    rows = g["rows"]
    assert rows["gcc"]["verdicts"]["psnr"]["beats_small_scratch"] == "yes (+1.1)"
    assert rows["small-distill"]["verdicts"]["psnr"]["beats_small_scratch"] == "within spread (+0.1)"
    assert "beats_small_scratch" not in rows["small-scratch"]["verdicts"]["psnr"]
    # gcc's own teachers: 20.2 ± 0.28; its students 1 below: not within one std.
    assert rows["gcc"]["verdicts"]["psnr"]["within_teacher_std"] == "no, worse (-1)"
    assert rows["gcc"]["verdicts"]["psnr"]["teacher_compared"] == "own"
    # small-scratch has no teacher: it is held against the teacher row (the gcc rows' teachers)
    assert rows["small-scratch"]["verdicts"]["psnr"]["teacher_compared"] == TEACHER_ROW
    assert rows[TEACHER_ROW]["student"]["psnr"].mean == pytest.approx(20.2)
    assert rows[TEACHER_ROW]["macs"]["complete"].mean == pytest.approx(0.01)
    assert rows["gcc"]["speedup_vs_teacher"] == pytest.approx(5.0 / 2.5)
    assert rows["bicubic"]["student"]["psnr"].mean == 17.0 and rows["bicubic"]["latency_ms"] is None

    lines = markdown_table(summary, list(records)).splitlines()
    assert lines[0].startswith("| row | student psnr | student ssim | teacher psnr | teacher ssim | GMACs (complete)")
    assert lines[0].endswith("| beats small-scratch? (psnr) | within one teacher std of teacher? (psnr) |")
    body = {line.split(" | ")[0][2:].split(":")[0]: line for line in lines[2:]}
    assert list(body) == ["small-scratch", "small-distill", "gcc", TEACHER_ROW, "bicubic"]
    assert "| 19.2 ± 0.28 | 0.5 ± 0 | 20.2 ± 0.28 |" in body["gcc"]
    assert "| 2.5 ± 0.14 | 2.00x | yes (+1.1) | no, worse (-1) |" in body["gcc"]
    assert body["small-scratch"].endswith("| - | no, worse (-2.1) vs the teacher row |")


def test_unknown_row_lists_the_valid_ones(capsys):
    with pytest.raises(RecipeError, match=r"unknown row 'tiny' \(valid: small-scratch, small-distill, "
                                          r"pruned-finetune, gcc\)"):
        resolve_rows(["tiny"])
    assert resolve_rows(["gcc", "small-scratch"]) == ["small-scratch", "gcc"]
    assert main(["baselines", "recipes/demo/pix2pix.yaml", "--rows", "nope"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "gancompress: error: --rows: unknown row 'nope' (valid: small-scratch, small-distill, pruned-finetune, gcc)"]


# --- the whole thing on the tiny recipe --------------------------------------------------------------

def _tiny_recipe(tiny_raw, tmp_path) -> Path:
    tiny_raw["data"]["max_items"] = 4                      # 2 iterations an epoch at batch 2
    tiny_raw["distill"].update({"epochs_const": 1, "epochs_decay": 0})
    tiny_raw["train"]["checkpoint_every"] = 100           # at the end of each stage only
    tiny_raw["prune"]["tolerance"] = 0.2                  # a shorter search: the test checks no budget
    tiny_raw["export"] = {"onnx": False, "torchscript": False}
    tiny_raw["eval"].update({"latency": False, "latency_iters": 2})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    return path


def _clone(module_dict) -> dict:
    return {k: v.detach().clone() for k, v in module_dict.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_every_row_two_seeds_shared_stages_once_and_resume(tiny_raw, tmp_path, monkeypatch):
    recipe = _tiny_recipe(tiny_raw, tmp_path)
    trained, pruned, distill_inits, gan_inits = [], [], [], []

    def counting_train_stage(real):
        def wrapper(stage, *args, **kwargs):
            trained.append(stage.name)
            return real(stage, *args, **kwargs)
        return wrapper

    real_prune, real_make, real_gan = pipeline.prune_generator, pipeline.make_distill_stage, baselines.GANStage

    def prune(*args, **kwargs):
        pruned.append(args[2])
        return real_prune(*args, **kwargs)

    def make_distill_stage(*args, **kwargs):
        stage = real_make(*args, **kwargs)
        distill_inits.append({"teacher": _clone(stage.t_gens), "teacher_d": _clone(stage.t_discs),
                              "student": _clone(stage.s_gens)})
        return stage

    def gan_stage(*args, **kwargs):
        stage = real_gan(*args, **kwargs)
        gan_inits.append(_clone(stage.gens))
        return stage

    monkeypatch.setattr(pipeline, "train_stage", counting_train_stage(pipeline.train_stage))
    monkeypatch.setattr(baselines, "train_stage", counting_train_stage(baselines.train_stage))
    monkeypatch.setattr(pipeline, "prune_generator", prune)
    monkeypatch.setattr(pipeline, "make_distill_stage", make_distill_stage)
    monkeypatch.setattr(baselines, "GANStage", gan_stage)
    monkeypatch.setattr(run_report, "_plots", lambda run: [])  # report.md's plots: seconds of matplotlib each
    monkeypatch.setattr(baselines, "LATENCY_ROUNDS", 1)

    folder, result = run_baselines(str(recipe), [], seeds=2, out_dir=tmp_path / "bl", device="cpu")

    # Stages 1 and 2 once per seed; stage 3's length once per trained row and seed.
    assert sorted(trained) == ["distill"] * 4 + ["gan"] * 4 + ["sparse"] * 2
    assert pruned == ["G", "G"]
    assert result["seeds"] == [0, 1]
    runs = result["runs"]
    assert set(runs) == {"small-scratch", "small-distill", "pruned-finetune", "gcc"}
    for key, by_seed in runs.items():
        assert set(by_seed) == {"0", "1"}
        for seed, record in by_seed.items():
            assert record["iterations"] == 2, (key, seed)   # 1 epoch of 2 batches, every row alike
            for role in ("student", "teacher") if key in ("gcc", "small-distill") else ("student",):
                g, meta = load_generator(record["generators"]["G"][role]["file"])  # rebuildable
                assert meta["recipe"].seed == int(seed)
    assert (folder / "seed-0" / "gcc" / "report.json").is_file()
    assert not (folder / "seed-0" / "pruned-finetune" / "sparse").exists()    # read from gcc's, not redone

    # The same starting points: per seed, distill stages are gcc then small-distill, GAN stages
    # pruned-finetune then small-scratch (the run order).
    for s in range(2):
        gcc, small_distill = distill_inits[2 * s], distill_inits[2 * s + 1]
        pruned_finetune, small_scratch = gan_inits[2 * s], gan_inits[2 * s + 1]
        assert _equal(gcc["teacher"], small_distill["teacher"]) and _equal(gcc["teacher_d"], small_distill["teacher_d"])
        assert _equal(gcc["student"], pruned_finetune)
        assert _equal(small_distill["student"], small_scratch)
    assert not _equal(distill_inits[0]["teacher"], distill_inits[2]["teacher"])   # another seed, other weights

    # small-scratch is the uniform width whose MACs are nearest the budget.
    r = load_recipe(recipe)
    family = get_family(r.family)(r)
    budget = r.prune.budget_for("G").macs(pipeline.teacher_macs(family, "G").complete)
    width, macs = nearest_uniform_width(family, "G", budget, max(r.model.ngf_teacher, r.model.ngf_student))
    scratch, meta = load_generator(runs["small-scratch"]["0"]["generators"]["G"]["student"]["file"])
    assert meta["ngf"] == width
    assert count_macs(scratch, family.example_input("G", 1)).complete == macs
    assert result["summary"]["G"]["rows"]["small-scratch"]["macs"]["complete"]["mean"] == pytest.approx(macs / 1e9)

    # The table: mean ± std for every row, the spread verdicts, the teacher's spread.
    md = (folder / "baselines.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split(":")[0] for line in table[1:]] == [
        "| small-scratch", "| small-distill", "| pruned-finetune", "| gcc", f"| {TEACHER_ROW}"]
    for line in table[1:]:
        assert " ± " in line
    assert all(any(v in line for v in ("within spread", "yes (", "no (")) for line in table[2:])
    assert "Teacher's own spread (G, psnr)" in md and "torch threads" in md
    stored = json.loads((folder / "baselines.json").read_text())
    teacher = stored["summary"]["G"]["rows"][TEACHER_ROW]["student"]["psnr"]
    assert teacher["n"] == 2 and teacher["std"] is not None
    assert stored["latency_ms"][TEACHER_ROW]["0"]["G"] > 0
    assert stored["machine"]["torch_threads"] == torch.get_num_threads() and stored["wall_seconds"] > 0

    # Again into the same folder: refused without --resume; with it, every row is read back.
    with pytest.raises(RecipeError, match="--resume"):
        run_baselines(str(recipe), [], seeds=2, out_dir=tmp_path / "bl", device="cpu")
    with pytest.raises(RecipeError, match=r"--resume: distill.gamma_t changed"):
        run_baselines(str(recipe), ["distill.gamma_t=3"], seeds=2, out_dir=tmp_path / "bl", resume=True, device="cpu")
    trained.clear()
    _, again = run_baselines(str(recipe), [], seeds=2, out_dir=tmp_path / "bl", resume=True, device="cpu")
    assert trained == [] and pruned == ["G", "G"]
    for key in runs:
        for seed in ("0", "1"):
            assert again["runs"][key][seed]["generators"] == runs[key][seed]["generators"]


def test_small_nets_get_the_generator_pretraining_the_gcc_student_gets(tiny_raw):
    from gancompress.experiments.baselines.rows import small_pretrain_epochs
    from gancompress.families.recipe import recipe_from_dict

    def epochs(*over):
        return small_pretrain_epochs(recipe_from_dict(tiny_raw, "tiny.yaml", list(over)))
    assert epochs() == 0
    assert epochs("train.pretrain_epochs=5") == 0  # a re-initialised gcc student loses that training
    assert epochs("train.pretrain_epochs=5", "prune.inherit_weights=true") == 5  # ... an inheriting one keeps it
    assert epochs("train.pretrain_epochs=5", "distill.student_pretrain_epochs=7") == 7  # stage pretrain_P
