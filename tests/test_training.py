"""Stage 3's update order, resume equality, export parity and the whole pipeline on tiny data."""
import json

import pytest
import torch

from gancompress.errors import GanCompressError
from gancompress.export.generator import export_torchscript, load_generator
from gancompress.families import get_family
from gancompress.families.recipe import recipe_from_dict
from gancompress.run.pipeline import compress, make_distill_stage, make_sparse_stage
from gancompress.run.train import train_stage

CPU = torch.device("cpu")


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


def test_one_stage3_iteration_updates_each_group_in_order(tiny_raw):
    # LSGAN: under hinge the logit bias of D can get an exactly-zero gradient (+1 -1), legitimately
    tiny_recipe = recipe_from_dict(tiny_raw, "tiny.yaml", ["train.gan_loss=lsgan"])
    family = get_family("pix2pix")(tiny_recipe)
    torch.manual_seed(0)
    student = {"G": family.build_generator("G", 4)}
    stage = make_distill_stage(family, tiny_recipe, CPU, student)
    order = []
    for name, opt in {**stage._optimizers(), "alpha": stage.mode.opt}.items():
        opt.register_step_post_hook(lambda *_a, name=name: order.append(name))
    data = family.dataset("train", train=True)
    batch = torch.utils.data.default_collate([data[(0, 1)], data[(1, 2)]])
    batch2 = torch.utils.data.default_collate([data[(2, 3)], data[(3, 4)]])
    parts = {"t_gens": stage.t_gens, "t_discs": stage.t_discs, "s_gens": stage.s_gens,
             "adapters": stage.adapters}
    before = {k: _snapshot(m) for k, m in parts.items()}
    s_disc = stage.s_discs["G"]
    w_before = [p.detach().clone() for p in s_disc.weight_parameters()]
    a_before = [a.detach().clone() for a in s_disc.alpha_parameters()]
    logs = stage.step(batch, batch2)
    assert order == ["td", "tg", "sd", "sg", "alpha"]  # METHOD 1.3's documented order
    for k, m in parts.items():
        changed = _changed(before[k], m)
        assert changed == {n for n, _ in m.named_parameters()}, (k, set(n for n, _ in m.named_parameters()) - changed)
    assert all(not torch.equal(b, p) for b, p in zip(w_before, s_disc.weight_parameters()))
    assert all(not torch.equal(b, a) for b, a in zip(a_before, s_disc.alpha_parameters()))
    assert {"T_D", "S_D", "S_G_adv", "S_content", "S_texture", "alpha_loss", "L_target_G"} <= set(logs)
    assert all(torch.isfinite(v).all() for v in logs.values())


def test_teacher_d_features_give_the_student_a_gradient(tiny_recipe):
    """The teacher D's features of the student output must reach G_S (the reference code detaches)."""
    family = get_family("pix2pix")(tiny_recipe)
    stage = make_distill_stage(family, tiny_recipe, CPU, {"G": family.build_generator("G", 4)})
    data = family.dataset("train", train=True)
    batch = torch.utils.data.default_collate([data[(0, 1)], data[(1, 2)]])
    inputs = family.generator_inputs(batch)
    fake = stage.s_gens["G"](inputs["G"])
    stage.t_discs["G"](family.d_input("G", inputs, fake))
    feats = stage.dt_taps["G"].outputs
    grad = torch.autograd.grad(sum(f.mean() for f in feats), fake)[0]
    assert grad.abs().sum() > 0


class _Stop(Exception):
    pass


def _run_sparse(recipe, run_dir, resume=False, stop_at=None):
    family = get_family("pix2pix")(recipe)
    torch.manual_seed(recipe.seed)
    stage = make_sparse_stage(family, recipe, CPU)
    if stop_at is not None:
        real_step, calls = stage.step, []

        def step(batch, batch2=None):
            if len(calls) == stop_at:
                raise _Stop
            calls.append(1)
            return real_step(batch, batch2)
        stage.step = step
    train_stage(stage, family, recipe, run_dir, CPU, resume=resume)
    return stage


def test_interrupted_run_resumes_to_the_same_weights(tiny_raw, tmp_path):
    tiny_raw["sparse"]["epochs"] = 2  # 4 iterations per epoch, checkpoints every 2
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml")
    whole = _run_sparse(recipe, tmp_path / "whole")
    with pytest.raises(_Stop):
        _run_sparse(recipe, tmp_path / "cut", stop_at=5)  # dies after a checkpoint at step 4
    resumed = _run_sparse(recipe, tmp_path / "cut", resume=True)
    for a, b in zip(whole.gens.state_dict().values(), resumed.gens.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(whole.discs.state_dict().values(), resumed.discs.state_dict().values()):
        assert torch.equal(a, b)


def test_torchscript_export_reproduces_eager(tmp_path, tiny_recipe):
    family = get_family("pix2pix")(tiny_recipe)
    g = family.build_generator("G", 8).eval()
    x = torch.randn(2, 3, 32, 32)
    info = export_torchscript(g, x[:1], tmp_path / "g.pt")
    loaded = torch.jit.load(str(tmp_path / "g.pt"))
    assert torch.allclose(loaded(x), g(x), atol=1e-5)
    assert info["max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume_skips_finished_stages(tiny_recipe, tmp_path):
    run = tmp_path / "run"
    report = compress(tiny_recipe, run, device="cpu")
    g = report["generators"]["G"]
    assert g["student_within_budget"]
    assert g["student"]["macs"] < g["teacher"]["macs"]
    assert abs(g["student"]["macs_complete"] - g["budget"]) <= 0.05 * g["budget"]
    assert json.loads((run / "report.json").read_text())["student"] == report["student"]
    ts = torch.jit.load(str(run / "export" / "generator.pt"))
    assert ts(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    student, meta = load_generator(run / "student" / "generator_G.pt")
    assert meta["name"] == "G"
    assert (run / "metrics.jsonl").read_text().count('"active_G"') > 0
    with pytest.raises(GanCompressError, match="--resume"):
        compress(tiny_recipe, run, device="cpu")
    again = compress(tiny_recipe, run, device="cpu", resume=True)
    assert again["student"] == report["student"]


@pytest.mark.slow
def test_evaluate_fills_metrics_latency_onnx_and_writes_markdown(tiny_raw, tmp_path):
    tiny_raw["eval"] = {"latency": True, "latency_iters": 2}
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml")
    run = tmp_path / "run"
    report = compress(recipe, run, device="cpu")
    m = report["metrics"]
    assert set(m) == {"teacher", "student"}
    assert all(0 <= r["ssim"] <= 1 and r["psnr"] > 0 for r in m.values())
    lat = report["latency"]["models"]
    assert lat["teacher"]["eager_b1_fp32"]["median_ms"] > 0 and lat["student"]["torchscript_b1_fp32"]["median_ms"] > 0
    assert report["onnx"]["max_abs_diff"] < 1e-4
    md = (run / "report.md").read_text()
    assert "| MACs (thop, G) |" in md and "ONNX (opset 17)" in md
    from gancompress.cli import main
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2


def _buffers(*modules):
    return [b.detach().clone() for m in modules for b in m.buffers()]


def test_measuring_forwards_leave_running_statistics_alone(tiny_raw, monkeypatch):
    """Only the ordinary G and D steps move BatchNorm statistics: the teacher D's forwards for the
    distillation terms and the alpha step's forwards of every net only measure (METHOD 1.3)."""
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", ["train.gan_loss=lsgan"])
    family = get_family("pix2pix")(recipe)
    torch.manual_seed(0)
    stage = make_distill_stage(family, recipe, CPU, {"G": family.build_generator("G", 4)})
    data = family.dataset("train", train=True)
    batch = torch.utils.data.default_collate([data[(0, 1)], data[(1, 2)]])
    batch2 = torch.utils.data.default_collate([data[(2, 3)], data[(3, 4)]])
    seen = {}
    teacher_step, alpha_step = stage.teacher_update.step, stage.mode.extra_step

    def after_teacher(*args):
        out = teacher_step(*args)
        seen["teacher"] = _buffers(stage.t_gens, stage.t_discs)
        return out

    def before_alpha(*args):
        seen["student"] = _buffers(stage.s_gens, stage.s_discs)
        return alpha_step(*args)
    monkeypatch.setattr(stage.teacher_update, "step", after_teacher)
    monkeypatch.setattr(stage.mode, "extra_step", before_alpha)
    start = _buffers(stage.t_gens, stage.t_discs, stage.s_gens, stage.s_discs)
    stage.step(batch, batch2)
    teacher_now, student_now = _buffers(stage.t_gens, stage.t_discs), _buffers(stage.s_gens, stage.s_discs)
    # The ordinary steps did move them (so the comparison below is not vacuous) ...
    assert any(not torch.equal(a, b) for a, b in zip(start, teacher_now + student_now))
    # ... and nothing after them did: not the D_T forwards of the distillation, not the alpha step.
    assert all(torch.equal(a, b) for a, b in zip(seen["teacher"], teacher_now))
    assert all(torch.equal(a, b) for a, b in zip(seen["student"], student_now))


def test_alpha_uses_adams_default_betas_whatever_train_beta1_says(tiny_raw):
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", ["train.beta1=0.0", "train.beta2=0.9"])
    family = get_family("pix2pix")(recipe)
    stage = make_distill_stage(family, recipe, CPU, {"G": family.build_generator("G", 4)})
    assert stage.mode.opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert stage.opt_sg.param_groups[0]["betas"] == (0.0, 0.9)
