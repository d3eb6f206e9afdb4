"""Loading pytorch-CycleGAN-and-pix2pix and gancompress generator files into our nets.

The reference nets below rebuild pix2pix's UnetGenerator / ResnetGenerator / NLayerDiscriminator
module trees from their documented layout (nested UnetSkipConnectionBlock, Sequential indices,
in-place activations, dropout positions, conv bias only with InstanceNorm), so a state dict they
write has the keys and shapes of the real code's files.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from reference_cyclegan import RefNLayerD, RefResnet, RefUnet, randomise
from torch import nn

from gancompress.errors import CheckpointError, RecipeError
from gancompress.families import get_family
from gancompress.families.recipe import recipe_from_dict
from gancompress.pretrained.discriminator_files import inspect_discriminator_file
from gancompress.pretrained.generator_files import (
    GENERATOR_FORMAT,
    implied_settings,
    inspect_generator_file,
    recipe_mismatches,
)
from gancompress.pretrained.loading import (
    build_pretrained_generator,
    check_pretrained,
    load_pretrained_discriminator,
    load_pretrained_generator,
)

# ----------------------------------------------------------------------------------------------
# Families


def family(name: str, **model):
    raw = {"name": "t", "family": name, "model": model, "data": {"crop_size": 32}, "sparse": {"method": "l1"}}
    return get_family(name)(recipe_from_dict(raw, "test.yaml"))


def pix2pix(**model):
    base = {"netG": "unet", "num_downs": 7, "ngf_teacher": 8, "ngf_student": 4, "ndf": 8, "norm": "batch"}
    return family("pix2pix", **{**base, **model})


def cyclegan(**model):
    base = {"netG": "resnet", "n_blocks": 6, "ngf_teacher": 8, "ngf_student": 4, "ndf": 8, "lambda_identity": 0}
    return family("cyclegan", **{**base, **model})


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def assert_same_outputs(ref: nn.Module, ours: nn.Module, x: torch.Tensor, dropout: bool) -> None:
    """Eval mode, then train mode (batch statistics; dropout seeded alike): identical outputs."""
    ref.eval(), ours.eval()
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max().item() < 1e-6
    ref.train(), ours.train()
    with torch.no_grad():
        torch.manual_seed(3)
        a = ref(x)
        torch.manual_seed(3)
        b = ours(x)
    assert (a - b).abs().max().item() < 1e-6
    for (k, r), o in zip(ref.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(r.float(), o.float()), k  # running statistics updated alike
    if dropout:  # dropout really ran: another seed gives another output
        torch.manual_seed(4)
        with torch.no_grad():
            assert (ours(x) - b).abs().max().item() > 1e-4


# ----------------------------------------------------------------------------------------------
# Generators


@pytest.mark.parametrize("num_downs,size", [(7, 128), (8, 256)])
@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("dropout", [False, True])
def test_cyclegan_unet_loads_and_computes_the_same(tmp_path, num_downs, size, norm, dropout):
    ref = randomise(RefUnet(3, 2, num_downs, 8, norm, dropout), seed=num_downs)
    path = save(ref.state_dict(), tmp_path / "latest_net_G.pth")

    info = inspect_generator_file(path)
    assert (info.layout, info.netG, info.ngf, info.num_downs, info.norm) == ("cyclegan-unet", "unet", 8, num_downs, norm)
    assert (info.input_nc, info.output_nc, info.dropout) == (3, 2, None)  # U-Net dropout leaves no key
    assert "dropout" not in implied_settings(info)

    fam = pix2pix(num_downs=num_downs, norm=norm, dropout=dropout, output_nc=2)
    assert recipe_mismatches(info, fam.cfg) == {}
    ours, _ = build_pretrained_generator(path, fam, "G", 8)
    x = torch.rand(256 // size, 3, size, size) * 2 - 1  # batch 1 at 256: batch norm still sees 2x2 maps
    assert_same_outputs(ref, ours, x, dropout)


@pytest.mark.parametrize("n_blocks", [6, 9])
@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("dropout", [False, True])
def test_cyclegan_resnet_loads_and_computes_the_same(tmp_path, n_blocks, norm, dropout):
    ref = randomise(RefResnet(3, 3, 8, n_blocks, norm, dropout), seed=n_blocks)
    path = save(ref.state_dict(), tmp_path / "latest_net_G_A.pth")

    info = inspect_generator_file(path)
    assert (info.layout, info.netG, info.ngf, info.n_blocks, info.norm) == ("cyclegan-resnet", "resnet", 8, n_blocks, norm)
    assert info.dropout is (None if dropout else False)  # the file holds no dropout rate

    def host(dropout):  # the cyclegan family builds instance norm only; pix2pix hosts a batch-norm ResNet
        if norm == "instance":
            return cyclegan(n_blocks=n_blocks, dropout=dropout), "AtoB"
        return pix2pix(netG="resnet", n_blocks=n_blocks, dropout=dropout), "G"

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    # the other dropout setting shifts the block indices and computes the same in eval mode
    other, _ = build_pretrained_generator(path, *host(not dropout), 8)
    with torch.no_grad():
        assert (ref.eval()(x) - other(x)).abs().max().item() < 1e-6
    ours, _ = build_pretrained_generator(path, *host(dropout), 8)
    assert_same_outputs(ref, ours, x, dropout)


def test_old_files_instance_running_stats_dropped_batch_counter_added(tmp_path):
    ref = randomise(RefResnet(3, 3, 8, 6, "instance_old"), seed=1)
    path = save(ref.state_dict(), tmp_path / "old_in.pth")
    info = inspect_generator_file(path)
    assert info.norm == "instance" and any("dropped" in n for n in info.notes)
    ours, _ = build_pretrained_generator(path, cyclegan(), "AtoB", 8)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # pix2pix's loader drops the buffers too: instance statistics are used
        assert (ref.train()(x) - ours(x)).abs().max().item() < 1e-6

    ref = randomise(RefUnet(3, 3, 7, 8, "batch"), seed=2)
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = save(state, tmp_path / "old_bn.pth")
    ours, info = build_pretrained_generator(path, pix2pix(), "G", 8)
    assert any("num_batches_tracked" in n for n in info.notes)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert (ref.eval()(x) - ours(x)).abs().max().item() < 1e-6


def test_our_state_dicts_and_generator_files_load(tmp_path):
    from gancompress.export.generator import GENERATOR_FORMAT as EXPORT_FORMAT
    from gancompress.export.generator import save_generator

    assert GENERATOR_FORMAT == EXPORT_FORMAT
    fam = pix2pix(norm="instance_affine")
    net = randomise(fam.build_generator("G", 8), seed=5)
    info = inspect_generator_file(save(net.state_dict(), tmp_path / "sd.pth"))
    assert (info.layout, info.norm, info.num_downs, info.ngf) == ("ours-state-dict", "instance_affine", 7, 8)
    state, _ = load_pretrained_generator(tmp_path / "sd.pth", fam, "G", 8)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())

    cyc = cyclegan(netG="mobile", n_blocks=3, input_nc=1, output_nc=3)
    net = randomise(cyc.build_generator("BtoA", 8), seed=6)  # BtoA maps 3 channels to 1
    path = save_generator(tmp_path / "g.pt", net, cyc.recipe, "BtoA", 8)
    info = inspect_generator_file(path)
    assert (info.layout, info.family, info.generator, info.netG, info.pruned) == ("gancompress", "cyclegan", "BtoA", "mobile", False)
    assert (info.input_nc, info.output_nc) == (3, 1)
    assert recipe_mismatches(info, cyc.cfg, family="cyclegan", name="BtoA") == {}
    state, _ = load_pretrained_generator(path, cyc, "BtoA", 8)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(CheckpointError, match="family cyclegan.*set family: cyclegan"):
        load_pretrained_generator(path, pix2pix(), "G", 8)

    narrow = pix2pix(ngf_teacher=4).build_generator("G", 4)  # weights narrower than the recorded ngf
    path = save_generator(tmp_path / "pruned.pt", narrow, fam.recipe, "G", 8)
    assert inspect_generator_file(path).pruned
    with pytest.raises(CheckpointError, match="pruned weights"):
        load_pretrained_generator(path, fam, "G", 8)

    state = {f"module.{k}": v for k, v in randomise(RefUnet(3, 3, 7, 8), seed=0).state_dict().items()}
    info = inspect_generator_file(save(state, tmp_path / "dataparallel.pth"))
    assert info.layout == "cyclegan-unet" and any("'module.'" in n for n in info.notes)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_files_that_do_not_fit_are_refused_in_one_line(tmp_path):
    state = randomise(RefUnet(3, 3, 7, 8, "batch"), seed=0).state_dict()

    bad = dict(state)
    bad["model.model.1.model.3.model.1.weight"] = torch.zeros(32, 16, 3, 3)
    with pytest.raises(CheckpointError) as e:
        inspect_generator_file(save(bad, tmp_path / "shape.pth"))
    assert "'model.model.1.model.3.model.1.weight' (our 'downs.2.1.weight') has shape (32, 16, 3, 3)" in one_line(e)

    bad = {k: v for k, v in state.items() if k != "model.model.1.model.3.model.6.running_var"}
    with pytest.raises(CheckpointError) as e:
        inspect_generator_file(save(bad, tmp_path / "missing.pth"))
    assert "'model.model.1.model.3.model.6.running_var' (our 'ups.4.2.running_var') (16,) is missing" in one_line(e)

    bad = {**state, "model.model.1.model.9.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError) as e:
        inspect_generator_file(save(bad, tmp_path / "unexpected.pth"))
    assert "'model.model.1.model.9.weight' (3,) is unexpected" in one_line(e)

    class RunsCode:
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "ran"),)

    path = save({"model.model.0.weight": RunsCode()}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError) as e:
        inspect_generator_file(path)
    assert "refused to load" in one_line(e) and "mkdir" in str(e.value)
    assert not (tmp_path / "ran").exists()

    path = save(nn.Linear(2, 2), tmp_path / "module.pth")  # a whole pickled module
    with pytest.raises(CheckpointError) as e:
        inspect_generator_file(path)
    assert "torch.nn.modules.linear.Linear" in one_line(e)


def test_recipe_mismatch_names_the_settings_to_change(tmp_path):
    ref = randomise(RefUnet(3, 3, 8, 8, "instance"), seed=0)
    path = save(ref.state_dict(), tmp_path / "latest_net_G.pth")
    with pytest.raises(CheckpointError) as e:
        load_pretrained_generator(path, pix2pix(num_downs=7, norm="batch"), "G", 16)
    message = one_line(e)
    assert "model.ngf_teacher: 8 (now 16)" in message and "model.num_downs: 8 (now 7)" in message
    assert "model.norm: instance (now batch)" in message and "model.model.0" in message

    ref = randomise(RefResnet(3, 3, 8, 6, "instance", dropout=True), seed=0)
    path = save(ref.state_dict(), tmp_path / "latest_net_G_B.pth")
    with pytest.raises(CheckpointError) as e:
        load_pretrained_generator(path, cyclegan(n_blocks=9, dropout=False), "BtoA", 8)
    message = one_line(e)
    assert message.split("to load it set ")[-1] == "model.n_blocks: 6 (now 9)"
    assert "'model.16.weight' (32, 16, 3, 3) is unexpected" in message  # the first up conv of 6 blocks


@pytest.mark.parametrize("norm,n_layers", [("batch", 3), ("instance", 2)])
def test_patchgan_discriminator_loads_and_computes_the_same(tmp_path, norm, n_layers):
    ref = randomise(RefNLayerD(6, 8, n_layers, norm), seed=n_layers).eval()
    path = save(ref.state_dict(), tmp_path / "latest_net_D.pth")
    info = inspect_discriminator_file(path)
    assert (info.layout, info.ndf, info.n_layers, info.norm, info.input_nc) == ("cyclegan-patchgan", 8, n_layers, norm, 6)
    fam = pix2pix(norm=norm, n_layers_D=n_layers)
    state, _ = load_pretrained_discriminator(path, fam, "G")
    d = fam.build_discriminator("G")
    d.load_state_dict(state)
    x = torch.rand(2, 6, 64, 64)
    with torch.no_grad():
        assert (ref(x) - d.eval()(x)).abs().max().item() < 1e-6
    with pytest.raises(CheckpointError) as e:
        load_pretrained_discriminator(path, pix2pix(norm=norm, n_layers_D=n_layers, ndf=16), "G")
    assert "model.ndf: 8 (now 16)" in one_line(e)


def test_check_pretrained_reads_every_file_and_names_training_only_differences(tmp_path):
    g_a = save(randomise(RefResnet(3, 3, 8, 6, "instance"), seed=0).state_dict(), tmp_path / "latest_net_G_A.pth")
    d_a = save(randomise(RefNLayerD(3, 8, 3, "instance"), seed=0).state_dict(), tmp_path / "latest_net_D_A.pth")
    fam = cyclegan(dropout=True)
    lines = check_pretrained(fam, {"AtoB": g_a}, {"AtoB": d_a}, ngf=8)
    assert len(lines) == 2 and lines[0].startswith(f"pretrained.generators.AtoB: {g_a}: pytorch-CycleGAN-and-pix2pix ResNet")
    assert "model.dropout (true, the file false; training only)" in lines[0]
    assert "ndf 8, n_layers_D 3, norm instance" in lines[1]
    with pytest.raises(RecipeError, match="pretrained.generators.G: the cyclegan family has no generator 'G'"):
        check_pretrained(fam, {"G": g_a}, ngf=8)


@pytest.mark.parametrize("name", ["sagan", "srgan"])
def test_our_own_discriminators_state_dicts_load_in_every_family(tmp_path, name):
    """A discriminator file of the family's own D (spectral-norm convs in SAGAN's) loads as it is."""
    from gancompress.families.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo" / f"{name}.yaml")
    fam = get_family(name)(recipe)
    torch.manual_seed(3)
    d = fam.build_discriminator("G")
    path = save(d.state_dict(), tmp_path / "d.pth")
    state, info = load_pretrained_discriminator(path, fam, "G")
    assert info.layout == "ours-state-dict"
    fresh = fam.build_discriminator("G")
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(d.state_dict().values(), fresh.state_dict().values()))
