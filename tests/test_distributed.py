"""Data parallelism on the CPU: two gloo processes run the whole tiny Pix2Pix pipeline.

Each rank records, after every iteration, a hash of every module's parameters, the batch indices
it trained on, and the files it tried to write; the test then compares the ranks.
"""
import contextlib
import copy
import hashlib
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_PIX2PIX
from torch import nn

from gancompress.system.threads import child_env

DEADLINE_S = 240  # a hang (a rank left waiting at a collective) fails the test instead of blocking it


class _Stop(Exception):
    """Raised by both ranks at the same iteration to simulate an interrupted run."""


def _digest(parts) -> str:
    h = hashlib.sha1()
    for name, value in parts:
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(str(t.dtype).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _param_hashes(stage) -> dict:
    """module attribute of the stage -> hash of its parameters (names and exact values)."""
    return {attr: _digest(m.named_parameters()) for attr, m in vars(stage).items() if isinstance(m, nn.Module)}


def _leaves(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}/{i}")
    else:
        yield path, obj


def _recording(real_train_stage, records: dict, phase: dict):
    """A train_stage that records the stage's weights after every iteration on this rank."""
    def train_stage(stage, family, recipe, run_dir, device, **kwargs):
        rec = records[f"{phase['name']}/{stage.name}"] = {"initial": _param_hashes(stage), "steps": [],
                                                          "indices": []}
        step = stage.step

        def recorded(batch, batch2=None):
            if phase.get("stop_at") == len(rec["steps"]):
                raise _Stop
            logs = step(batch, batch2)
            rec["indices"].append(batch["index"].tolist())
            rec["steps"].append(_param_hashes(stage))
            return logs
        stage.step = recorded
        real_train_stage(stage, family, recipe, run_dir, device, **kwargs)
        rec["final_state"] = _digest(_leaves(stage.state_dict()))
    return train_stage


def _watch_writes(root: Path, writes: list) -> None:
    """Record every attempt of this process to create, write, rename or delete under ``root``."""
    root = str(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def under(path) -> bool:
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)).startswith(root)

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & write_flags)
            if writing and under(path):
                writes.append(f"open {path}")
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir") and under(args[0]):
            writes.append(f"{event} {args[0]}")
    sys.addaudithook(hook)


def _worker(rank: int, port: int, tmp: str, raw: dict) -> None:
    tmp = Path(tmp)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    # The two ranks share the test run's threads (the parent only waits); cli.main keeps them.
    os.environ.update(child_env(processes=2))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from gancompress.cli import main
    from gancompress.families.recipe import recipe_from_dict
    from gancompress.run import pipeline, stage_runs
    from gancompress.system import distributed

    writes: list[str] = []
    if rank != 0:
        _watch_writes(tmp / "runs", writes)
    records, phase = {}, {}
    stage_runs.train_stage = _recording(stage_runs.train_stage, records, phase)
    recipe = recipe_from_dict(raw, "tiny.yaml")
    out = {}
    with distributed.process_group("cpu"):
        phase["name"] = "full"
        out["result"] = pipeline.compress(recipe, tmp / "runs" / "full", device="cpu")
        # An interrupted stage 1 (both ranks stop before iteration 4; a checkpoint holds 2),
        # then --resume: every rank loads that checkpoint.
        phase.update(name="cut", stop_at=3)
        with contextlib.suppress(_Stop):
            pipeline.compress(recipe, tmp / "runs" / "cut", device="cpu", until="sparse")
        phase.update(name="resumed", stop_at=None)
        pipeline.compress(recipe, tmp / "runs" / "cut", resume=True, device="cpu", until="sparse")
        # A user error that only rank 0 meets (it alone writes the run folder).
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["compress", str(tmp / "recipe.yaml"), "--device", "cpu",
                         "--run-dir", str(tmp / "runs" / "a_file" / "run")])
        out["cli"] = {"code": code, "stderr": err.getvalue()}
        # A recipe error every rank meets alike: SyncBatchNorm asked for on CPU processes.
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["compress", str(tmp / "recipe.yaml"), "--device", "cpu", "--set", "train.sync_bn=true",
                         "--run-dir", str(tmp / "runs" / "sync_bn")])
        out["sync_bn"] = {"code": code, "stderr": err.getvalue()}
    out.update(records=records, writes=writes)
    (tmp / f"rank{rank}.json").write_text(json.dumps(out, default=str))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_train_in_lockstep_and_only_rank_0_writes(aligned_root, tmp_path):
    import torch.multiprocessing as mp

    raw = copy.deepcopy(TINY_PIX2PIX)
    raw["data"]["root"] = str(aligned_root)
    raw["sparse"]["epochs"] = 2  # 8 items, 2 per batch, 2 ranks: 2 iterations per epoch per rank
    raw["train"]["log_every"] = 1
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a_file").write_text("not a folder")

    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path), raw), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the ranks did not finish within {DEADLINE_S} s: one is stuck at a collective")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    for key in ("full/sparse", "full/distill"):
        a, b = r0["records"][key], r1["records"][key]
        assert len(a["steps"]) == 4
        assert a["initial"] == b["initial"]
        assert a["steps"] == b["steps"], f"{key}: the ranks' weights diverged"
        assert a["final_state"] == b["final_state"]  # buffers, optimiser states, pools too
        changed = {m for m, h in a["steps"][-1].items() if h != a["initial"][m]}
        assert changed == set(a["initial"]), f"{key}: weights that never moved: {set(a['initial']) - changed}"
        for i0, i1 in zip(a["indices"], b["indices"]):  # each rank trains on its own images
            assert not set(i0) & set(i1)
    assert {"s_gens", "t_gens"} <= set(r0["records"]["full/distill"]["initial"])

    # The resumed run ends where the uninterrupted one did, on both ranks.
    for r in (r0, r1):
        assert len(r["records"]["cut/sparse"]["steps"]) == 3
        assert r["records"]["resumed/sparse"]["steps"][-1] == r["records"]["full/sparse"]["steps"][-1]
        assert r["records"]["resumed/sparse"]["final_state"] == r["records"]["full/sparse"]["final_state"]

    # Rank 0 wrote the run folder and reported; rank 1 never tried to write anything in it.
    run = tmp_path / "runs" / "full"
    for name in ("recipe.yaml", "report.json", "metrics.jsonl", "sparse/model.pt", "pruned/pruned.pt",
                 "student/generator_G.pt", "teacher/generator_G.pt", "export/generator.pt"):
        assert (run / name).is_file(), name
    assert r0["result"]["generators"]["G"]["student_within_budget"]
    assert r1["result"] == {"stage": "distill", "rank": 1}
    assert r1["writes"] == []

    # Rank 0's user error ends both ranks with status 2; rank 0 prints the one line.
    assert r0["cli"]["code"] == 2 and r1["cli"]["code"] == 2
    lines = r0["cli"]["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("gancompress: error: ") and "cannot write" in lines[0]
    assert r1["cli"]["stderr"] == ""
    for r, tag in ((r0, ""), (r1, " (rank 1)")):
        assert r["sync_bn"]["code"] == 2
        assert r["sync_bn"]["stderr"].startswith(f"gancompress: error{tag}: train.sync_bn: SyncBatchNorm runs on CUDA")
    assert not (tmp_path / "runs" / "sync_bn").exists()
