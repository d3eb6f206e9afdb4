"""The CycleGAN family: unaligned data, image pools, two generators with their own budgets, GCC."""
import copy
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gancompress.data.unaligned import DomainDataset, UnalignedDataset
from gancompress.demo.cyclegan import make_cyclegan_demo
from gancompress.errors import DataError, RecipeError
from gancompress.families import get_family
from gancompress.families.cyclegan import ImagePool
from gancompress.families.recipe import recipe_from_dict
from gancompress.files.rundir import RunDir
from gancompress.method.pruning import prune_to_budget
from gancompress.metrics.macs import count_macs
from gancompress.run.pipeline import compress, make_distill_stage, make_sparse_stage, run_prune
from gancompress.run.train import train_stage

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
NAMES = ("AtoB", "BtoA")

TINY = {
    "name": "tiny_cyclegan",
    "family": "cyclegan",
    "seed": 0,
    "model": {"n_blocks": 1, "ngf_teacher": 8, "ngf_student": 8, "ndf": 8, "pool_size": 4},
    "data": {"root": "", "eval_split": "test", "load_size": 36, "crop_size": 32, "batch_size": 2,
             "num_workers": 0},
    "train": {"gan_loss": "lsgan", "log_every": 2, "checkpoint_every": 2, "samples_per_epoch": False},
    "sparse": {"method": "l1", "epochs": 1},
    "prune": {"budget": {"AtoB": "50%", "BtoA": "75%"}, "tolerance": 0.05},
    "distill": {"epochs_const": 1, "epochs_decay": 1, "gamma_m": 0.01, "gamma_t": 1.0e3},
    "discriminator": {"mode": "selective", "tau": 0.1},
    "eval": {"latency": False},
}


@pytest.fixture(scope="module")
def unaligned_root(tmp_path_factory):
    """Grass (A) and gravel (B) crops from scikit-image, 4 training and 6 test images per domain."""
    root = tmp_path_factory.mktemp("unaligned")
    return make_cyclegan_demo(root, n_train=4, n_test=6, size=32, seed=0, feature_epochs=0)


@pytest.fixture
def raw(unaligned_root):
    r = copy.deepcopy(TINY)
    r["data"]["root"] = str(unaligned_root)
    return r


def _family(raw, *overrides):
    recipe = recipe_from_dict(raw, "tiny.yaml", list(overrides))
    return get_family("cyclegan")(recipe), recipe


def _batch(data, keys):
    return torch.utils.data.default_collate([data[k] for k in keys])


# --- networks and data -------------------------------------------------------------------------

def test_generators_discriminators_and_items_have_the_right_shapes(raw):
    family, _ = _family(raw)
    assert family.generator_names == NAMES and family.d_loss_weight == 0.5
    data = family.dataset("train", train=True)
    batch = _batch(data, [(0, 1), (1, 2)])
    assert set(batch) == {"A", "B", "index"}
    assert batch["A"].shape == batch["B"].shape == (2, 3, 32, 32)
    inputs = family.generator_inputs(batch)
    assert inputs["AtoB"] is batch["A"] and inputs["BtoA"] is batch["B"]
    for n in NAMES:
        g, d = family.build_generator(n, 8), family.build_discriminator(n)
        fake = g(inputs[n])
        assert fake.shape == (2, 3, 32, 32) and fake.abs().max() <= 1
        assert d(fake).shape == (2, 1, 2, 2)  # PatchGAN logits at 32x32
        assert len(g.distill_points()) == 2 and len(d.mask_points()) == 4
        assert family.example_input(n, 3).shape == (3, 3, 32, 32)
    assert torch.equal(family.real("AtoB", batch), batch["B"]) and torch.equal(family.real("BtoA", batch), batch["A"])
    mobile, _ = _family(raw, "model.netG=mobile")
    assert mobile.build_generator("AtoB", 8)(inputs["AtoB"]).shape == (2, 3, 32, 32)


def test_unaligned_dataset_length_pairing_and_seeds(tmp_path, unaligned_root):
    root = tmp_path / "uneven"
    shutil.copytree(unaligned_root, root)
    (root / "trainA" / "0003.png").unlink()  # 3 A images, 4 B images
    random = UnalignedDataset(root, "train", 36, 32, pairing="random")
    assert len(random) == 4  # the larger domain, as CycleGAN
    assert torch.equal(random[(3, 7)]["A"], random[(3, 7)]["A"])  # all randomness from the seed
    assert random[(3, 7)]["index"] == 0  # A wraps around
    draws = [random[(0, s)] for s in range(6)]
    assert any(not torch.equal(draws[0]["B"], d["B"]) for d in draws[1:])
    serial = UnalignedDataset(root, "train", 32, 32, train=False, pairing="serial")
    b_images = DomainDataset(serial.files_b, 32, 32)
    for i in range(4):
        assert torch.equal(serial[i]["B"], b_images[i])


def test_missing_domain_folder_names_it(tmp_path, unaligned_root, raw):
    root = tmp_path / "no_b"
    shutil.copytree(unaligned_root, root)
    shutil.rmtree(root / "trainB")
    raw["data"]["root"] = str(root)
    family, _ = _family(raw)
    with pytest.raises(DataError) as info:
        family.check_data()
    msg = str(info.value)
    assert msg.startswith(f"{root / 'trainB'}: folder not found") and "trainA" in msg and "\n" not in msg


def test_recipe_checks_of_the_family(raw):
    with pytest.raises(RecipeError, match="model.norm: instance_affine"):
        _family(raw, "sparse.method=slimming")[0].check_recipe()
    with pytest.raises(RecipeError, match="multiple of 4"):
        _family(raw, "data.crop_size=30")[0].check_recipe()
    with pytest.raises(RecipeError, match="model.lambda_identity"):
        _family(raw, "model.output_nc=1")
    with pytest.raises(RecipeError, match="prune.budget: expected one budget for each generator"):
        _family(raw, "prune.budget={AtoB: 2.4}")


# --- image pool --------------------------------------------------------------------------------

def _images(values):
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()


def test_pool_returns_stored_images_half_the_time_and_its_state_round_trips():
    torch.manual_seed(0)
    pool = ImagePool(50)
    first = _images(range(50))
    assert torch.equal(pool.query(first), first)  # filling: every image goes through
    swapped = 0
    for q in range(400):
        new = _images([1000 + q])
        out = pool.query(new)
        if not torch.equal(out, new):
            swapped += 1
            assert out[0, 0, 0, 0] < 1000 + q  # an older image, out of the pool
    assert 0.4 <= swapped / 400 <= 0.6

    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    restored = ImagePool(50)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    queries = _images(range(2000, 2010))
    rng = torch.get_rng_state()
    a = torch.cat([pool.query(queries[i:i + 1]) for i in range(10)])
    torch.set_rng_state(rng)
    b = torch.cat([restored.query(queries[i:i + 1]) for i in range(10)])
    assert torch.equal(a, b)


def test_family_keeps_one_pool_per_discriminator_and_checkpoints_them(raw):
    family, _ = _family(raw)
    torch.manual_seed(0)
    for step in range(6):
        for key in ("T:AtoB", "T:BtoA", "S:AtoB"):
            family.fake_for_d(key, _images([step, step + 100]))
    state = family.state_dict()
    assert set(state["pools"]) == {"T:AtoB", "T:BtoA", "S:AtoB"}
    assert all(p["images"].shape == (4, 3, 2, 2) for p in state["pools"].values())  # pool_size 4
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    other, _ = _family(raw)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for key in state["pools"]:
        assert torch.equal(other.state_dict()["pools"][key]["images"], state["pools"][key]["images"])
    other.reset_state()
    assert other.state_dict() == {"pools": {}}


@pytest.mark.slow
def test_sparse_stage_with_pools_resumes_to_the_same_weights(raw, tmp_path):
    raw["sparse"]["epochs"] = 2  # 2 iterations per epoch, checkpoints every 2
    family, recipe = _family(raw)

    class Stop(Exception):
        pass

    def run(run_dir, resume=False, stop_at=None):
        torch.manual_seed(recipe.seed)
        stage = make_sparse_stage(family, recipe, CPU)
        if stop_at is not None:
            real, calls = stage.step, []

            def step(batch, batch2=None):
                if len(calls) == stop_at:
                    raise Stop
                calls.append(1)
                return real(batch, batch2)
            stage.step = step
        train_stage(stage, family, recipe, run_dir, CPU, resume=resume)
        return stage

    whole = run(tmp_path / "whole")
    pools = family.state_dict()
    with pytest.raises(Stop):
        run(tmp_path / "cut", stop_at=3)  # dies after the checkpoint at step 2, with pools half full
    resumed = run(tmp_path / "cut", resume=True)
    for a, b in zip(whole.gens.state_dict().values(), resumed.gens.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(whole.discs.state_dict().values(), resumed.discs.state_dict().values()):
        assert torch.equal(a, b)
    for key, p in pools["pools"].items():
        assert torch.equal(family.state_dict()["pools"][key]["images"], p["images"])


# --- task loss and stage 3 ---------------------------------------------------------------------

def test_task_loss_is_cycle_plus_identity(raw):
    family, _ = _family(raw)
    ident = {n: nn.Identity() for n in NAMES}
    a, b = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    inputs = {"AtoB": a, "BtoA": b}
    # identity generators: cycle is exact; fakes set to the other domain give cycle 10*(1+1)
    assert family.task_loss(ident, inputs, {"AtoB": a, "BtoA": b}, {}) == 0
    assert family.task_loss(ident, inputs, {"AtoB": b, "BtoA": a}, {}) == pytest.approx(20.0)
    flip = {"AtoB": lambda x: 1 - x, "BtoA": lambda x: 1 - x}  # identity term 0.5*10*(1+1) = 10
    assert family.task_loss(flip, inputs, {"AtoB": b, "BtoA": a}, {}) == pytest.approx(10.0)
    no_identity, _ = _family(raw, "model.lambda_identity=0")
    assert no_identity.task_loss(flip, inputs, {"AtoB": b, "BtoA": a}, {}) == 0


def _stage(raw):
    family, recipe = _family(raw)
    torch.manual_seed(0)
    stage = make_distill_stage(family, recipe, CPU, {n: family.build_generator(n, 4) for n in NAMES})
    data = family.dataset("train", train=True)
    return family, stage, _batch(data, [(0, 1), (1, 2)]), _batch(data, [(2, 3), (3, 4)])


def test_one_stage3_step_updates_both_students_and_both_alphas(raw):
    family, stage, batch, batch2 = _stage(raw)
    before = {n: {k: p.detach().clone() for k, p in stage.s_gens[n].named_parameters()} for n in NAMES}
    alphas = {n: [a.detach().clone() for a in stage.s_discs[n].alpha_parameters()] for n in NAMES}
    logs = stage.step(batch, batch2)
    for n in NAMES:
        for k, p in stage.s_gens[n].named_parameters():
            if p.dim() > 1:  # every conv weight learns (biases before InstanceNorm get no gradient)
                assert not torch.equal(before[n][k], p.detach()), (n, k)
        assert all(not torch.equal(b, a) for b, a in zip(alphas[n], stage.s_discs[n].alpha_parameters())), n
        assert {f"gap_S_{n}", f"L_target_{n}"} <= set(logs)
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert set(family.pools) == {"T:AtoB", "T:BtoA", "S:AtoB", "S:BtoA"}


def _features(gen, x):
    """Outputs of ``gen``'s distillation points for ``gen(x)``, detached copies."""
    points = gen.distill_points()
    feats = [None] * len(points)
    hooks = [p.register_forward_hook(lambda _m, _i, o, i=i: feats.__setitem__(i, o.detach().clone()))
             for i, p in enumerate(points)]
    with torch.no_grad():
        gen(x)
    for h in hooks:
        h.remove()
    return feats


def test_distillation_uses_the_main_pass_not_the_cycle_pass(raw, monkeypatch):
    """The cycle and identity terms run each generator again; the taps must keep G(x)'s features,
    for the student and for the teacher."""
    import gancompress.run.stages.distill as stages

    family, stage, batch, batch2 = _stage(raw)
    inputs = family.generator_inputs(batch)
    want_s = {n: _features(stage.s_gens[n], inputs[n]) for n in NAMES}
    want_t = {n: _features(stage.t_gens[n], inputs[n]) for n in NAMES}  # before the teacher's update
    seen_s, seen_t = {}, []
    for n in NAMES:
        stage.adapters[n].register_forward_pre_hook(
            lambda _m, args, n=n: seen_s.setdefault(n, [f.detach().clone() for f in args[0]]))
    real_terms = stages.distill_terms

    def recording(student, teacher):
        seen_t.append([t.detach().clone() for t in teacher])
        return real_terms(student, teacher)
    monkeypatch.setattr(stages, "distill_terms", recording)
    stage.step(batch, batch2)
    for i, n in enumerate(NAMES):
        for got, want in zip(seen_s[n], want_s[n]):
            torch.testing.assert_close(got, want)
        for got, want in zip(seen_t[2 * i], want_t[n]):  # per generator: G taps, then D_T taps
            torch.testing.assert_close(got, want)


def test_teacher_d_features_give_each_student_a_gradient(raw):
    family, stage, batch, _ = _stage(raw)
    inputs = family.generator_inputs(batch)
    for n in NAMES:
        fake = stage.s_gens[n](inputs[n])
        stage.t_discs[n](family.d_input(n, inputs, fake))
        grad = torch.autograd.grad(sum(f.mean() for f in stage.dt_taps[n].outputs), fake)[0]
        assert grad.abs().sum() > 0, n


# --- pruning -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_each_generator_is_pruned_to_its_own_budget(raw, tmp_path):
    family, recipe = _family(raw)
    torch.manual_seed(0)
    gens = nn.ModuleDict({n: family.build_generator(n, 8) for n in NAMES})
    pruned = run_prune(family, recipe, RunDir(tmp_path), {"gens": gens.state_dict()})
    full = count_macs(family.build_generator("AtoB", 8), family.example_input("AtoB")).complete
    for n, ratio in (("AtoB", 0.5), ("BtoA", 0.75)):
        assert pruned[n]["budget"] == round(ratio * full)
        assert abs(pruned[n]["macs"] - pruned[n]["budget"]) <= 0.05 * pruned[n]["budget"]
    assert pruned["AtoB"]["macs"] < pruned["BtoA"]["macs"]
    assert (tmp_path / "pruned" / "pruned.pt").is_file()


def test_slimming_affine_instance_norm_removes_exactly_the_zeroed_channels(raw):
    """Zero the scale and shift of some channels: pruning to the MACs of removing exactly those
    must remove them and leave the generator's output unchanged."""
    family, _ = _family(raw, "model.norm=instance_affine", "sparse.method=slimming")
    torch.manual_seed(0)
    g = family.build_generator("AtoB", 8).eval()
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(m.affine for m in norms)
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
    stem_norm = g.model[2]
    inner_norm = g.residual_blocks()[0].conv_block[2]  # after the block's first conv
    zeroed = {stem_norm: [1, 4, 6], inner_norm: [0, 5, 9]}
    with torch.no_grad():
        for m, idxs in zeroed.items():
            m.weight[idxs] = 0.0
            m.bias[idxs] = 0.0
    x = torch.randn(2, 3, 32, 32)
    before = g(x)
    example = family.example_input("AtoB")
    # the MACs of the generator without exactly those channels: widths of a hand-pruned copy
    expected = copy.deepcopy(g)
    import torch_pruning as tp
    graph = tp.DependencyGraph().build_dependency(expected, example_inputs=example,
                                                  customized_pruners=family.custom_pruners())
    for conv, idxs in ((expected.model[1], zeroed[stem_norm]),
                       (expected.residual_blocks()[0].conv_block[1], zeroed[inner_norm])):
        graph.get_pruning_group(conv, graph.get_pruner_of_module(conv).prune_out_channels, idxs).prune()
    budget = count_macs(expected, example).complete
    result = prune_to_budget(g, example, method="slimming", budget_macs=budget, tolerance=0.002,
                             custom_pruners=family.custom_pruners())
    assert result.removed == 6 and result.macs == budget
    p = result.model
    assert p.model[2].num_features == 5 and p.residual_blocks()[0].conv_block[2].num_features == 29
    assert torch.equal(p.model[2].weight, stem_norm.weight[[0, 2, 3, 5, 7]])
    torch.testing.assert_close(p(x), before, rtol=0, atol=1e-5)


# --- the whole pipeline, and the paper recipe --------------------------------------------------

@pytest.mark.slow
def test_pipeline_writes_two_generators_within_budget_and_their_fid(raw, tmp_path):
    extractor = tmp_path / "features.pt"  # a stand-in feature extractor: per-channel means
    torch.jit.save(torch.jit.script(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())), str(extractor))
    raw["eval"]["fid_extractor"] = str(extractor)
    raw["eval"]["trust_torchscript"] = True  # the test wrote this TorchScript file itself
    _, recipe = _family(raw)
    run = tmp_path / "run"
    report = compress(recipe, run, device="cpu")
    assert set(report["generators"]) == set(NAMES)
    for n in NAMES:
        g = report["generators"][n]
        assert g["student_within_budget"], n
        assert g["student"]["macs"] < g["teacher"]["macs"]
        ts = torch.jit.load(str(run / "export" / f"generator_{n}.pt"))
        assert ts(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
        assert g["export"]["torchscript"]["max_abs_diff"] < 1e-5
        if "onnx" in g:  # onnxruntime installed
            assert g["onnx"]["max_abs_diff"] < 1e-4
        assert set(g["metrics"]) == {"teacher", "student", "input"}
        assert all(m["fid"] >= -1e-6 for m in g["metrics"].values())
    assert report["generators"]["AtoB"]["budget"] < report["generators"]["BtoA"]["budget"]
    assert json.loads((run / "report.json").read_text())["generators"]["BtoA"]["budget"] == \
        report["generators"]["BtoA"]["budget"]
    log = (run / "metrics.jsonl").read_text()
    assert '"active_AtoB"' in log and '"active_BtoA"' in log


@pytest.mark.slow
def test_horse2zebra_dry_run_prints_both_teachers_and_budgets():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "compress.py"),
                           str(ROOT / "recipes" / "cyclegan_horse2zebra.yaml"), "--dry-run"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for n in NAMES:
        assert f"teacher {n} (ngf 64) at input (1, 3, 256, 256): 56.86 GMACs (thop)" in proc.stdout
    assert "budget AtoB: 2.4 GMACs" in proc.stdout
    assert "budget BtoA: 2.7 GMACs" in proc.stdout
