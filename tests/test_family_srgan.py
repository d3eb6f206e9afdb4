"""The SRGAN family: SR data, VGG19 content loss, the weighted adversarial term, and the whole
pipeline on tiny data (pruning through the sub-pixel blocks, PSNR/SSIM vs bicubic, export)."""
import copy
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gancompress.data.sr import SRDataset, bicubic_upscale, downscale
from gancompress.errors import DataError, MissingFileError, RecipeError
from gancompress.families import get_family
from gancompress.families.recipe import recipe_from_dict
from gancompress.method import losses
from gancompress.metrics.macs import count_macs
from gancompress.nets.srresnet import SRDiscriminator
from gancompress.nets.vgg import WEIGHTS_FILE, VGGFeatures, vgg19_layer_names
from gancompress.run.pipeline import compress
from gancompress.run.stages import GANUpdate
from gancompress.system.optim import Precision

TINY_SRGAN = {
    "name": "tiny_srgan",
    "family": "srgan",
    "seed": 0,
    "model": {"scale": 4, "n_blocks": 2, "ngf_teacher": 8, "ngf_student": 8, "ndf": 4, "d_blocks": 4,
              "d_fc": 16, "lr_crop": 12, "content_loss": "mse"},
    "data": {"root": "", "train_split": "train", "eval_split": "val", "batch_size": 2, "num_workers": 0},
    "train": {"pretrain_epochs": 1, "gan_loss": "vanilla", "lr_g": 1e-3, "log_every": 2,
              "checkpoint_every": 4, "samples_per_epoch": False},
    "sparse": {"method": "l1", "epochs": 1},
    "prune": {"budget": "60%", "tolerance": 0.05},
    "distill": {"epochs_const": 1, "epochs_decay": 1, "gamma_m": 0.1, "gamma_t": 0.1},
    "discriminator": {"mode": "selective", "tau": 0.1},
    "eval": {"latency": False},
}


@pytest.fixture(scope="module")
def sr_root(tmp_path_factory):
    """8 HR training images of 64 px, 4 held-out evaluation images of 48 px (scikit-image photos)."""
    from gancompress.demo.srgan import make_srgan_demo

    root = tmp_path_factory.mktemp("sr")
    make_srgan_demo(root, n_train=8, size=64, eval_size=48)
    return root


def _raw(root, **model):
    raw = copy.deepcopy(TINY_SRGAN)
    raw["data"]["root"] = str(root)
    raw["model"].update(model)
    return raw


def _family(root, overrides=(), **model):
    recipe = recipe_from_dict(_raw(root, **model), "tiny_srgan.yaml", overrides)
    return get_family("srgan")(recipe)


def _rgb(size, seed=0):
    noise = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed),
                          dtype=torch.uint8)
    return Image.fromarray(noise.numpy())


# --- data --------------------------------------------------------------------------------------

def test_training_items_are_seeded_crops_with_bicubic_lr(sr_root):
    data = SRDataset(sr_root, "train", scale=4, hr_crop=48, train=True)
    a, b, c = data[(3, 7)], data[(3, 7)], data[(3, 8)]
    assert a["lr"].shape == (3, 12, 12) and a["hr"].shape == (3, 48, 48) and int(a["index"]) == 3
    assert a["hr"].min() >= -1 and a["hr"].max() <= 1
    assert torch.equal(a["hr"], b["hr"]) and not torch.equal(a["hr"], c["hr"])
    hr_img = Image.fromarray(((a["hr"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy())
    expected = torch.from_numpy(np.array(downscale(hr_img, 4))).permute(2, 0, 1)
    assert torch.equal(((a["lr"] + 1) * 127.5).round().to(torch.uint8), expected)


def test_eval_items_are_whole_images_cut_to_the_scale(tmp_path):
    (tmp_path / "val").mkdir()
    _rgb((50, 43)).save(tmp_path / "val" / "a.png")
    item = SRDataset(tmp_path, "val", scale=4, hr_crop=0, train=False)[0]
    assert item["hr"].shape == (3, 40, 48) and item["lr"].shape == (3, 10, 12)
    up = bicubic_upscale(item["lr"][None], 4)
    assert up.shape == (1, 3, 40, 48) and up.min() >= -1 and up.max() <= 1


def test_small_images_are_skipped_and_counted(tmp_path, caplog):
    split = tmp_path / "train"
    split.mkdir()
    _rgb((100, 120)).save(split / "big.png")
    _rgb((95, 200)).save(split / "narrow.png")
    Image.new("L", (128, 96), 90).save(split / "gray.png")  # grayscale is converted, not rejected
    with caplog.at_level(logging.INFO, logger="gancompress.data.sr"):
        data = SRDataset(tmp_path, "train", scale=4, hr_crop=96)
    assert [p.name for p in data.files] == ["big.png", "gray.png"]
    assert "skipped 1 image(s) with a side under 96 px" in caplog.text
    gray = data[1]["hr"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    with pytest.raises(DataError, match="side under|>= 200 px"):
        SRDataset(tmp_path, "train", scale=4, hr_crop=200)


def test_truncated_images_follow_on_bad_image(tmp_path):
    split = tmp_path / "train"
    split.mkdir()
    _rgb((64, 64), 1).save(split / "a_good.png")
    _rgb((64, 64), 2).save(split / "c_good.png")
    header = split / "b_header.png"
    _rgb((64, 64)).save(header)
    header.write_bytes(header.read_bytes()[:20])
    with pytest.raises(DataError, match="b_header.png: not a readable image"):
        SRDataset(tmp_path, "train", hr_crop=32)
    kept = SRDataset(tmp_path, "train", hr_crop=32, on_bad_image="skip")
    assert [p.name for p in kept.files] == ["a_good.png", "c_good.png"]
    header.unlink()
    body = split / "b_body.png"
    _rgb((64, 64), 3).save(body)
    body.write_bytes(body.read_bytes()[: len(body.read_bytes()) // 2])  # the header still reads
    with pytest.raises(DataError, match="b_body.png: cannot decode image"):
        SRDataset(tmp_path, "train", hr_crop=32)  # the screening checks the whole file
    lenient = SRDataset(tmp_path, "train", hr_crop=32, on_bad_image="skip")
    assert [p.name for p in lenient.files] == ["a_good.png", "c_good.png"]
    item = lenient[(1, 0)]
    assert int(item["index"]) == 1 and item["hr"].shape == (3, 32, 32)


# --- recipe, VGG19 and losses -------------------------------------------------------------------

def test_vgg_layer_names_follow_torchvision():
    from torchvision.models.vgg import cfgs, make_layers

    names = vgg19_layer_names()
    features = make_layers(cfgs["E"])
    assert len(names) == len(features) == 37
    assert names.index("relu5_4") == 35  # SRGAN's VGG54 = vgg19().features[:36]
    kinds = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}
    assert all(isinstance(m, kinds[n.rstrip("0123456789_")]) for n, m in zip(names, features))


def test_recipe_checks_vgg_layer_and_scale(sr_root):
    with pytest.raises(RecipeError, match=r"model\.vgg_layer: unknown VGG19 layer 'relu6_1'.*relu5_4"):
        recipe_from_dict(_raw(sr_root, vgg_layer="relu6_1"), "r.yaml")
    with pytest.raises(RecipeError, match=r"model\.scale: must be a power of 2"):
        recipe_from_dict(_raw(sr_root, scale=3), "r.yaml")


def test_missing_vgg_weights_name_the_file_and_its_source(sr_root, tmp_path):
    family = _family(sr_root, content_loss="vgg")
    with pytest.raises(MissingFileError) as info:
        family.check_data()
    msg = str(info.value)
    assert "\n" not in msg and WEIGHTS_FILE in msg and "https://download.pytorch.org/models/" in msg
    assert "eval.vgg19_weights" in msg
    family = _family(sr_root, [f"eval.vgg19_weights={tmp_path / 'nowhere.pth'}"], content_loss="vgg")
    with pytest.raises(MissingFileError, match=f"nowhere.pth: file not found.*{WEIGHTS_FILE}"):
        family.check_data()


def test_vgg_content_loss_uses_frozen_normalised_features(sr_root, tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    full = make_layers(cfgs["E"][:3])  # conv1_1, relu1_1, conv1_2, relu1_2, pool1: enough for relu1_2
    path = tmp_path / WEIGHTS_FILE
    torch.save({f"features.{k}": v for k, v in full.state_dict().items()}, path)
    vgg = VGGFeatures(path, "relu1_2")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(vgg(x), full[:4](((x + 1) / 2 - mean) / std))
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training

    family = _family(sr_root, [f"eval.vgg19_weights={path}"], content_loss="vgg", vgg_layer="relu1_2")
    hr = torch.rand(2, 3, 48, 48) * 2 - 1
    fake = hr.clone().requires_grad_(True)
    assert float(family.task_loss({}, {}, {"G": fake}, {"hr": hr}).detach()) == 0.0
    fake = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    loss = family.task_loss({}, {}, {"G": fake}, {"hr": hr})
    loss.backward()
    assert loss > 0 and fake.grad.abs().sum() > 0
    with pytest.raises(MissingFileError, match=f"conv5_4|features.34|not torchvision's {WEIGHTS_FILE}"):
        VGGFeatures(path, "relu5_4")


def test_generator_adversarial_term_is_weighted(sr_root):
    family = _family(sr_root, adv_weight=1e-3)
    assert family.g_adv_weight == 1e-3
    torch.manual_seed(0)
    disc = family.build_discriminator("G")
    discs = torch.nn.ModuleDict({"G": disc})
    update = GANUpdate(family, "vanilla", None, discs, None, None, Precision("off", torch.device("cpu")))
    fake = torch.rand(2, 3, 48, 48) * 2 - 1
    got = update.g_adv(discs, {"G": None}, {"G": fake})
    torch.testing.assert_close(got, 1e-3 * losses.g_adv("vanilla", disc(fake)))
    hr = torch.rand(2, 3, 48, 48)
    assert torch.isclose(family.pretrain_loss({}, {}, {"G": fake}, {"hr": hr}), F.mse_loss(fake, hr))


# --- GCC's discriminator and learning-rate schedule ------------------------------------------------

@pytest.fixture
def one_thread():
    """Small nets run fastest on one thread, and several slow down on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_gcc_discriminator_has_four_conv_layers_and_a_pooled_linear_head():
    """Appendix Table II: SRGAN's D has 4 conv layers in all (distilled: 2 and 4); GCC's code
    pools them globally into one Linear. Widths 64, 64, 128, 128; strides 1, 2, 1, 2."""
    d = SRDiscriminator(ndf=64, n_blocks=4, fc=0, input_size=96)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in d.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == \
        [(3, 64, 1), (64, 64, 2), (64, 128, 1), (128, 128, 2)]
    assert [(l.in_features, l.out_features) for l in linears] == [(128, 1)]
    assert len(d.mask_points()) == 4 and d.mask_points()[1] is d.blocks[1] and d.mask_points()[3] is d.blocks[3]
    x = torch.randn(2, 3, 96, 96)
    seen = {}
    for i in (1, 3):
        d.mask_points()[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o.shape[1:]))
    assert d(x).shape == (2, 1)
    assert seen == {1: (64, 48, 48), 3: (128, 24, 24)}
    assert d(torch.randn(2, 3, 40, 40)).shape == (2, 1)  # any size: the pool is global
    # MACs at 96x96: each conv's output elements x fan-in (3x3 kernels), plus the Linear
    expected = 96 * 96 * 64 * 27 + 48 * 48 * 64 * 576 + 48 * 48 * 128 * 576 + 24 * 24 * 128 * 1152 + 128
    m = count_macs(d, x[:1])
    assert m.complete - expected < 0.01 * expected and m.complete >= expected  # thop adds BN/activation ops


def test_recipe_builds_the_gcc_discriminator_with_d_fc_zero(sr_root):
    family = _family(sr_root, d_blocks=4, d_fc=0, ndf=8)
    d = family.build_discriminator("G")
    assert len(d.blocks) == 4 and isinstance(d.head[-1], torch.nn.Linear) and d.head[-1].in_features == 16
    with pytest.raises(RecipeError, match=r"model\.d_fc"):
        recipe_from_dict(_raw(sr_root, d_fc=-1), "r.yaml")


def test_step_schedule_is_gccs_steplr_and_linear_stays_the_default():
    from gancompress.system.optim import schedule_factor

    step = [schedule_factor("step", e, const=15, decay=15) for e in range(30)]
    assert step == [1.0] * 15 + [pytest.approx(0.1)] * 15  # lr 1e-4, then 1e-5 (GCC's SRGAN)
    sched = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                                            step_size=10, gamma=0.5)
    for e in range(30):  # torch's StepLR stepped once per epoch, as GCC does
        assert schedule_factor("step", e, const=15, decay=15, step_every=10, step_gamma=0.5) == \
            pytest.approx(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    linear = [schedule_factor("linear", e, const=2, decay=3) for e in range(5)]
    assert linear == [1.0, 1.0, pytest.approx(0.75), pytest.approx(0.5), pytest.approx(0.25)]
    with pytest.raises(ValueError, match="linear, step"):
        schedule_factor("cosine", 0, const=1, decay=1)


@pytest.mark.usefixtures("one_thread")
def test_distill_stage_follows_the_recipes_schedule(sr_root):
    from gancompress.run.pipeline import make_distill_stage

    def lrs(*overrides):
        recipe = recipe_from_dict(_raw(sr_root), "tiny_srgan.yaml", list(overrides))
        family = get_family("srgan")(recipe)
        stage = make_distill_stage(family, recipe, torch.device("cpu"), {"G": family.build_generator("G", 8)})
        out = []
        for e in range(4):
            stage.set_epoch(e)
            out.append([o.param_groups[0]["lr"] for o in (stage.opt_tg, stage.opt_td, stage.opt_sg, stage.opt_sd)])
        return out

    step = lrs("distill.epochs_const=2", "distill.epochs_decay=2", "distill.lr_schedule=step",
               "train.lr_g=1e-3", "train.lr_d=1e-3")
    assert step == [[1e-3] * 4] * 2 + [[pytest.approx(1e-4)] * 4] * 2
    linear = lrs("distill.epochs_const=2", "distill.epochs_decay=2", "train.lr_g=1e-3", "train.lr_d=1e-3")
    assert linear[3][0] == pytest.approx(1e-3 / 3)


# --- the whole pipeline ----------------------------------------------------------------------------

@pytest.mark.slow
def test_pipeline_prunes_through_subpixel_blocks_and_scores_against_bicubic(sr_root, tmp_path):
    recipe = recipe_from_dict(_raw(sr_root), "tiny_srgan.yaml", ["distill.student_pretrain_epochs=1"])
    run = tmp_path / "run"
    report = compress(recipe, run, device="cpu")
    g = report["generators"]["G"]
    assert (run / "pretrain" / "pretrain_S.pt").is_file() and (run / "pretrain" / "pretrain_T.pt").is_file()
    # GCC's SRGAN student starts from an MSE-trained model of the pruned architecture
    pruned_student = torch.load(run / "pretrain" / "pretrain_P.pt", weights_only=True)
    assert {k.split(".")[0] for k in pruned_student} == {"G"}
    stages = {json.loads(line)["stage"] for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"pretrain_S", "pretrain_T", "pretrain_P", "sparse", "distill"} <= stages
    assert g["student_within_budget"] and g["student"]["macs"] < g["teacher"]["macs"]
    assert g["student"]["params"] < g["teacher"]["params"]
    assert g["input_shape"] == [1, 3, 12, 12]
    # Teacher and student share ngf 8 here, so narrower sub-pixel convs can only come from pruning.
    up = {k: v for k, v in g["widths"].items() if k.startswith("upsample.")}
    assert len(up) == 2 and all(s < t for t, s in up.values()), up
    assert all(s % 4 == 0 for _, s in up.values())  # whole channels: 4 filters each (scale 2 per block)
    m = report["metrics"]
    assert set(m) == {"teacher", "student", "bicubic"}
    assert all(r["psnr"] > 5 and 0 < r["ssim"] <= 1 for r in m.values())
    assert m["bicubic"]["psnr"] > 18  # the held-out photos are not noise
    assert json.loads((run / "report.json").read_text())["metrics"] == m
    ts = torch.jit.load(str(run / "export" / "generator.pt"))
    assert ts(torch.rand(1, 3, 24, 24) * 2 - 1).shape == (1, 3, 96, 96)
