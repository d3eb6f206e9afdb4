"""Thread settings (issue 17): precedence, the entry point, DataLoader workers, the slowdown warning,
and the bench-cpu command in a reduced form (no timings asserted)."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gancompress import cli
from gancompress.data.loader import BatchSource
from gancompress.experiments import bench_cpu as contention
from gancompress.families.recipe import recipe_from_dict
from gancompress.run import train
from gancompress.system import threads
from gancompress.system.threads import (
    ADAPT_VAR,
    ThreadsError,
    child_env,
    clean_env,
    data_workers,
    thread_env,
    thread_settings,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 8)


@pytest.mark.parametrize("environ, expected", [
    # our defaults: the runtime's wait policy, the cores over torchrun's processes on the node (at
    # least 1), marked as a count that adapts to the load
    ({}, (8, None, "default", {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8", ADAPT_VAR: "8"})),
    ({"LOCAL_WORLD_SIZE": "3"}, (2, None, "default", {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", ADAPT_VAR: "2"})),
    ({"LOCAL_WORLD_SIZE": "16"},
     (1, None, "default", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", ADAPT_VAR: "1"})),
    ({"OMP_NUM_THREADS": " "}, (8, None, "default", {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8", ADAPT_VAR: "8"})),
    # the user's own settings win over the defaults, each on its own; a count of theirs is fixed
    ({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "4"},
     (3, None, "environment", {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"})),
    ({"OMP_WAIT_POLICY": "active"},
     (8, "active", "default", {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8", "OMP_WAIT_POLICY": "active",
                               ADAPT_VAR: "8"})),
    ({"OMP_NUM_THREADS": "4,2"}, (4, None, "environment", {"OMP_NUM_THREADS": "4,2", "MKL_NUM_THREADS": "4"})),
    ({"MKL_NUM_THREADS": "2"}, (8, None, "default", {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "2", ADAPT_VAR: "8"})),
])
def test_thread_settings_follow_the_environment_then_the_defaults(eight_cores, environ, expected):
    count, policy, source, env = expected
    s = thread_settings(environ=environ)
    assert (s.threads, s.wait_policy, s.source) == (count, policy, source)
    assert s.env == env


def test_threads_option_beats_the_environment_but_keeps_its_wait_policy(eight_cores):
    s = thread_settings(5, {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"})
    assert (s.threads, s.source) == (5, "--threads")
    assert s.env == {"OMP_NUM_THREADS": "5", "MKL_NUM_THREADS": "5", "OMP_WAIT_POLICY": "ACTIVE"}  # fixed: no ADAPT_VAR
    # --threads overrides a thread count OpenMP would reject, so that one is no error
    assert thread_settings(2, {"OMP_NUM_THREADS": "many"}).threads == 2


@pytest.mark.parametrize("environ, named", [
    ({"OMP_NUM_THREADS": "many"}, "OMP_NUM_THREADS='many'"),
    ({"OMP_NUM_THREADS": "0"}, "OMP_NUM_THREADS='0'"),
    ({"MKL_NUM_THREADS": "-1"}, "MKL_NUM_THREADS='-1'"),
    ({"OMP_WAIT_POLICY": "lazy"}, "OMP_WAIT_POLICY='lazy'"),
    ({"LOCAL_WORLD_SIZE": "two"}, "LOCAL_WORLD_SIZE='two'"),
])
def test_bad_thread_variables_are_one_line_errors(eight_cores, environ, named):
    with pytest.raises(ThreadsError) as info:
        thread_settings(environ=environ)
    assert str(info.value).startswith(named) and "\n" not in str(info.value)


def test_child_env_divides_the_parents_threads_and_clean_env_drops_them(eight_cores):
    base = {"PATH": "/bin", "OMP_NUM_THREADS": "6", "OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": "1",
            "KMP_BLOCKTIME": "0", "MKL_NUM_THREADS": "6", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}
    two = child_env(2, base, PYTHONPATH="/src")
    assert (two["OMP_NUM_THREADS"], two["MKL_NUM_THREADS"], two["OMP_WAIT_POLICY"]) == ("3", "3", "active")
    assert two["PYTHONPATH"] == "/src" and two["PATH"] == "/bin"
    assert child_env(7, {})["OMP_NUM_THREADS"] == "1"  # at least one each
    assert "OMP_WAIT_POLICY" not in child_env(1, {}) and ADAPT_VAR not in two  # the user's count is fixed
    # a count gancompress chose adapts in the children too, within their share
    assert child_env(2, {})[ADAPT_VAR] == "4" and child_env(8, {})[ADAPT_VAR] == "1"
    assert clean_env(base) == {"PATH": "/bin"}
    assert clean_env({ADAPT_VAR: "2", "PATH": "/bin"}) == {"PATH": "/bin"}


@pytest.mark.parametrize("requested, device, cores, processes, expected", [
    (None, "cpu", 2, 1, 0), (None, "cpu", 4, 1, 0),    # <= 4 cores: the training threads need them
    (None, "cpu", 8, 1, 2), (None, "cpu", 64, 1, 4),   # min(4, cores // 4)
    (None, "cpu", 64, 4, 4), (None, "cpu", 16, 4, 0),  # torchrun's processes share the cores
    (None, "cuda", 2, 1, 1), (None, "cuda", 64, 1, 8), (None, "cuda", 1, 1, 0), (None, "cuda", 64, 8, 7),
    (3, "cpu", 2, 1, 3), (0, "cuda", 64, 1, 0),        # an explicit count is kept
])
def test_data_workers(requested, device, cores, processes, expected):
    assert data_workers(requested, device, cores, processes) == expected


def test_two_streams_share_an_automatic_worker_count():
    assert data_workers(None, "cuda", 64, 1, streams=2) == 4  # 8 in all
    assert data_workers(None, "cuda", 8, 1, streams=2) == 4   # 7, rounded up
    assert data_workers(None, "cpu", 2, 1, streams=2) == 0
    assert data_workers(3, "cpu", 64, 1, streams=2) == 3      # an explicit count is per stream


def test_num_workers_defaults_to_automatic_and_keeps_an_explicit_count(tiny_raw):
    del tiny_raw["data"]["num_workers"]
    assert recipe_from_dict(tiny_raw, "r.yaml").data.num_workers is None
    assert recipe_from_dict(tiny_raw, "r.yaml", ["data.num_workers=3"]).data.num_workers == 3
    assert recipe_from_dict(tiny_raw, "r.yaml", ["data.num_workers=null"]).data.num_workers is None


class _ThreadReport(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, key):
        return {"torch": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
                "mkl": os.environ.get("MKL_NUM_THREADS")}


def test_dataloader_workers_run_one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    source = BatchSource(_ThreadReport(), batch_size=2, seed=0, num_workers=1, shuffle=False)
    (batch,) = list(source.epoch(0))
    assert batch["torch"].tolist() == [1, 1]
    assert batch["omp"] == ["1", "1"] and batch["mkl"] == ["1", "1"]
    monkeypatch.setattr(threads, "available_cores", lambda: 2)  # automatic on 2 cores: no worker processes
    assert BatchSource(_ThreadReport(), batch_size=2, seed=0, num_workers=None).num_workers == 0


@pytest.mark.slow
def test_entry_point_sets_openmp_variables_before_torch_loads(tmp_path):
    # OMP_DISPLAY_ENV makes the OpenMP runtime print the settings it read when it loaded.
    code = ("import sys\n"
            "from gancompress.cli import build_parser, main\n"
            "build_parser()\n"
            "assert 'torch' not in sys.modules, 'building the parser imported torch'\n"
            "import gancompress.commands.macs as macs\n"
            "macs.run = lambda args: 7  # the command itself is not under test\n"
            "status = main(sys.argv[1:])\n"
            "import torch\n"
            "print('RESULT', status, torch.get_num_threads())\n")
    env = {**clean_env(), "PYTHONPATH": str(ROOT), "OMP_DISPLAY_ENV": "VERBOSE"}
    # --threads after the command; 3 threads is more than this machine may have: torch follows it anyway
    proc = subprocess.run([sys.executable, "-c", code, "macs", "recipe.yaml", "--threads", "3"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert "RESULT 7 3" in proc.stdout, proc.stderr[-2000:]
    # the runtime's own wait policy: threads spin a while before they sleep (the fastest alone)
    spin = re.search(r"GOMP_SPINCOUNT = '(\d+)'", proc.stderr)
    assert spin is not None and int(spin.group(1)) > 0, proc.stderr[-2000:]
    assert "OMP_NUM_THREADS = '3'" in proc.stderr


def test_cli_rejects_a_bad_thread_variable_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("OMP_WAIT_POLICY", "sometimes")
    assert cli.main(["macs", "missing.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gancompress: error: OMP_WAIT_POLICY='sometimes'")


# --- RateWatch: the warning when training slows down ---------------------------------------

def _watch(monkeypatch, caplog, seconds_per_interval: list[float], steps: int = 10) -> list[str]:
    """Feed a RateWatch ``steps`` iterations per log point, taking the given seconds each."""
    clock = [100.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])
    watch = train.RateWatch("distill", 0)
    step = 0
    with caplog.at_level(logging.WARNING, logger="gancompress.run.train"):
        for seconds in seconds_per_interval:
            clock[0] += seconds
            step += steps
            watch.check(step)
    return [r.getMessage() for r in caplog.records if r.name == "gancompress.run.train"]


def test_rate_watch_warns_once_naming_the_thread_setting(monkeypatch, caplog):
    # start-up interval (ignored), three reference intervals at 10 it/s, then 20x slower for good
    warnings = _watch(monkeypatch, caplog, [30.0, 1.0, 1.0, 1.0] + [20.0] * 6)
    assert len(warnings) == 1
    assert "'distill'" in warnings[0] and "20.0x slower" in warnings[0]
    assert "gancompress --threads N" in warnings[0] and "OMP_NUM_THREADS=N" in warnings[0]


def test_rate_watch_stays_quiet_while_the_rate_holds(monkeypatch, caplog):
    # a slow start-up and a later dip to half the speed are no contention
    assert _watch(monkeypatch, caplog, [30.0, 1.0, 1.2, 0.9, 1.0, 1.8, 2.0, 1.1, 0.95]) == []
    # nor is a slow reference period that training keeps to
    assert _watch(monkeypatch, caplog, [5.0] * 10) == []


# --- bench-cpu -------------------------------------------------------------------------------

@pytest.mark.slow
def test_bench_cpu_children_get_the_old_or_the_new_settings_only(tiny_raw, tmp_path, monkeypatch):
    # The parent's own settings must not reach the children.
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("KMP_BLOCKTIME", "0")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_raw))
    cmd = contention._child_command(str(recipe), ["data.batch_size=1"], iters=1, warmup=0)
    envs = contention.setting_envs()
    expected = thread_env(environ=clean_env())
    assert "OMP_WAIT_POLICY" not in expected and ADAPT_VAR in expected

    # two at once (one of each, to keep the test short): both are built, then timed together
    old, new = contention.run_group(cmd, [envs["old"], envs["new"]], "old and new", timeout=300)
    assert old["env"] == {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None, "OMP_WAIT_POLICY": None, ADAPT_VAR: None}
    assert {k: v for k, v in new["env"].items() if v is not None} == expected
    assert new["threads"] == int(expected["OMP_NUM_THREADS"])
    for report in (old, new):
        assert report["seconds"] > 0 and report["data_workers"] == 0


def test_bench_cpu_command_writes_the_table_and_the_json(tiny_raw, tmp_path, monkeypatch, capsys):
    seconds = {("old", 1): [[10.0]], ("new", 1): [[5.0]], ("old", 2): [[30.0, 40.0]], ("new", 2): [[9.0, 11.0]]}
    seen = []

    def fake_group(cmd, envs, label, timeout):
        assert all(env == envs[0] for env in envs)
        setting, count = ("new" if envs[0].get("OMP_NUM_THREADS") else "old"), len(envs)
        seen.append((setting, count, label))
        return [{"seconds": s, "threads": 2, "threads_at_end": 3 - count, "data_workers": 0, "env": {}}
                for s in seconds[setting, count].pop()]

    monkeypatch.setattr(contention, "run_group", fake_group)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_raw))
    out = tmp_path / "bench.json"
    args = cli.build_parser().parse_args(["bench-cpu", str(recipe), "--iters", "2", "--out", str(out)])
    assert cli.command_module("bench-cpu").run(args) == 0
    assert sorted(seen) == [("new", 1, "new alone"), ("new", 2, "new two at once"),
                            ("old", 1, "old alone"), ("old", 2, "old two at once")]
    result = json.loads(out.read_text())
    assert result["iters"] == 2 and result["settings"]["old"]["OMP_WAIT_POLICY"] is None
    assert result["settings"]["new"]["OMP_WAIT_POLICY"] is None and result["settings"]["new"][ADAPT_VAR]
    assert result["ratios"]["new_alone_vs_old_alone"] == pytest.approx(0.5)
    assert result["ratios"]["old_two_vs_alone"] == pytest.approx([3.0, 4.0])
    assert result["ratios"]["new_two_vs_alone"] == pytest.approx([1.8, 2.2])
    assert result["met"] == {"new_alone_vs_old_alone": True, "new_two_vs_alone": True}
    printed = capsys.readouterr().out
    assert "new alone / old alone: 0.500" in printed and "2.20x at most" in printed
    assert "new, two at once: 1 thread(s) each at the end" in printed


def test_progress_log_reports_about_every_tenth_with_rate_and_time_left(monkeypatch, caplog):
    from gancompress.run import train
    clock = iter(float(t) for t in range(0, 1000))
    monkeypatch.setattr(train.time, "perf_counter", lambda: next(clock))
    progress = train.ProgressLog("distill", 0, 100)
    with caplog.at_level("INFO", logger="gancompress.run.train"):
        for step in range(1, 101):
            progress.report(step, step // 10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert lines[0].startswith("stage 'distill' epoch 2: step 10/100 (10 %)") and "it/s, about" in lines[0]
    assert lines[-1].startswith("stage 'distill' epoch 11: step 100/100 (100 %)") and "about 0 min 00 s left" in lines[-1]


@pytest.mark.parametrize("text, cores", [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1),
                                         ("max 100000", None), ("", None), ("lots", None)])
def test_a_cgroup_quota_caps_the_cores(tmp_path, monkeypatch, text, cores):
    path = tmp_path / "cpu.max"
    path.write_text(text + "\n")
    assert threads.cpu_quota(str(path)) == cores
    assert threads.cpu_quota(str(tmp_path / "missing")) is None
    monkeypatch.setattr(threads, "CPU_MAX", str(path))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert threads.available_cores() == (cores or 64)
