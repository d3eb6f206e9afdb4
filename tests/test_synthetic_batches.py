"""Every family's synthetic batch drives one stage-3 iteration at batch size 2 (tools/benchmark.py)."""
from pathlib import Path

import pytest
import torch

from gancompress.families import FAMILIES, get_family
from gancompress.families.recipe import load_recipe
from gancompress.method.discriminators.dmd import find_dmd
from gancompress.run.pipeline import make_distill_stage

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_every_family_has_a_demo_recipe():
    assert set(FAMILIES) <= {p.stem for p in (ROOT / "recipes" / "demo").glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_stage3_runs_one_iteration_on_the_synthetic_batch(name):
    # The demo recipe of the family as shipped (its sizes are small); fp32 on the CPU.
    recipe = load_recipe(ROOT / "recipes" / "demo" / f"{name}.yaml")
    family = get_family(name)(recipe)
    torch.manual_seed(0)
    student = {n: family.build_generator(n, recipe.model.ngf_student) for n in family.generator_names}
    stage = make_distill_stage(family, recipe, CPU, student)
    stage.set_epoch(0)
    batch, batch2 = family.synthetic_batch(2, CPU), family.synthetic_batch(2, CPU)
    inputs = family.generator_inputs(batch)
    for n in family.generator_names:
        assert inputs[n].shape == family.example_input(n, 2).shape
        with torch.no_grad():
            out = stage.s_gens[n](inputs[n])
        assert family.real(n, batch).shape == out.shape
    assert batch["index"].tolist() == [0, 1]
    before = [p.detach().clone() for p in stage.s_gens.parameters()]
    logs = stage.step(batch, batch2)
    assert {"S_G_task", "S_content", "S_texture", "alpha_loss"} <= set(logs)
    assert all(torch.isfinite(v).all() for v in logs.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, stage.s_gens.parameters()))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dmd-feature", "dmd-input", "dmd-head", "selective+dmd", "glead"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_discriminator_mode_runs_on_every_family(name, mode):
    over = [f"discriminator.mode={mode.split('-')[0]}", "discriminator.dmd.interval=1",
            "discriminator.dmd.samples=2", "discriminator.dmd.threshold=-1"]  # check at once, mask on
    if mode.startswith("dmd-"):
        over.append(f"discriminator.dmd.placement={mode.split('-')[1]}")
    recipe = load_recipe(ROOT / "recipes" / "demo" / f"{name}.yaml", over)
    family = get_family(name)(recipe)
    torch.manual_seed(0)
    student = {n: family.build_generator(n, recipe.model.ngf_student) for n in family.generator_names}
    stage = make_distill_stage(family, recipe, CPU, student)
    stage.set_epoch(0)
    g_before = [p.detach().clone() for p in stage.s_gens.parameters()]
    d_before = [p.detach().clone() for p in stage.s_discs.parameters()]
    extra_before = [p.detach().clone() for p in stage.mode.extra_d_parameters()]
    for _ in range(2):
        logs = stage.step(family.synthetic_batch(2, CPU), family.synthetic_batch(2, CPU))
    assert all(torch.isfinite(v).all() for v in logs.values())
    # both the student generator and its discriminator trained
    assert any(not torch.equal(a, b) for a, b in zip(g_before, stage.s_gens.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, stage.s_discs.parameters()))
    if "dmd" in mode:
        dmds = [find_dmd(d) for d in stage.s_discs.values()]
        assert len(dmds) == len(family.generator_names) and all(d is not None and d.active for d in dmds)
        name = family.generator_names[0]
        d, dmd = stage.s_discs[name], dmds[0]
        inputs = family.generator_inputs(family.synthetic_batch(2, CPU))
        with torch.no_grad():
            image = family.d_input(name, inputs, stage.s_gens[name](inputs[name]))
            masked = d(image)
            dmd.active = False
            plain = d(image)
            dmd.active = True
        assert not torch.allclose(masked, plain)  # the mask changes what D computes
    else:
        assert logs["S_glead"] > 0
        assert extra_before and any(not torch.equal(a, b) for a, b in
                                    zip(extra_before, stage.mode.extra_d_parameters()))  # the decoder learns
