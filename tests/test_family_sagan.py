"""The SAGAN family: data with seeded codes, complete MACs, pruning through spectral norm and
attention, the selective D of the recipe, export, FID, and the whole pipeline on tiny faces."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.utils import parametrize

from gancompress.errors import DataError
from gancompress.export.generator import export_torchscript, load_generator
from gancompress.families import get_family
from gancompress.families.recipe import load_recipe
from gancompress.method.pruning import layer_widths, prune_to_budget, score_groups
from gancompress.method.sparsity import penalised_parameters
from gancompress.metrics.macs import count_macs
from gancompress.nets.layers import CONV_TYPES
from gancompress.nets.sagan import SelfAttention
from gancompress.run.pipeline import compress, make_distill_stage

ROOT = Path(__file__).resolve().parents[1]
CELEBA = ROOT / "recipes" / "sagan_celeba.yaml"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """12 LFW faces and 4 astronaut crops, 64x64 PNGs in one flat folder (the demo's maker)."""
    from gancompress.demo.sagan import make_sagan_demo

    return make_sagan_demo(tmp_path_factory.mktemp("faces"), n_lfw=12, n_astronaut=4, feature_epochs=0)


def _tiny(faces, *extra):
    """The shipped recipe at tiny widths on the tiny faces; its GAN settings stay as shipped."""
    return load_recipe(CELEBA, ["model.z_dim=16", "model.ngf_teacher=16", "model.ngf_student=8", "model.ndf=8",
                                f"data.root={faces}", "data.batch_size=4", "data.num_workers=0",
                                "data.flip=true", "eval.inception_weights=''", "eval.latency=false", *extra])


def _sn_convs(g: nn.Module) -> list[nn.Module]:
    return [m for m in g.modules() if isinstance(m, CONV_TYPES) and parametrize.is_parametrized(m, "weight")]


def _sigma(conv: nn.Module) -> float:
    w = conv.weight.detach()
    if isinstance(conv, nn.ConvTranspose2d):  # torch's spectral norm reads these along dim 1
        w = w.transpose(0, 1)
    return float(torch.linalg.matrix_norm(w.flatten(1), 2))


# --- data ---------------------------------------------------------------------------------------

def test_items_carry_their_own_z_drawn_from_the_item_seed(faces):
    family = get_family("sagan")(_tiny(faces))
    data = family.dataset("", train=True)
    assert len(data) == 16
    a, again, other = data[(3, 77)], data[(3, 77)], data[(3, 78)]
    assert a["image"].shape == (3, 64, 64) and a["z"].shape == (16,)
    assert -1 <= a["image"].min() and a["image"].max() <= 1
    assert torch.equal(a["z"], again["z"]) and torch.equal(a["image"], again["image"])
    assert not torch.equal(a["z"], other["z"])
    seen = {torch.equal(data[(3, s)]["image"], family.dataset("", train=False)[3]["image"]) for s in range(12)}
    assert seen == {True, False}  # flipped for some seeds only
    batch = torch.utils.data.default_collate([data[(0, 1)], data[(1, 2)]])
    assert family.generator_inputs(batch)["G"] is batch["z"] and family.real("G", batch) is batch["image"]
    # evaluation items (plain index) get the same z whatever the augmentation
    assert torch.equal(family.dataset("", train=False)[5]["z"], data[(5, 5)]["z"])


def test_center_crop_then_resize(tmp_path, faces):
    img = Image.new("RGB", (60, 80), (255, 0, 0))
    img.paste((0, 255, 0), (10, 20, 50, 60))  # a 40x40 green centre
    img.save(tmp_path / "a.png")
    family = get_family("sagan")(_tiny(faces, f"data.root={tmp_path}", "data.center_crop=36"))
    x = family.dataset("", train=False)[0]["image"]
    assert x.shape == (3, 64, 64)
    assert torch.allclose(x[1], torch.ones(64, 64), atol=0.02) and x[0].max() < -0.98  # green only


def test_bad_images_and_missing_folders_are_data_errors(tmp_path, faces):
    for i in range(2):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        get_family("sagan")(_tiny(faces, f"data.root={tmp_path}")).dataset("", train=True)
    skip = get_family("sagan")(_tiny(faces, f"data.root={tmp_path}", "data.on_bad_image=skip"))
    assert len(skip.dataset("", train=True)) == 2
    with pytest.raises(DataError, match="train_split"):
        get_family("sagan")(_tiny(faces, "data.train_split=train")).check_data()
    with pytest.raises(DataError, match="data.root is empty"):
        get_family("sagan")(_tiny(faces, "data.root=''")).check_data()


# --- MACs ----------------------------------------------------------------------------------------

def test_teacher_complete_macs_are_convs_plus_attention_matmuls():
    family = get_family("sagan")(load_recipe(CELEBA))
    g = family.build_generator("G", family.cfg.ngf_teacher).eval()
    z = family.example_input("G", 1)
    convs, plain, matmuls = [0], [0], [0]

    def conv_hook(m, inputs, out):
        macs = out.numel() * (m.in_channels // m.groups) * m.weight.shape[2:].numel()
        convs[0] += macs
        if not parametrize.is_parametrized(m, "weight"):
            plain[0] += macs

    def attn_hook(m, inputs, out):
        n, c, h, w = out.shape
        matmuls[0] += n * (h * w) ** 2 * (m.query_conv.out_channels + c)  # q^T k, then v attn^T

    handles = [m.register_forward_hook(conv_hook) for m in g.modules() if isinstance(m, CONV_TYPES)]
    handles += [m.register_forward_hook(attn_hook) for m in g.modules() if isinstance(m, SelfAttention)]
    with torch.no_grad():
        g(z)
    for h in handles:
        h.remove()
    m = count_macs(g, z)
    norm_ops = m.complete - convs[0] - matmuls[0]  # thop also counts BatchNorm's elementwise ops
    assert 0 <= norm_ops < 1e-3 * m.complete
    assert m.thop == plain[0] + norm_ops  # thop sees only the plain convs (output and attention 1x1)
    assert m.thop * 20 < m.complete
    assert m.complete == pytest.approx(0.528e9, rel=0.01) and m.thop == pytest.approx(0.0236e9, rel=0.01)


# --- pruning ---------------------------------------------------------------------------------------

def _prune(family, g, method, ratio):
    x = family.example_input("G", 1)
    token = family.before_pruning(g)
    budget = int(ratio * count_macs(g, x).complete)
    res = prune_to_budget(g, x, method=method, budget_macs=budget, tolerance=0.05,
                          custom_pruners=family.custom_pruners())
    family.after_pruning(res.model, token)
    return res, budget


def test_every_prunable_layer_loses_channels_at_half_the_macs(faces):
    """Network slimming after stage-1-like sparsity: L1 on the BatchNorm scales leaves a spread of
    |gamma| in every layer (emulated here by |N(0, 1)| draws), and one global threshold at 50% of
    the MACs then takes channels from every spectral-norm conv and every attention block."""
    family = get_family("sagan")(_tiny(faces))
    torch.manual_seed(0)
    g = family.build_generator("G", 8).eval()
    gen = torch.Generator().manual_seed(1)
    for bn in (m for m in g.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.weight.data = torch.randn(bn.num_features, generator=gen).abs()
    before = {m: (m.in_channels, m.out_channels) for m in g.modules() if isinstance(m, CONV_TYPES)}
    names = {m: n for n, m in g.named_modules()}
    res, budget = _prune(family, g, "slimming", 0.5)
    pruned = dict(res.model.named_modules())
    sn = _sn_convs(res.model)  # spectral norm is back on the pruned convs, sigma 1 again
    assert len(sn) == 4 and all(_sigma(c) == pytest.approx(1.0, abs=1e-3) for c in sn)
    for m, (c_in, c_out) in before.items():
        p = pruned[names[m]]
        if m is g.output_conv():
            assert p.out_channels == 3 and p.in_channels < c_in
        elif m in (g.attn1.query_conv, g.attn1.key_conv, g.attn2.query_conv, g.attn2.key_conv):
            assert p.in_channels < c_in and p.out_channels == c_out  # q/k inner width is kept
        else:
            assert p.out_channels < c_out, names[m]
    assert abs(res.macs - budget) <= 0.05 * budget
    assert res.model(torch.randn(2, 16)).shape == (2, 3, 64, 64)


def test_filter_l1_scores_under_spectral_norm_concentrate_removal(faces):
    """Why the recipes use slimming: filter-norm scores of spectrally normalised weights are not
    comparable across layers, so one global threshold empties some layers and spares others. Here
    the lowest-scored half of a fresh G's channels fills whole groups and misses another."""
    family = get_family("sagan")(_tiny(faces))
    torch.manual_seed(0)
    g = family.build_generator("G", 8).eval()
    family.before_pruning(g)
    groups = score_groups(g, family.example_input("G", 1), "l1", family.custom_pruners())
    assert len(groups) == 4  # l1, l2 and the two attention blocks with l3 and l4
    flat = torch.cat([gr.scores for gr in groups])
    threshold = flat.sort().values[flat.numel() // 2]
    removed = [float((gr.scores < threshold).float().mean()) for gr in groups]
    assert max(removed) >= 7 / 8 and min(removed) <= 1 / 8


def test_l1_penalty_reaches_the_spectral_norm_weights(faces):
    """sparse.method l1 penalises the stored weight behind each spectral-norm conv (its
    ``weight`` is recomputed every call and never gets a gradient); z's and the image's layers
    are never penalised."""
    family = get_family("sagan")(_tiny(faces))
    g = family.build_generator("G", 8)
    params = penalised_parameters(g, "l1", family.example_input("G", 1))
    held = lambda t: any(p is t for p in params)  # noqa: E731
    assert [held(c.parametrizations.weight.original) for c in (g.l1[0], g.l2[0], g.l3[0], g.l4[0])] == \
        [False, True, True, True]
    assert not held(g.output_conv().weight) and held(g.attn1.value_conv.weight)
    g(torch.randn(2, 16)).mean().backward()
    assert all(p.grad is not None for p in params)


def test_reinit_keeps_spectral_norm_and_resets_weights(faces):
    family = get_family("sagan")(_tiny(faces))
    g = family.build_generator("G", 8)
    with torch.no_grad():
        g.attn1.gamma.fill_(0.5)
        g.l2[1].weight.fill_(3.0)
    old = g.l3[0].parametrizations.weight.original.detach().clone()
    family.reinit_generator(g)
    assert len(_sn_convs(g)) == 4 and all(_sigma(c) == pytest.approx(1.0, abs=1e-3) for c in _sn_convs(g))
    assert float(g.attn1.gamma.detach()) == 0.0 and torch.equal(g.l2[1].weight, torch.ones(32))
    assert not torch.equal(old, g.l3[0].parametrizations.weight.original)


# --- selective D and distillation points ---------------------------------------------------------

def test_recipe_tau_sets_the_active_fraction_of_the_selective_d(faces):
    def stage(*extra):
        recipe = _tiny(faces, *extra)
        family = get_family("sagan")(recipe)
        torch.manual_seed(0)
        return make_distill_stage(family, recipe, CPU, {"G": family.build_generator("G", 8)})

    s = stage()
    d = s.s_discs["G"]
    assert d.tau == 0.1  # from recipes/sagan_celeba.yaml
    assert [a.numel() for a in d.alphas] == [8, 16, 32, 64]  # after each spectral-norm conv
    with torch.no_grad():  # d_layers [2, 4]: the teacher D's blocks 2 and 4 (of 4 mask points)
        s.t_discs["G"](torch.randn(2, 3, 64, 64))
    assert [f.shape[1:] for f in s.dt_taps["G"].outputs] == [(16, 16, 16), (64, 4, 4)]
    with torch.no_grad():
        for a in d.alphas:
            a.copy_((torch.arange(a.numel()) + 0.5) / a.numel())  # evenly over (0, 1)
    assert torch.allclose(s.log_extras()["active_G"], torch.full((4,), 0.9), atol=0.07)
    s5 = stage("discriminator.tau=0.5")
    with torch.no_grad():
        for a, b in zip(s5.s_discs["G"].alphas, d.alphas):
            a.copy_(b)
    assert torch.allclose(s5.log_extras()["active_G"], torch.full((4,), 0.5), atol=1e-6)
    # switched-off channels are zero at the mask point (block 2's LeakyReLU)
    out = {}
    d.net.mask_points()[1].register_forward_hook(lambda m, i, o: out.setdefault("x", o))
    with torch.no_grad():
        d(torch.randn(2, 3, 64, 64))
    off = d.alphas[1] <= 0.1
    assert off.any() and out["x"][:, off].abs().max() == 0 and out["x"][:, ~off].abs().max() > 0


# --- export -------------------------------------------------------------------------------------

def test_export_folds_spectral_norm_and_torchscript_matches_eager(faces, tmp_path):
    family = get_family("sagan")(_tiny(faces))
    torch.manual_seed(0)
    g = family.build_generator("G", 8)
    with torch.no_grad():
        g.attn1.gamma.fill_(0.3)
        g.attn2.gamma.fill_(-0.2)
        g(torch.randn(4, 16))  # a training pass: power iterations move u, v; BN stats move
    g.eval()
    shipped = family.for_export(g)
    assert not _sn_convs(shipped) and len(_sn_convs(g)) == 4  # folded in a copy only; g still runs
    info = export_torchscript(shipped, family.example_input("G", 1), tmp_path / "g.pt")
    assert info["max_abs_diff"] <= 1e-5
    z = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "g.pt"))(z), g(z), rtol=0, atol=1e-5)


# --- the whole pipeline -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(faces, tmp_path_factory):
    """compress() on the CelebA recipe at tiny widths on 4 faces: 2 iterations of stage 1, 1 of
    stage 3, FID with a small TorchScript feature extractor (2-d features for 4 images)."""
    out = tmp_path_factory.mktemp("sagan_run")
    extractor = nn.Sequential(nn.Conv2d(3, 2, 8, stride=8), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.jit.save(torch.jit.script(extractor), str(out / "features.pt"))
    recipe = _tiny(faces, "data.max_items=4", "sparse.epochs=2", "distill.epochs_const=1",
                   "prune.budget='18%'", "prune.tolerance=0.1", f"eval.fid_extractor={out / 'features.pt'}",
                   "eval.trust_torchscript=true", "train.samples_per_epoch=false", "train.log_every=1")
    torch.manual_seed(0)
    report = compress(recipe, out / "run", device="cpu")
    return recipe, out / "run", report


@pytest.mark.slow
def test_pipeline_prunes_every_layer_within_budget(run):
    recipe, run_dir, report = run
    g = report["generators"]["G"]
    assert g["student_within_budget"]
    assert abs(g["student"]["macs_complete"] - g["budget"]) <= recipe.prune.tolerance * g["budget"]
    assert g["teacher"]["macs"] * 10 < g["teacher"]["macs_complete"]
    family = get_family("sagan")(recipe)
    ref = family.build_generator("G", recipe.model.ngf_student)
    sn_names = {n for n, m in ref.named_modules() if m in _sn_convs(ref)}
    attn_names = {f"{n}.{c}" for n, m in ref.named_modules() if isinstance(m, SelfAttention)
                  for c in ("query_conv", "key_conv", "value_conv")}
    assert len(sn_names) == 4 and len(attn_names) == 6
    for name in sn_names | attn_names:  # narrower than the teacher
        teacher_w, student_w = g["widths"][name]
        assert student_w < teacher_w, name
    sparse_w = layer_widths(ref)  # and stage 2 itself took channels from each of them
    student, _ = load_generator(run_dir / "student" / "generator_G.pt")
    for name in sn_names | {n for n in attn_names if n.endswith("value_conv")}:
        assert g["widths"][name][1] < sparse_w[name], name
    for name in attn_names:
        assert student.get_submodule(name).in_channels < ref.get_submodule(name).in_channels, name
    assert len(_sn_convs(student)) == 4


@pytest.mark.slow
def test_pipeline_exports_torchscript_and_scores_fid(run):
    recipe, run_dir, report = run
    ts = torch.jit.load(str(run_dir / "export" / "generator.pt"))
    z = torch.randn(5, recipe.model.z_dim)
    student, _ = load_generator(run_dir / "student" / "generator_G.pt")
    with torch.no_grad():
        y = ts(z)
        assert y.shape == (5, 3, 64, 64)
        torch.testing.assert_close(y, student(z), rtol=0, atol=1e-5)
    metrics = report["metrics"]
    assert set(metrics) == {"teacher", "student"}
    assert all(m["fid_images"] == 4 and 0 <= m["fid"] < float("inf") for m in metrics.values())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [len(r["active_G"]) for r in rows if r["stage"] == "distill"][-1] == 4


def test_no_fid_without_an_extractor(faces):
    family = get_family("sagan")(_tiny(faces))
    g = family.build_generator("G", 8).eval()
    assert family.evaluate({"student": {"G": g}}, CPU) == {}
