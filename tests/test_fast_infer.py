"""The fast inference wrapper's CPU fallback and the benchmark's pruned-vs-uniform comparison.

The CUDA paths (graph capture and replay, torch.compile, bf16, channels_last) need a GPU and
are not exercised here.
"""
import json
from pathlib import Path

import pytest
import torch

from gancompress.families import get_family
from gancompress.families.recipe import load_recipe
from gancompress.metrics.macs import count_macs
from gancompress.system.fast_infer import FastGenerator

ROOT = Path(__file__).resolve().parents[1]


def _family(name="pix2pix"):
    recipe = load_recipe(ROOT / "recipes" / "demo" / f"{name}.yaml")
    return get_family(name)(recipe)


def test_on_the_cpu_every_mode_falls_back_to_eager_and_stays_in_eval():
    family = _family()
    torch.manual_seed(0)
    g = family.build_generator("G", 8)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    fast = FastGenerator(g, x, mode="cuda_graph", bf16=True, channels_last=True)
    assert fast.mode == "eager" and not fast.bf16 and not fast.channels_last
    fast.train()  # timing helpers restore a training flag; dropout and BatchNorm must stay off
    assert not g.training
    assert torch.equal(fast(x), g.eval()(x))
    with pytest.raises(ValueError, match="unknown fast-inference mode"):
        FastGenerator(g, x, mode="tensorrt")


@pytest.mark.slow
def test_nearest_uniform_width_is_the_nearest_of_all_widths():
    from gancompress.experiments import benchmark as bench
    family = _family("cyclegan")
    example = family.example_input("AtoB", 1)
    macs = {w: count_macs(family.build_generator("AtoB", w), example).complete for w in range(1, 17)}
    for target in (macs[5] + 1, (macs[9] + macs[10]) // 2, macs[12], macs[16] * 2):
        width, found = bench.nearest_uniform_width(family, "AtoB", target, 16)
        assert found == macs[width]
        assert abs(found - target) == min(abs(m - target) for m in macs.values())


@pytest.mark.slow
def test_benchmark_compares_the_pruned_student_with_a_uniform_one(tmp_path):
    out = tmp_path / "bench.json"
    from gancompress.cli import main
    code = main(["benchmark", str(ROOT / "recipes" / "demo" / "pix2pix.yaml"), "--no-stage3", "--iters", "1",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    cmp = json.loads(out.read_text())["pruned_vs_uniform"]
    assert set(cmp["ratio"]) == {"eager_fp32_b1", "eager_fp32_b16"}
    assert all(r > 0 for r in cmp["ratio"].values())
    assert set(cmp["within_10pct_at_b16"]) == {"eager_fp32_b16"}
    # The pruned student is smaller than the unpruned student it came from, and the uniform
    # generator is narrower than that student too.
    family = _family()
    unpruned = count_macs(family.build_generator("G", family.cfg.ngf_student), family.example_input("G", 1))
    assert 0 < cmp["pruned_gmacs"] < unpruned.complete / 1e9
    assert cmp["uniform_ngf"] < family.cfg.ngf_student
