"""Non-finite weights, checkpoints cut short, and what safe_load says when it refuses."""
from __future__ import annotations

import builtins
import logging
import os
import pickle
from collections import OrderedDict

import pytest
import torch
from torch import nn

from gancompress.errors import CheckpointError, GanCompressError
from gancompress.files import checkpoint
from gancompress.system.finite import (
    NonFiniteWeightsError,
    check_finite,
    first_non_finite,
    reset_running_stats,
)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3))


# --- finite.py ---------------------------------------------------------------------------------

def test_first_non_finite_names_the_key_path():
    g = _net()
    assert first_non_finite(g) is None
    ckpt = {"format": "x", "step": 3, "state": {"gens": {"G": g.state_dict()}, "opt": {"state": {0: {}}}},
            "rng": [torch.zeros(3, dtype=torch.uint8)]}
    assert first_non_finite(ckpt) is None
    g[1].running_var[2] = float("inf")
    assert first_non_finite(ckpt) == "state.gens.G.1.running_var"
    assert first_non_finite(g) == "1.running_var"
    nested = {"a": [torch.ones(2), (torch.ones(1), torch.tensor([float("nan")]))]}
    assert first_non_finite(nested) == "a[1][1]"
    assert first_non_finite({"lr": float("nan")}) == "lr"
    assert first_non_finite(torch.arange(3)) is None  # integers are always finite


def test_a_diverged_step_is_caught_even_when_the_loss_is_finite():
    # lr 1e6 on a real step: the weights overflow; the next forward pass writes inf/NaN into
    # BatchNorm's running variance while the (normalised) outputs can still give a finite loss.
    torch.manual_seed(0)
    g = _net()
    opt = torch.optim.Adam(g.parameters(), lr=1e6)
    x = torch.randn(4, 3, 12, 12)
    for _ in range(3):
        loss = g(x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        g(x * 1e30)
        assert torch.isfinite(g(x).abs().mean())  # the loss the guard sees is still a number
    found = first_non_finite(g)
    assert found is not None
    with pytest.raises(NonFiniteWeightsError) as info:
        check_finite({"gens": g.state_dict()}, "stage 'sparse' checkpoint at iteration 4")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, GanCompressError)
    assert message.startswith(f"stage 'sparse' checkpoint at iteration 4: tensor 'gens.{found}' holds NaN")
    assert "lower train.lr_g / train.lr_d and --resume" in message


def test_reset_running_stats_restores_initial_buffers():
    g = nn.Sequential(_net(), nn.InstanceNorm2d(3, track_running_stats=True), nn.InstanceNorm2d(3))
    bn, inorm = g[0][1], g[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(float("inf"))
    bn.num_batches_tracked.fill_(7)
    inorm.running_var.fill_(3.0)
    weight = bn.weight.detach().clone()
    assert reset_running_stats(g) == 2  # the untracked InstanceNorm has no statistics
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert int(bn.num_batches_tracked) == 0 and torch.equal(inorm.running_var, torch.ones(3))
    assert torch.equal(bn.weight, weight)  # learned parameters stay
    assert first_non_finite(g) is None


# --- latest_readable ---------------------------------------------------------------------------

def _save(folder, step, value=1.0):
    path = folder / f"sparse-{step:09d}.pt"
    checkpoint.atomic_save({"format": "gancompress-checkpoint", "step": step,
                            "state": {"w": torch.full((8,), value)}}, path)
    return path


def test_latest_readable_steps_back_over_empty_truncated_and_non_finite(tmp_path, caplog):
    good = _save(tmp_path, 2)
    _save(tmp_path, 4, float("inf"))
    truncated = _save(tmp_path, 6)
    truncated.write_bytes(truncated.read_bytes()[:100])
    (tmp_path / "sparse-000000008.pt").write_bytes(b"")
    (tmp_path / "sparse-backup.pt").write_bytes(b"junk")  # not a rolling checkpoint: ignored
    assert checkpoint.latest(tmp_path, "sparse").name == "sparse-000000008.pt"  # what resume used
    with caplog.at_level(logging.WARNING, logger="gancompress.files.checkpoint"):
        assert checkpoint.latest_readable(tmp_path, "sparse") == good
    text = caplog.text
    assert "sparse-000000008.pt: not a readable checkpoint (the file is empty" in text
    assert "sparse-000000006.pt: not a readable checkpoint" in text
    assert "sparse-000000004.pt: tensor 'state.w' holds NaN or infinite values" in text
    path, ckpt = checkpoint.load_latest_readable(tmp_path, "sparse")
    assert path == good and ckpt["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir())[-1] == "sparse-backup.pt"  # nothing deleted
    assert checkpoint.latest_readable(tmp_path / "none", "sparse") is None


def test_rotate_orders_by_step_and_leaves_other_files(tmp_path):
    for step in (9, 10, 100, 1000):
        (tmp_path / f"distill-{step}.pt").write_bytes(b"x")
    (tmp_path / "distill-best.pt").write_bytes(b"x")
    (tmp_path / "distill-extra-000000001.pt").write_bytes(b"x")
    checkpoint.rotate(tmp_path, "distill", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "distill-100.pt", "distill-1000.pt", "distill-best.pt", "distill-extra-000000001.pt"]


# --- safe_load ---------------------------------------------------------------------------------

class _System:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class _Eval:
    def __reduce__(self):
        return (builtins.eval, ("1",))


@pytest.mark.parametrize("payload,name", [(_System(), "posix.system"), (_Eval(), "eval")])
def test_refusal_names_the_blocked_global_on_one_line(tmp_path, payload, name):
    path = tmp_path / "evil.pt"
    torch.save({"state": payload}, path)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        checkpoint.safe_load(path)
    message = str(info.value)
    assert "\n" not in message and f"GLOBAL {name}" in message
    assert "add_safe_globals" not in message and "weights_only=False" not in message  # not torch's advice


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    with open(path, "wb") as f:
        pickle.dump({"state": _System()}, f)
    with pytest.raises(CheckpointError, match="refused to load") as info:
        checkpoint.safe_load(path)
    assert "\n" not in str(info.value)


def test_every_damaged_copy_is_a_one_line_checkpoint_error(tmp_path):
    gen = torch.Generator().manual_seed(0)
    good = tmp_path / "good.pt"
    torch.save({"format": "x", "state": OrderedDict(w=torch.randn(6, 6, generator=gen),
                                                    b=torch.randn(40, generator=gen)),
                "step": 3, "names": ["a", "b"]}, good)
    data = good.read_bytes()
    path = tmp_path / "bad.pt"
    raised = set()
    copies = [data[:n] for n in range(0, len(data), 97)]
    # Zeroed bytes in the zip header and the pickle (flips in tensor data just load other numbers).
    copies += [data[:i] + b"\0" + data[i + 1:] for i in range(400)]
    for copy in copies:
        path.write_bytes(copy)
        try:
            checkpoint.safe_load(path)  # loads, or raises CheckpointError and nothing else
        except CheckpointError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path))
            raised.add(type(exc.__context__))  # what torch.load raised for this copy
    # Torch reports some damage with exceptions the old safe_load let through as tracebacks.
    old_catch = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)
    assert any(not issubclass(t, old_catch) for t in raised), raised


def test_empty_file_says_so(tmp_path):
    path = tmp_path / "sparse-000000004.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"sparse-000000004.pt: not a readable checkpoint \(the file is empty"):
        checkpoint.safe_load(path)
