"""gancompress gpu-check on the CPU: rows that fail, hang or do not fit end as one line and the
later rows still run; CUDA-only rows are skipped with their reason; the table and the JSON file.

The CUDA rows themselves need a GPU; ``gancompress gpu-check --device cuda`` runs them.
"""
import contextlib
import io
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from gancompress.cli import main
from gancompress.errors import GanCompressError
from gancompress.experiments import gpu_check as gc

ROOT = Path(__file__).resolve().parents[1]


def test_last_meaningful_line_finds_the_cause():
    ours = "12:00 INFO x: stage 1\n 40%|####      | 4/10 [00:01<00:02]\ngancompress: error: r.yaml: model.bogus: unknown\n"
    assert gc.last_meaningful_line(ours) == "gancompress: error: r.yaml: model.bogus: unknown"
    traceback = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                 "torch.OutOfMemoryError: CUDA out of memory. Tried\n  to allocate 2 GiB\r 10%|#  | 1/10\n")
    assert gc.last_meaningful_line(traceback) == "torch.OutOfMemoryError: CUDA out of memory. Tried"
    torchrun = ("[rank0]: Traceback (most recent call last):\n"
                "[rank0]: RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1, unhandled cuda error\n"
                "E1128 07:00:00 torch/distributed/elastic/multiprocessing/api.py: failed (exitcode: 1)\n"
                "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n=====\nFailures:\n  <NO_OTHER>\n")
    assert gc.last_meaningful_line(torchrun) == "RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1, unhandled cuda error"
    assert gc.last_meaningful_line("[rank1]: gancompress: error (rank 1): rank 0 stopped: x\n") \
        == "gancompress: error (rank 1): rank 0 stopped: x"
    assert gc.last_meaningful_line(" 50%|#####| 5/10 [00:01<00:01, 5.0it/s]\nsomething odd\n 60%|###| 6/10\n") \
        == "something odd"
    assert gc.last_meaningful_line("") == "no output"
    assert len(gc.last_meaningful_line("ValueError: " + "x" * 1000)) == 300


def test_stage_rate_leaves_out_the_first_interval_and_the_projection_adds_up(tmp_path):
    from gancompress.families.recipe import load_recipe

    records = [{"stage": "sparse", "step": 32, "seconds": 5.0}, {"stage": "sparse", "step": 64, "seconds": 6.0},
               {"stage": "sparse", "step": 96, "seconds": 7.0}, {"stage": "distill", "step": 10, "seconds": 9.0},
               {"stage": "distill", "step": 30, "seconds": 11.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert gc.stage_rate(path, "sparse") == (32.0, 64)
    assert gc.stage_rate(path, "distill") == (10.0, 20)
    with pytest.raises(gc.RowFailure, match="fewer than two log records of stage 'pretrain_S'"):
        gc.stage_rate(path, "pretrain_S")

    recipe = load_recipe(ROOT / "recipes" / "pix2pix_cityscapes.yaml")  # 25 + 250 epochs at batch 1
    full = gc.project_full_run(recipe, stage1_rate=50.0, stage3_rate=25.0, prune_s=60.0)
    assert full["stage1_iterations"] == 25 * 2975 and full["stage3_iterations"] == 250 * 2975
    assert math.isclose(full["total_s"], 25 * 2975 / 50 + 60 + 250 * 2975 / 25)
    assert math.isclose(full["total_h"] * 3600, full["total_s"])


def test_reference_range_is_the_seeds_spread_or_the_floor_around_them():
    ref = gc.Reference("miou", {"G": (40.0, 42.0, 41.0)}, floor=3.0, source="test")
    assert ref.bounds("G") == (37.0, 45.0)
    wide = gc.Reference("psnr", {"G": (20.0, 24.0, 22.0)}, floor=0.5, source="test")
    assert wide.bounds("G") == (16.0, 28.0)
    for family, r in gc.REFERENCE.items():  # every demo family is covered, each generator by three seeds
        assert family in gc.DEMO_FAMILIES and r.seeds and all(len(v) == 3 for v in r.seeds.values())


def _ok(check):
    return gc.Outcome("fine", {"n": 1})


def _raises(check):
    raise KeyError("no such thing")


def _fails_in_a_subprocess(check):
    code = "import sys; print(' 50%|#####| 5/10', file=sys.stderr); raise ValueError('the bad thing')"
    check.call([sys.executable, "-c", code], "probe")
    return gc.Outcome("unreachable")


def _hangs(check):
    check.call([sys.executable, "-c", "import time; time.sleep(60)"], "sleeper")
    return gc.Outcome("unreachable")


def test_every_row_ends_as_one_record_whatever_happens_and_later_rows_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "CPU_SLOWDOWN", 1.0)
    rows = [gc.Row("t/subprocess", "fails", _fails_in_a_subprocess, timeout_s=30, estimate_s=0),
            gc.Row("t/raises", "raises", _raises, timeout_s=30, estimate_s=0),
            gc.Row("t/hangs", "hangs", _hangs, timeout_s=2, estimate_s=0),
            gc.Row("t/cuda", "cuda", _ok, timeout_s=30, estimate_s=0, cuda_only="needs a GPU"),
            gc.Row("t/big", "too big", _ok, timeout_s=30, estimate_s=1e6),
            gc.Row("t/ok", "passes", _ok, timeout_s=30, estimate_s=0)]
    seen = []
    check = gc.Check("cpu", tmp_path, ROOT / "recipes")
    records = gc.run_rows(rows, check, budget_s=100.0, on_row=lambda r: seen.append(r["row"]))
    assert seen == [r.name for r in rows] == [r["row"] for r in records]
    by = {r["row"]: r for r in records}
    assert [by[n]["status"] for n in seen] == ["fail", "fail", "fail", "skip", "skip", "pass"]
    assert by["t/subprocess"]["reason"] == "probe: exit status 1: ValueError: the bad thing"
    assert by["t/raises"]["reason"] == "KeyError: 'no such thing'"
    assert by["t/hangs"]["reason"].startswith("sleeper: killed after its 2 s limit")
    assert by["t/hangs"]["seconds"] < 15
    assert by["t/cuda"]["reason"] == "CUDA only: needs a GPU"
    assert by["t/big"]["reason"].startswith("budget: ") and "needs about 1000000 s" in by["t/big"]["reason"]
    assert by["t/ok"]["figure"] == "fine" and by["t/ok"]["details"] == {"n": 1}
    for r in records:
        assert "\n" not in r.get("reason", "")
    assert (tmp_path / "logs" / "t_subprocess-probe.err").read_text().strip().endswith("ValueError: the bad thing")
    table = gc.format_table(records).splitlines()
    assert table[0].split()[:4] == ["row", "result", "s", "figure"]
    assert len(table) == 2 + len(rows) + 1 and table[-1] == "1 passed, 3 failed, 2 skipped"


def test_timing_rows_run_alone_first_and_the_others_side_by_side(tmp_path):
    import threading
    import time

    spans, lock = {}, threading.Lock()

    def sleeper(check):
        t0 = time.monotonic()
        time.sleep(0.4)
        with lock:
            spans[check.row] = (t0, time.monotonic(), check.threads)
        return gc.Outcome(check.row)

    rows = [gc.Row("t/shared1", "", sleeper, timeout_s=30, estimate_s=1),
            gc.Row("t/timing", "", sleeper, timeout_s=30, estimate_s=1, alone=True),
            gc.Row("t/shared2", "", sleeper, timeout_s=30, estimate_s=2),
            gc.Row("t/shared3", "", sleeper, timeout_s=30, estimate_s=3)]
    records = gc.run_rows(rows, gc.Check("cuda", tmp_path, ROOT / "recipes"), budget_s=100.0, jobs=3)
    assert [r["row"] for r in records] == [r.name for r in rows]  # the table keeps its order
    assert [r["figure"] for r in records] == [r.name for r in rows]  # each row saw its own name
    timing = spans.pop("t/timing")
    assert timing[2] is None and not records[1]["concurrent"]
    for start, end, threads in spans.values():
        assert start >= timing[1]  # after the timing row, never beside it
        assert threads is not None and threads >= 1
    starts = sorted(s for s, _, _ in spans.values())
    assert starts[-1] < min(e for _, e, _ in spans.values())  # the three overlapped


def test_unknown_row_pattern_names_the_rows():
    with pytest.raises(GanCompressError, match=r"--rows 'demo/nope' matches no row; the rows are: bench/stage3_b1"):
        gc.select_rows(gc.all_rows(), ["demo/nope"])
    assert [r.name for r in gc.select_rows(gc.all_rows(), ["demo/sagan/*"])] == ["demo/sagan/fast", "demo/sagan/fp32"]


def test_random_feature_extractor_is_fixed_and_tells_images_apart(tmp_path):
    a, b = gc.write_random_feature_extractor(tmp_path / "a.pt"), gc.write_random_feature_extractor(tmp_path / "b.pt")
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fa, fb = torch.jit.load(str(a))(images), torch.jit.load(str(b))(images)
    assert fa.shape == (5, 12) and torch.equal(fa, fb)
    assert (fa[0] - fa[1]).abs().max() > 1e-3  # different images, different features
    assert fa.std(0).min() > 0  # no dead feature


def _broken_recipes(tmp_path: Path) -> Path:
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", recipes)
    bad = recipes / "demo" / "sagan.yaml"
    bad.write_text(bad.read_text().replace("model:\n", "model:\n  bogus_width: 3\n", 1))
    return recipes


def test_cpu_quick_run_reports_a_bad_recipe_in_one_line_runs_the_later_rows_and_skips_cuda_rows(tmp_path):
    out = tmp_path / "gc.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["gpu-check", "--device", "cpu", "--quick", "--work", str(tmp_path / "work"), "--out", str(out),
                     "--recipes", str(_broken_recipes(tmp_path)), "--budget-s", "10000",
                     "--rows", "demo/sagan/*", "parity/*", "torchrun/nccl_probe"])
    assert code == 1  # a row failed
    doc = json.loads(out.read_text())
    assert doc["format"] == "gancompress-gpu-check" and doc["quick"] is True
    assert {"device", "device_name", "torch", "cuda", "python"} <= set(doc["environment"])
    assert set(doc["targets"]) == set(gc.TARGETS)
    assert all(t["met"] is None for t in doc["targets"].values())  # no target is measured on a CPU
    rows = {r["row"]: r for r in doc["rows"]}
    order = [r["row"] for r in doc["rows"]]
    assert order == ["parity/cuda_graph", "parity/compile", "demo/sagan/fast", "demo/sagan/fp32",
                     "torchrun/nccl_probe", "parity/cpu_fallback"]
    for r in doc["rows"]:
        assert {"row", "what", "status", "seconds", "details", "targets", "concurrent"} <= set(r)
        assert ("figure" in r) == (r["status"] == "pass") and ("reason" in r) == (r["status"] != "pass")
    for name in ("parity/cuda_graph", "demo/sagan/fast", "torchrun/nccl_probe", "parity/compile"):
        assert rows[name]["status"] == "skip" and rows[name]["reason"].startswith("CUDA only: ")
    failed = rows["demo/sagan/fp32"]
    assert failed["status"] == "fail"
    assert failed["reason"].startswith("compress: exit status 2: gancompress: error: ")
    assert "model.bogus_width" in failed["reason"] and "\n" not in failed["reason"]
    later = rows["parity/cpu_fallback"]  # runs after the failure
    assert later["status"] == "pass" and later["details"]["mode_run"] == "eager"
    assert later["details"]["precisions"]["fp32"]["max_abs_diff"] == 0.0
    table = stdout.getvalue()
    assert table.count("figure / reason") == 1  # one table
    for name in order:
        assert name in table
    assert "1 passed, 1 failed, 4 skipped" in table


@pytest.mark.slow
def test_cpu_quick_demo_row_runs_every_stage_and_reports_the_students_metric(tmp_path):
    out = tmp_path / "gc.json"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["gpu-check", "--device", "cpu", "--quick", "--work", str(tmp_path / "work"), "--out", str(out),
                     "--budget-s", "10000", "--rows", "demo/sagan/fp32"])
    assert code == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "pass", row.get("reason")
    assert row["details"]["precision"] == "fp32"
    fid = row["details"]["student_metric"]["G"]
    assert math.isfinite(fid) and fid >= 0
    run = tmp_path / "work" / "runs" / "sagan-fp32"
    for path in gc.stage_outputs(run, ["G"], pretrain=False):
        assert path.is_file(), path
