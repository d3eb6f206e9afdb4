"""Every recipe mistake is caught before stage 1 trains (the pre-flight check).

The first test walks every recipe key that declares a range (every section, every family's
``model`` section) and proves a value outside it is refused when the recipe is read. The second
takes mistakes that pass the schema and would surface only in a later stage, and proves each
stops ``compress`` with one line before any training starts.
"""
from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from gancompress.config.schema import field_range
from gancompress.config.sections import Recipe
from gancompress.errors import GanCompressError, RecipeError
from gancompress.families import FAMILIES
from gancompress.families.recipe import recipe_from_dict
from gancompress.run import pipeline, stage_runs


def _ranged_fields(cls, prefix=""):
    """(key path, field, type) of every ranged field under dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _ranged_fields(tp, f"{prefix}{f.name}.")
        elif field_range(f) is not None:
            yield f"{prefix}{f.name}", f, tp


def _outside(f, tp):
    """Values just outside the field's range, of the field's own type."""
    lo, hi, lo_open = field_range(f)
    is_int = tp is int or int in typing.get_args(tp)
    step = 1 if is_int else 1e-6
    out = []
    if lo is not None:
        out.append(lo if lo_open else (lo - step if is_int else lo - max(step, abs(lo) * 1e-6)))
    if hi is not None:
        out.append(hi + step if is_int else hi * (1 + 1e-6) + step)
    return [int(v) if is_int else float(v) for v in out]


def _set(raw, path, value):
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def _raws():
    """A valid raw recipe of each family (the demo recipes, read as plain data)."""
    from pathlib import Path

    import yaml
    root = Path(__file__).resolve().parents[1] / "recipes" / "demo"
    return {name: yaml.safe_load((root / f"{name}.yaml").read_text()) for name in FAMILIES}


CASES = []
for _family, _raw in _raws().items():
    for _path, _f, _tp in _ranged_fields(Recipe):
        CASES += [(_family, _path, v) for v in _outside(_f, _tp)]
    for _path, _f, _tp in _ranged_fields(FAMILIES[_family].ModelConfig, "model."):
        CASES += [(_family, _path, v) for v in _outside(_f, _tp)]


def test_the_walk_covers_the_keys_that_matter():
    paths = {p for _, p, _ in CASES}
    for key in ("seed", "data.num_workers", "distill.epochs_const", "sparse.epochs", "export.opset",
                "discriminator.tau", "model.num_downs", "model.n_layers_D", "model.ngf_teacher"):
        assert key in paths, key


@pytest.mark.parametrize("family,path,value", CASES, ids=[f"{f}:{p}={v}" for f, p, v in CASES])
def test_every_ranged_key_is_checked_when_the_recipe_is_read(family, path, value):
    raw = _raws()[family]
    _set(raw, path, value)
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(raw, "r.yaml")
    message = str(info.value)
    assert message.startswith(f"r.yaml: {path}: ") and "\n" not in message


# Mistakes the schema lets through, each found by the pre-flight check: (overrides, words of the message).
LATE_MISTAKES = [
    (["distill.d_layers=[2, 9]"], "distill.d_layers: layer 9 is past"),
    (["train.amp=fp16"], "train.amp: fp16 needs a CUDA device"),
    (["model.num_downs=6"], "model.num_downs: a U-Net with 6 downsamplings"),
    (["model.n_layers_D=50"], "cannot run on the recipe's input"),
    (["data.crop_size=48", "data.load_size=40"], "data.crop_size: 48 is larger than data.load_size"),
    (["prune.budget=1e5"], "prune.budget: 100000 GMACs for generator G is"),
    (["model.ngf_student=4", "prune.budget=90%"], "not below the sparse model's"),
    (["model.ngf_teacher=100000000"], "choose a smaller model.ngf_teacher"),
    (["model.ngf_teacher=30000"], "choose a smaller model.ngf_teacher"),
    (["discriminator.mode=dmd", "discriminator.dmd.layer=9"], "discriminator.dmd.layer: 9 is past"),
    (["eval.segmenter=nowhere/seg.pt"], "eval.segmenter: nowhere/seg.pt does not exist"),
    (["classifier.paths=[nowhere/c.pt]"], "nowhere/c.pt: classifier file not found"),
    (["distill.teacher=continue", "model.ngf_student=6"], "model.ngf_teacher must equal model.ngf_student"),
]


@pytest.mark.parametrize("overrides,needle", LATE_MISTAKES, ids=[o[0] for o, _ in LATE_MISTAKES])
def test_late_mistakes_stop_the_run_before_stage_1(tiny_raw, tmp_path, monkeypatch, overrides, needle):
    def no_training(*_a, **_k):
        raise AssertionError("training started before the mistake was caught")
    monkeypatch.setattr(stage_runs, "train_stage", no_training)
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", overrides)  # the schema lets each of them through
    with pytest.raises(GanCompressError) as info:
        pipeline.compress(recipe, tmp_path / "run", device="cpu")
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # nothing was written either


def test_a_correct_recipe_passes_the_preflight(tiny_raw):
    from gancompress.families import get_family
    from gancompress.run.preflight import preflight
    del tiny_raw["data"]["num_workers"]  # automatic: decided from the machine
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml")
    assert recipe.data.num_workers is None
    preflight(get_family("pix2pix")(recipe), recipe, torch.device("cpu"))


def test_a_report_runtime_that_is_not_installed_stops_the_run_before_stage_1(tiny_raw, tmp_path, monkeypatch):
    from gancompress.metrics import runtimes
    from gancompress.run import preflight as preflight_mod

    def no_training(*_a, **_k):
        raise AssertionError("training started before the mistake was caught")
    monkeypatch.setattr(stage_runs, "train_stage", no_training)
    # a runtime whose package is missing (openvino's module name swapped for one that cannot exist)
    monkeypatch.setitem(runtimes.RUNTIMES, "openvino",
                        dataclasses.replace(runtimes.RUNTIMES["openvino"], module="gancompress_no_such_module"))
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", ["eval.latency=true", "eval.runtimes=[eager, openvino]"])
    with pytest.raises(RecipeError, match=r"^eval\.runtimes: runtime openvino needs the 'openvino' package"):
        pipeline.compress(recipe, tmp_path / "run", device="cpu")
    # an ONNX runtime without the onnx exporter
    monkeypatch.setattr(preflight_mod, "onnx_available", lambda: False)
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml", ["eval.latency=true", "eval.runtimes=[onnxruntime]"])
    with pytest.raises(RecipeError, match="onnx package is not installed"):
        pipeline.compress(recipe, tmp_path / "run", device="cpu")
    # nothing to time, nothing to check
    preflight_mod.check_eval_runtimes(recipe_from_dict(tiny_raw, "tiny.yaml", ["eval.runtimes=[onnxruntime]",
                                                                                "eval.latency=false"]))
    assert not (tmp_path / "run").exists()
    # a name that is no runtime is refused when the recipe is read
    with pytest.raises(GanCompressError, match=r"eval\.runtimes\[1\]: expected one of"):
        recipe_from_dict(tiny_raw, "tiny.yaml", ["eval.runtimes=[eager, tensorrt]"])
