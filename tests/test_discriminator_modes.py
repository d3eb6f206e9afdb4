"""discriminator.mode: every mode runs stage 3, and the recipe refuses what it cannot do."""
import pytest
import torch

from gancompress.errors import MissingFileError, RecipeError
from gancompress.families import get_family
from gancompress.families.recipe import recipe_from_dict
from gancompress.method.discriminators.dmd import DMDDiscriminator, find_dmd
from gancompress.method.discriminators.selective import SelectiveDiscriminator
from gancompress.run.pipeline import make_distill_stage

CPU = torch.device("cpu")


def _stage(tiny_raw, *overrides):
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", list(overrides))
    family = get_family("pix2pix")(recipe)
    torch.manual_seed(0)
    stage = make_distill_stage(family, recipe, CPU, {"G": family.build_generator("G", 4)})
    data = family.dataset("train", train=True)
    batches = [torch.utils.data.default_collate([data[(2 * i, i)], data[(2 * i + 1, i)]]) for i in range(4)]
    return stage, batches


def test_unknown_mode_lists_the_valid_ones(tiny_raw):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(tiny_raw, "tiny.yaml", ["discriminator.mode=dmdx"])
    message = str(err.value)
    assert message.startswith("tiny.yaml: discriminator.mode: expected one of")
    assert message.endswith("got 'dmdx'")
    for mode in ("selective", "plain", "none", "dmd", "selective+dmd", "glead"):
        assert f" {mode}," in message or f" {mode}, got" in message


def test_dmd_layer_past_the_discriminator_is_a_recipe_error(tiny_raw):
    with pytest.raises(RecipeError, match="discriminator.dmd.layer: 9 is past"):
        _stage(tiny_raw, "discriminator.mode=dmd", "discriminator.dmd.layer=9")


@pytest.mark.parametrize("mode, wrappers", [
    ("plain", ()), ("none", None), ("selective", (SelectiveDiscriminator,)), ("dmd", (DMDDiscriminator,)),
    ("selective+dmd", (SelectiveDiscriminator, DMDDiscriminator)), ("glead", ()),
])
@pytest.mark.slow
def test_each_mode_builds_its_discriminator_and_trains(tiny_raw, mode, wrappers):
    stage, batches = _stage(tiny_raw, f"discriminator.mode={mode}", "discriminator.dmd.interval=2",
                            "discriminator.dmd.samples=2")
    if wrappers is None:
        assert len(stage.s_discs) == 0
    else:
        d = stage.s_discs["G"]
        found = tuple(type(m) for m in d.modules() if isinstance(m, (SelectiveDiscriminator, DMDDiscriminator)))
        assert found == wrappers
    before = [p.detach().clone() for p in stage.s_gens.parameters()]
    logs = {}
    for i in range(4):
        logs = stage.step(batches[i], batches[(i + 1) % 4])
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, stage.s_gens.parameters()))
    extras = stage.log_extras()
    if "dmd" in mode:
        # two checks ran (after iterations 2 and 4); R_t and the on/off state are logged
        assert set(extras) >= {"dmd_R_G", "dmd_on_G"}
        assert -1.0 <= float(extras["dmd_R_G"]) <= 1.0
    else:
        assert not any(k.startswith("dmd") for k in extras)
    assert ("active_G" in extras) == mode.startswith("selective")
    assert ("S_glead" in logs) == (mode == "glead")


def test_dmd_state_survives_a_checkpoint(tiny_raw):
    over = ("discriminator.mode=dmd", "discriminator.dmd.interval=1", "discriminator.dmd.threshold=-1")
    stage, batches = _stage(tiny_raw, *over)
    stage.step(batches[0], batches[1])
    dmd = find_dmd(stage.s_discs["G"])
    assert dmd.active  # threshold -1: any R_t exceeds it
    state = stage.state_dict()
    other, _ = _stage(tiny_raw, *over)
    other.load_state_dict(state)
    assert other.iteration == 1 and find_dmd(other.s_discs["G"]).active
    assert torch.equal(find_dmd(other.s_discs["G"]).mask, dmd.mask)


def test_glead_trains_its_decoder_and_leaves_the_generator_loss_alone(tiny_raw):
    stage, batches = _stage(tiny_raw, "discriminator.mode=glead", "train.lr_d=1e-3")
    decoder = stage.mode.task.decoders["G"]
    assert decoder.out_shape[1:] == (16, 16)  # the U-Net tail's input: half the 32x32 image
    before = [p.detach().clone() for p in decoder.parameters()]
    recon = [stage.step(batches[i % 4], batches[(i + 1) % 4])["S_glead"].item() for i in range(3)]
    assert all(0 < r < 10 for r in recon)  # L1 of images in [-1, 1], real and fake summed
    assert all(not torch.equal(b, p) for b, p in zip(before, decoder.parameters()))

    # The GLeaD term gives the student generator no gradient (its tail runs with detached weights).
    stage.s_gens.zero_grad(set_to_none=True)
    batch = batches[0]
    inputs = stage.family.generator_inputs(batch)
    fake = stage.s_gens["G"](inputs["G"]).detach()
    stage.s_discs["G"](stage.family.d_input("G", inputs, fake))
    stage.mode.task.term("G", fake).backward()
    assert all(p.grad is None for p in stage.s_gens.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


def _classifier_file(path, generator):
    from gancompress.method.classifier import RealFakeClassifier, save_classifier

    torch.manual_seed(0)
    return str(save_classifier(path, RealFakeClassifier(3, width=4), {"generator": generator}))


def test_classifier_term_joins_the_student_loss(tiny_raw, tmp_path):
    """phi * L_fool reaches the student's gradient, weighted by phi; the classifier stays frozen."""
    path = _classifier_file(tmp_path / "c.pt", "G")
    grads, guides = {}, {}
    for phi in (0.0, 0.5, 1.0):
        stage, batches = _stage(tiny_raw, f"classifier.paths=[{path}]", f"classifier.phi={phi}")
        assert len(stage.classifiers["G"]) == 1
        classifier = stage.classifiers["G"][0]
        weights = [p.detach().clone() for p in classifier.parameters()]
        torch.manual_seed(1)  # the same dropout draws in every run
        logs = stage.step(batches[0], batches[1])
        assert all(torch.equal(w, p) for w, p in zip(weights, classifier.parameters()))  # frozen
        guides[phi] = logs["S_classifier"]
        grads[phi] = torch.cat([p.grad.flatten() for p in stage.s_gens["G"].parameters()])
    assert torch.isfinite(guides[0.5]) and guides[0.5] > 0
    assert torch.allclose(guides[0.0], guides[1.0])  # the same student output is judged in each run
    full = grads[1.0] - grads[0.0]  # the classifier term's own gradient
    assert full.abs().max() > 1e-6
    err = ((grads[0.5] - grads[0.0]) - 0.5 * full).abs().max()
    assert err < 0.05 * full.abs().max()  # float noise of sums over gradients about 1e4 times larger


def test_classifier_for_another_generator_is_refused(tiny_raw, tmp_path):
    path = _classifier_file(tmp_path / "c.pt", "AtoB")
    with pytest.raises(RecipeError, match="judges generator 'AtoB'"):
        _stage(tiny_raw, f"classifier.paths=[{path}]")


@pytest.mark.parametrize("overrides, error, message", [
    (["discriminator.mode=dmd", "discriminator.dmd.layer=9"], RecipeError, "discriminator.dmd.layer: 9 is past"),
    (["discriminator.mode=glead", "discriminator.glead.distance=perceptual"], MissingFileError,
     "eval.vgg19_weights is not set"),
    (["classifier.paths=[nowhere/c.pt]"], MissingFileError, "nowhere/c.pt: classifier file not found"),
])
def test_stage3_mistakes_stop_before_stage1_trains(tiny_raw, tmp_path, overrides, error, message):
    from gancompress.run.pipeline import compress

    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", overrides)
    with pytest.raises(error, match=message):
        compress(recipe, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@pytest.mark.slow
def test_cli_reports_a_stage3_mistake_in_one_line(tiny_raw, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_raw))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "tools" / "compress.py"), str(recipe), "--run-dir",
                           str(tmp_path / "run"), "--set", "discriminator.mode=dmd", "--set",
                           "discriminator.dmd.layer=9"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gancompress: error: discriminator.dmd.layer: 9 is past the pix2pix discriminator's 4 layers; choose 1..4"]
