"""Latency budgets: the recipe syntax, the search on a model of latency, its error paths, and stage 2
of the demo pix2pix recipe to a latency target on eager PyTorch.

No test asserts a timing value beyond its being positive: the search is checked on a fake latency
model, the real measurement only for the fields it leaves in the record.
"""
from __future__ import annotations

import random

import pytest

from gancompress.config.budget import RUNTIME_NAMES, Budget
from gancompress.errors import BudgetError, RecipeError
from gancompress.families.recipe import load_recipe, recipe_from_dict
from gancompress.method.latency_budget import search_latency

DEMO = "recipes/demo/pix2pix.yaml"


# --- the recipe syntax ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw, ms, runtime, batch", [
    ("6ms@onnxruntime:b1", 6.0, "onnxruntime", 1),
    ("12.5ms@eager:b8", 12.5, "eager", 8),
    (" 0.75 ms @ torchscript : b16 ", 0.75, "torchscript", 16),
    ("3e1ms@openvino:b2", 30.0, "openvino", 2),
])
def test_latency_forms_parse_and_round_trip(raw, ms, runtime, batch):
    b = Budget.from_raw(raw)
    assert b == Budget("latency", ms, runtime, batch) and b.is_latency
    assert Budget.from_raw(b.to_raw()) == b
    assert str(b) == f"{ms:g} ms on {runtime} at batch {batch}"


def test_macs_budgets_are_unchanged():
    assert Budget.from_raw(3.0) == Budget("gmacs", 3.0) and not Budget.from_raw(3.0).is_latency
    assert Budget.from_raw("25%").macs(4_000_000_000) == 1_000_000_000
    with pytest.raises(ValueError, match="no MACs until"):
        Budget.from_raw("6ms@eager:b1").macs(1)


@pytest.mark.parametrize("raw, message", [
    ("6ms", "expected a latency target '<number>ms@<runtime>:b<batch>'"),
    ("6ms@eager", "expected a latency target '<number>ms@<runtime>:b<batch>'"),
    ("6@eager:b1", "expected a latency target '<number>ms@<runtime>:b<batch>'"),
    ("6ms@tensorrt:b1", "unknown runtime 'tensorrt' in '6ms@tensorrt:b1': choose from eager, torchscript, "
                        "onnxruntime, openvino"),
    ("0ms@eager:b1", "a latency target must be a positive number of ms"),
    ("fastms@eager:b1", "a latency target must be a positive number of ms"),
    ("infms@eager:b1", "a latency target must be a positive number of ms"),
    ("6ms@eager:b0", "the batch of a latency target must be an integer from 1 to"),
    ("6ms@eager:b2.5", "the batch of a latency target must be an integer from 1 to"),
])
def test_bad_latency_forms_name_the_form_in_one_line(raw, message):
    with pytest.raises(ValueError) as e:
        Budget.from_raw(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_recipe_errors_name_the_key():
    with pytest.raises(RecipeError) as e:
        load_recipe(DEMO, ["prune.budget=6ms@tensorrt:b1"])
    assert str(e.value).startswith(f"{DEMO}: prune.budget: unknown runtime 'tensorrt'") and "\n" not in str(e.value)


def test_latency_budgets_per_generator_and_in_the_resolved_recipe(tiny_raw):
    recipe = load_recipe(DEMO, ["prune.budget=6ms@onnxruntime:b1"])
    assert recipe.prune.budget_for("G") == Budget("latency", 6.0, "onnxruntime", 1)
    raw = {**tiny_raw, "prune": {"budget": {"G": "2ms@eager:b4"}}}
    recipe = recipe_from_dict(raw, "r.yaml")
    assert recipe.prune.budget_for("G") == Budget("latency", 2.0, "eager", 4)
    from gancompress.config.sections import recipe_to_dict
    assert recipe_to_dict(recipe)["prune"]["budget"] == {"G": "2ms@eager:b4"}


def test_runtime_names_are_the_registry():
    from gancompress.metrics.runtimes import RUNTIMES
    assert tuple(RUNTIMES) == RUNTIME_NAMES


# --- the search on a model of latency --------------------------------------------------------------

TOTAL = 1000


def fake_latency(noise: float = 0.03, seed: int = 0):
    """ms falling smoothly with the removal count k (quadratically, like MACs with width), with noise;
    it counts how often each k is measured."""
    rng = random.Random(seed)
    calls: dict[int, int] = {}

    def measure(k: int) -> float:
        calls[k] = calls.get(k, 0) + 1
        return (10.0 * (1 - k / TOTAL) ** 2 + 0.5) * (1 + rng.uniform(-noise, noise))

    return measure, calls


@pytest.mark.parametrize("target", [1.0, 4.0, 8.0])
def test_search_lands_within_tolerance_and_measures_each_count_once(target):
    measure, calls = fake_latency()
    found = search_latency(measure, total=TOTAL, target_ms=target, tolerance=0.1)
    assert abs(found.ms - target) <= 0.1 * target
    assert found.ms == found.measured[found.k]
    assert set(calls.values()) == {1} and set(calls) == set(found.measured)
    assert len(calls) <= 14  # the bounds and a bisection of 1000 counts


def test_a_good_estimate_brackets_the_search():
    without, calls_without = fake_latency()
    search_latency(without, total=TOTAL, target_ms=4.0, tolerance=0.05)
    near = TOTAL * (1 - (3.5 / 10) ** 0.5)  # the count the noise-free model gives for 4 ms
    with_estimate, calls_with = fake_latency()
    found = search_latency(with_estimate, total=TOTAL, target_ms=4.0, tolerance=0.05, start=lambda: int(near) + 5)
    assert abs(found.ms - 4.0) <= 0.05 * 4.0
    assert len(calls_with) < len(calls_without)
    assert list(calls_with)[:3] == [0, TOTAL, int(near) + 5]


@pytest.mark.parametrize("start", [50, 950])
def test_a_poor_estimate_still_converges(start):
    measure, calls = fake_latency()
    found = search_latency(measure, total=TOTAL, target_ms=4.0, tolerance=0.1, start=lambda: start)
    assert abs(found.ms - 4.0) <= 0.4 and set(calls.values()) == {1}


def test_target_faster_than_the_smallest_net_is_refused_with_its_latency():
    measure, _ = fake_latency(noise=0.0)
    with pytest.raises(BudgetError) as e:
        search_latency(measure, total=TOTAL, target_ms=0.1, tolerance=0.1, what="on eager at batch 1")
    msg = str(e.value)
    assert "faster than the smallest prunable net's 0.5 ms" in msg and "on eager at batch 1" in msg
    assert "raise the target" in msg and "\n" not in msg


def test_target_the_unpruned_model_meets_is_refused():
    measure, calls = fake_latency(noise=0.0)
    with pytest.raises(BudgetError, match="already runs in 10.5 ms, no slower than the target 20 ms.*nothing to prune"):
        search_latency(measure, total=TOTAL, target_ms=20.0, tolerance=0.1)
    assert list(calls) == [0]


def test_a_step_too_coarse_for_the_tolerance_reports_the_nearest():
    def steps(k: int) -> float:  # latency in big steps (coarse round_to): nothing within 1 % of 5 ms
        return 10.0 if k < 500 else 1.0

    with pytest.raises(BudgetError) as e:
        search_latency(steps, total=TOTAL, target_ms=5.0, tolerance=0.01)
    assert "cannot reach 5 ms within 1%" in str(e.value) and "nearest measured net runs in" in str(e.value)
    assert "prune.latency_tolerance" in str(e.value)


# --- stage 2 of the demo recipe, timed for real ----------------------------------------------------

@pytest.fixture(scope="module")
def demo64(tmp_path_factory):
    from gancompress.demo.makers import make_pix2pix_demo

    root = tmp_path_factory.mktemp("demo64")
    make_pix2pix_demo(root, n_train=4, n_val=2, size=64, seed=0, segmenter_epochs=0)
    return root


def test_demo_recipe_pruned_to_a_latency_budget_records_what_it_measured(demo64, tmp_path, monkeypatch):
    from gancompress.families import get_family
    from gancompress.files.checkpoint import safe_load
    from gancompress.files.rundir import RunDir
    from gancompress.metrics.macs import count_macs
    from gancompress.run import latency_budget as run_latency
    from gancompress.run.latency_budget import dry_run_lines
    from gancompress.run.pipeline import compress

    sets = [f"data.root={demo64}", "sparse.epochs=1", "eval.segmenter=", "prune.latency_max_time=0.05"]
    probe = load_recipe(DEMO, sets + ["prune.budget=1000ms@eager:b1"])
    family = get_family("pix2pix")(probe)
    lines = dry_run_lines(family, probe, "G", probe.prune.budget_for("G"))  # timed for real
    assert len(lines) == 4 and "not reachable: the teacher already meets" in lines[-1]
    teacher_ms = float(lines[1].split(": ")[-1].removesuffix(" ms"))
    smallest_ms = float(lines[2].split(": ")[-1].removesuffix(" ms"))
    assert teacher_ms > 0 and smallest_ms > 0

    # The search through the pipeline, on a latency model without timing noise (1 ms per complete
    # MMAC): a busy machine's timings (the teacher measured at 1.5x-5x the smallest net on a loaded
    # CPU) cannot make it flaky, and where it lands can be checked against the target.
    def fake_time(runtime, model, example, **_kw):
        return {"median_ms": count_macs(model, example).complete / 1e6, "iqr_ms": 0.0, "runs": 1}
    monkeypatch.setattr(run_latency, "time_runtime", fake_time)
    recipe = load_recipe(DEMO, sets + ["prune.budget=30ms@eager:b1", "prune.latency_tolerance=0.1"])
    result = compress(recipe, tmp_path / "run", device="cpu", until="prune")
    entry = safe_load(RunDir(tmp_path / "run").pruned)["G"]
    lat = entry["latency"]
    assert {"target_ms", "runtime", "batch", "measured_ms", "macs", "tolerance", "device", "threads",
            "nets_timed"} <= set(lat)
    assert (lat["runtime"], lat["batch"], lat["device"], lat["target_ms"]) == ("eager", 1, "cpu", 30.0)
    assert abs(lat["measured_ms"] / 30.0 - 1) <= 0.1 and lat["nets_timed"] >= 2
    assert lat["macs"] == entry["macs"] == entry["budget"] and entry["removed"] > 0
    assert lat["measured_ms"] == pytest.approx(entry["macs"] / 1e6)
    assert result["generators"]["G"]["latency"]["measured_ms"] == lat["measured_ms"]


def test_report_says_the_latency_budget_and_old_reports_still_read():
    from gancompress.run.report import budget_line

    old = {"budget": 0.0075, "budget_tolerance": 0.02}
    assert budget_line(old) == "Budget 0.0075 GMACs (tolerance 2%)"
    new = {**old, "latency_budget": {"target_ms": 6.0, "runtime": "onnxruntime", "batch": 1, "tolerance": 0.1,
                                     "device": "cpu", "threads": 2, "measured_ms": 5.8, "macs": 0.0075}}
    line = budget_line(new)
    assert line.startswith("Latency budget 6 ms on onnxruntime at batch 1 (tolerance 10%, cpu, torch threads 2)")
    assert "measured 5.8 ms at 0.0075 GMACs" in line
