"""Never lose a run, never trust a bad input (issue 8)."""
import errno
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gancompress.data.aligned import AlignedDataset
from gancompress.errors import CheckpointError, DataError, NonFiniteLossError, RecipeError, WriteError
from gancompress.families import get_family
from gancompress.families.recipe import recipe_from_dict
from gancompress.files import checkpoint
from gancompress.run.pipeline import make_sparse_stage
from gancompress.run.train import train_stage
from gancompress.system.threads import child_env

ROOT = Path(__file__).resolve().parents[1]


# --- loading never runs code -------------------------------------------------------------------

class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        checkpoint.safe_load(path)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        checkpoint.safe_load(path)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    checkpoint.atomic_save({"w": torch.ones(3)}, path)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match="disk is full"):
        checkpoint.atomic_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(checkpoint.safe_load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind


def test_full_disk_chained_in_a_runtime_error_is_recognised(tmp_path, monkeypatch):
    # torch.save reports ENOSPC as a RuntimeError with the OSError chained as its cause.
    path = tmp_path / "ck.pt"

    def full(*_a, **_k):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed") from exc
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(WriteError, match="disk is full"):
        checkpoint.atomic_save({"w": torch.zeros(3)}, path)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_run_dir_is_reported(tmp_path, tiny_recipe):
    from gancompress.errors import GanCompressError
    from gancompress.files.rundir import RunDir
    from gancompress.run.pipeline import prepare_run_dir
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GanCompressError, match="cannot write the run folder"):
        prepare_run_dir(tiny_recipe, RunDir(blocker / "run"), resume=False)


# --- non-finite losses -------------------------------------------------------------------------

def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny_raw, tmp_path):
    tiny_raw["sparse"]["epochs"] = 2
    recipe = recipe_from_dict(tiny_raw, "tiny.yaml")
    family = get_family("pix2pix")(recipe)
    stage = make_sparse_stage(family, recipe, torch.device("cpu"))
    real, calls = stage.step, []

    def step(batch, batch2=None):
        calls.append(1)
        logs = real(batch, batch2)
        if len(calls) == 3:
            logs["G_adv"] = torch.tensor(float("nan"))
        return logs
    stage.step = step
    with pytest.raises(NonFiniteLossError, match=r"loss 'G_adv' became NaN or infinite at iteration 2"):
        train_stage(stage, family, recipe, tmp_path, torch.device("cpu"), resume=False)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["sparse-000000002.pt"]  # the step-4 checkpoint was never written


# --- bad data ----------------------------------------------------------------------------------

def _aligned(tmp_path, images):
    split = tmp_path / "train"
    split.mkdir(parents=True)
    for name, img in images.items():
        img.save(split / name)
    return tmp_path


def _pair(mode="RGB", size=(64, 32)):
    return Image.new(mode, size, 128 if mode == "L" else (128, 64, 32, 255)[: len(mode)])


def test_missing_and_empty_folders_name_the_folder(tmp_path):
    with pytest.raises(DataError, match=r"nope/train: folder not found"):
        AlignedDataset(tmp_path / "nope", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty/train: no image files"):
        AlignedDataset(tmp_path / "empty", "train")


@pytest.mark.parametrize("name,img,needle", [
    ("gray.png", _pair("L"), "image mode L"),
    ("rgba.png", _pair("RGBA"), "image mode RGBA"),
    ("odd.png", _pair(size=(65, 32)), "width 65 is odd"),
])
def test_bad_images_name_the_file_or_are_skipped(tmp_path, name, img, needle):
    root = _aligned(tmp_path, {"good.png": _pair(), name: img})
    with pytest.raises(DataError, match=needle) as info:
        AlignedDataset(root, "train")
    assert name in str(info.value)
    kept = AlignedDataset(root, "train", on_bad_image="skip", crop_size=32, load_size=32)
    assert [p.name for p in kept.files] == ["good.png"]


def test_truncated_images_name_the_file(tmp_path):
    root = _aligned(tmp_path, {"ok.png": _pair()})
    header_cut = root / "train" / "header.png"
    _pair().save(header_cut)
    header_cut.write_bytes(header_cut.read_bytes()[:20])
    with pytest.raises(DataError, match="header.png: not a readable image"):
        AlignedDataset(root, "train")
    header_cut.unlink()
    broken = root / "train" / "broken.png"
    noise = torch.randint(0, 256, (128, 256, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(noise.numpy()).save(broken)
    broken.write_bytes(broken.read_bytes()[: len(broken.read_bytes()) * 2 // 3])
    # The header still reads; the screening checks the whole file when the dataset is built.
    with pytest.raises(DataError, match="broken.png: cannot decode image"):
        AlignedDataset(root, "train", crop_size=32, load_size=32)
    kept = AlignedDataset(root, "train", crop_size=32, load_size=32, on_bad_image="skip")
    assert [p.name for p in kept.files] == ["ok.png"]


# --- recipe fuzzing ----------------------------------------------------------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


_SEGMENT = r"""(?:[^\W\d]\w*|'[^']*'|"[^"]*")"""
_KEY_PATH = re.compile(rf"fuzz\.yaml: {_SEGMENT}(?:\.{_SEGMENT}|\[\d+\])*: ")


def _paths(raw, prefix=()):
    for k, v in raw.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _paths(v, prefix + (k,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@pytest.mark.slow
def test_mutated_recipes_only_raise_recipe_errors_with_a_key_path(tiny_raw, data):
    import copy
    raw = copy.deepcopy(tiny_raw)
    paths = list(_paths(raw))
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        path = data.draw(st.sampled_from(paths))
        node = raw
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if action == "set":
            node[path[-1]] = data.draw(_VALUES)
        elif action == "delete":
            node.pop(path[-1], None)
        else:
            node[data.draw(st.text(min_size=1, max_size=6))] = data.draw(_VALUES)
    try:
        recipe_from_dict(raw, "fuzz.yaml")
    except RecipeError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.yaml: ") and "\n" not in msg
        # a key path: identifiers or quoted odd names (' ', 'a: b'), joined by dots or [i]
        assert _KEY_PATH.match(msg) or msg.startswith("fuzz.yaml: expected"), msg


# --- kill -9 and resume ------------------------------------------------------------------------

def _run(recipe_path, run_dir, resume=False):
    cmd = [sys.executable, str(ROOT / "tools" / "compress.py"), str(recipe_path), "--run-dir", str(run_dir),
           "--device", "cpu"]
    return cmd + (["--resume"] if resume else [])


def _final_student(run_dir):
    from gancompress.export.generator import load_generator
    return load_generator(run_dir / "student" / "generator_G.pt")[0].state_dict()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_matches_uninterrupted(tiny_raw, tmp_path):
    tiny_raw["sparse"]["epochs"] = 2
    tiny_raw["distill"].update({"epochs_const": 2, "epochs_decay": 1})
    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(tiny_raw))
    env = child_env(processes=1, PYTHONPATH=str(ROOT))  # one run at a time; this process only waits
    whole = tmp_path / "whole"
    subprocess.run(_run(recipe_path, whole), check=True, env=env, capture_output=True)

    rng = random.Random(0)
    cut = tmp_path / "cut"
    first = True
    killed = 0
    for _ in range(3):
        proc = subprocess.Popen(_run(recipe_path, cut, resume=not first), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = False
        # wait for a new checkpoint, then kill at a random moment shortly after
        seen = set((cut / "checkpoints").glob("*.pt")) if (cut / "checkpoints").exists() else set()
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            now = set((cut / "checkpoints").glob("*.pt")) if (cut / "checkpoints").exists() else set()
            if now - seen:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
    done = subprocess.run(_run(recipe_path, cut, resume=True), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert killed >= 2  # the run really died mid-way, more than once
    for (name, a), b in zip(_final_student(whole).items(), _final_student(cut).values()):
        assert torch.equal(a, b), name
