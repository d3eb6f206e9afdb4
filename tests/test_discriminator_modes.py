"""discriminator.mode: every mode runs stage 3, and the recipe refuses what it cannot do."""
import pytest
import torch

from gancompress.config import recipe_from_dict
from gancompress.discriminators.dmd import DMDDiscriminator
from gancompress.discriminators.selective import SelectiveDiscriminator
from gancompress.errors import RecipeError
from gancompress.families import get_family
from gancompress.stages import DistillStage

CPU = torch.device("cpu")


def _stage(tiny_raw, *overrides):
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", list(overrides))
    family = get_family("pix2pix")(recipe)
    torch.manual_seed(0)
    stage = DistillStage(family, recipe, CPU, {"G": family.build_generator("G", 4)})
    data = family.dataset("train", train=True)
    batches = [torch.utils.data.default_collate([data[(2 * i, i)], data[(2 * i + 1, i)]]) for i in range(4)]
    return stage, batches


def test_unknown_mode_lists_the_valid_ones(tiny_raw):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(tiny_raw, "tiny.yaml", ["discriminator.mode=dmdx"])
    message = str(err.value)
    assert message.startswith("tiny.yaml: discriminator.mode: expected one of")
    for mode in ("'selective'", "'plain'", "'none'", "'dmd'", "'selective+dmd'", "'glead'"):
        assert mode in message


def test_dmd_layer_past_the_discriminator_is_a_recipe_error(tiny_raw):
    with pytest.raises(RecipeError, match="discriminator.dmd.layer: 9 is past"):
        _stage(tiny_raw, "discriminator.mode=dmd", "discriminator.dmd.layer=9")


@pytest.mark.parametrize("mode, wrappers", [
    ("plain", ()), ("none", None), ("selective", (SelectiveDiscriminator,)), ("dmd", (DMDDiscriminator,)),
    ("selective+dmd", (SelectiveDiscriminator, DMDDiscriminator)),
])
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


def test_dmd_state_survives_a_checkpoint(tiny_raw):
    over = ("discriminator.mode=dmd", "discriminator.dmd.interval=1", "discriminator.dmd.threshold=-1")
    stage, batches = _stage(tiny_raw, *over)
    stage.step(batches[0], batches[1])
    dmd = stage.dmd["G"]
    assert dmd.active  # threshold -1: any R_t exceeds it
    state = stage.state_dict()
    other, _ = _stage(tiny_raw, *over)
    other.load_state_dict(state)
    assert other.iteration == 1 and other.dmd["G"].active
    assert torch.equal(other.dmd["G"].mask, dmd.mask)
