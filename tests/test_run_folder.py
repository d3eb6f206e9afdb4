"""The run folder under misuse: diverged training, two processes, changed settings on resume,
broken newest checkpoints, duplicated metrics, damaged generator files (issue 16)."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from gancompress.errors import CheckpointError, GanCompressError
from gancompress.export.generator import load_generator, save_generator
from gancompress.families import get_family
from gancompress.families.recipe import recipe_from_dict
from gancompress.files.runlock import RunLock
from gancompress.run.pipeline import compress
from gancompress.system.finite import first_non_finite


def _recipe(tiny_raw, *overrides):
    return recipe_from_dict(tiny_raw, "tiny.yaml", list(overrides))


def _every_pt(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*.pt") if p.parent.name != "export")  # export/: TorchScript


@pytest.mark.slow
def test_diverged_weights_are_never_written_and_resume_goes_on_from_the_last_finite_state(tiny_raw, tmp_path):
    run = tmp_path / "run"
    # train.lr_g=1e6 blew a BatchNorm buffer up to inf while every loss stayed finite (the old guard
    # watched losses only).
    with pytest.raises(GanCompressError) as info:
        compress(_recipe(tiny_raw, "train.lr_g=1e6", "sparse.epochs=2"), run, device="cpu")
    assert "NaN or infinite" in str(info.value) and "\n" not in str(info.value)
    for path in _every_pt(run):
        assert first_non_finite(torch.load(path, weights_only=True)) is None, path
    # The advised fix: a lower learning rate and --resume. The change is recorded, not silent.
    report = compress(_recipe(tiny_raw, "sparse.epochs=2"), run, resume=True, device="cpu")
    assert report["generators"]["G"]["student_within_budget"]
    for path in _every_pt(run):
        assert first_non_finite(torch.load(path, weights_only=True)) is None, path
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["resume"] and history[-1]["changed"] == {"train.lr_g": [1e6, 2e-4]}
    assert "lr_g: 1000000.0" in (run / "history" / "recipe-1.yaml").read_text()


def _hold(run: str, ready, release) -> None:
    with RunLock(run):
        ready.set()
        release.wait(60)


def test_a_second_process_on_a_run_folder_is_refused_with_the_holders_pid(tiny_raw, tmp_path):
    run = tmp_path / "run"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(run), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(GanCompressError, match=f"in use by PID {holder.pid}"):
            compress(_recipe(tiny_raw), run, device="cpu")
        assert not (run / "recipe.yaml").exists()  # the refused process wrote nothing
    finally:
        release.set()
        holder.join(30)


@pytest.mark.slow
def test_resume_refuses_to_change_what_shaped_the_weights(tiny_raw, tmp_path):
    run = tmp_path / "run"
    compress(_recipe(tiny_raw), run, device="cpu", until="sparse")
    before = (run / "recipe.yaml").read_text()
    with pytest.raises(GanCompressError, match=r"--resume: sparse.method changed \('slimming' -> 'l1'\)"):
        compress(_recipe(tiny_raw, "sparse.method=l1"), run, resume=True, device="cpu", until="sparse")
    assert (run / "recipe.yaml").read_text() == before


@pytest.mark.slow
def test_resume_skips_a_broken_newest_checkpoint_and_keeps_metrics_free_of_repeats(tiny_raw, tmp_path):
    run = tmp_path / "run"
    recipe = _recipe(tiny_raw, "sparse.epochs=3", "train.keep_checkpoints=5")
    compress(recipe, run, device="cpu", until="sparse")
    (run / "sparse" / "model.pt").unlink()  # as if killed before the stage's output was written
    checkpoints = sorted((run / "checkpoints").glob("sparse-*.pt"))
    checkpoints[-1].write_bytes(b"")  # ... while writing its newest checkpoint
    compress(recipe, run, resume=True, device="cpu", until="sparse")
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["stage"] == "sparse"]
    assert steps == sorted(set(steps))  # every logged step once, in order
    assert first_non_finite(torch.load(run / "sparse" / "model.pt", weights_only=True)) is None


def test_damaged_generator_files_are_one_line_errors(tiny_recipe, tmp_path):
    family = get_family("pix2pix")(tiny_recipe)
    path = save_generator(tmp_path / "g.pt", family.build_generator("G", 8), tiny_recipe, "G", 8)
    good = torch.load(path, weights_only=True)
    cases = {"unknown generator": {**good, "generator": "Z"},
             "absurd width": {**good, "ngf": 10 ** 7},
             "wrong structure": {**good, "arch": {"nonsense": 1}, "state_dict": {"x": torch.ones(1)}},
             "missing field": {k: v for k, v in good.items() if k != "arch"},
             "not a width": {**good, "ngf": "wide"}}
    for what, ckpt in cases.items():
        bad = tmp_path / f"{what.replace(' ', '_')}.pt"
        torch.save(ckpt, bad)
        with pytest.raises(CheckpointError) as info:
            load_generator(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value), what
