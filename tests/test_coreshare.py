"""CoreShare (issue 17): fewer threads while other processes keep the cores busy, back when they stop.

The decisions are tested with fake tick counters and a fake clock; the /proc readers on this
machine's real files; the wiring through the entry point in a subprocess."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gancompress import coreshare
from gancompress.coreshare import CoreShare, busy_ticks, core_share, process_ticks
from gancompress.threads import ADAPT_VAR, clean_env

ROOT = Path(__file__).resolve().parents[1]
TICKS = 100  # per second


class FakeMachine:
    """Two cores; each advance() runs one second in which we and the others use the given cores."""

    def __init__(self):
        self.now, self.busy, self.own = 0.0, 0, 0
        self.applied: list[int] = []

    def advance(self, ours: float, others: float) -> None:
        self.now += 1.0
        self.own += int(ours * TICKS)
        self.busy += int((ours + others) * TICKS)

    def share(self, limit: int = 2, threads: int = 2, cpus: int = 2) -> CoreShare:
        return CoreShare(limit, threads, set(range(cpus)), lambda: self.busy, lambda: self.own, self.applied.append,
                         clock=lambda: self.now, ticks_per_second=TICKS)


def run(machine: FakeMachine, share: CoreShare, seconds: list[tuple[float, float]]) -> list[int]:
    """Poll once a second through the given (ours, others) loads; the thread count after each."""
    counts = []
    for ours, others in seconds:
        machine.advance(ours, others)
        share.poll()
        counts.append(share.threads)
    return counts


def test_drops_to_the_cores_left_while_others_are_busy_and_comes_back_after_they_stop(caplog):
    m = FakeMachine()
    share = m.share()
    with caplog.at_level(logging.INFO, logger="gancompress.coreshare"):
        counts = run(m, share, [(2.0, 0.0)] * 3 + [(1.0, 1.0)] * 4 + [(1.0, 0.0)] * 4)
    # alone: 2; another job takes a core: 1 after two agreeing seconds; it stops: 2 after three
    assert counts == [2, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2]
    assert m.applied == [1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "1.0 of this process's 2 cores busy" in messages[0] and "gancompress --threads N" in messages[0]
    assert "back to 2" in messages[1]


def test_a_short_burst_of_other_work_changes_nothing():
    m = FakeMachine()
    share = m.share()
    assert run(m, share, [(2.0, 0.0), (1.0, 1.0), (2.0, 0.0), (1.2, 0.8), (2.0, 0.2), (2.0, 0.3)]) == [2] * 6
    assert m.applied == []


def test_never_above_its_limit_nor_below_one_and_in_proportion_on_many_cores():
    m = FakeMachine()
    share = m.share(limit=8, threads=8, cpus=8)
    assert run(m, share, [(5.0, 3.0)] * 2) == [8, 5]  # 3 cores busy elsewhere: 5 fit
    assert run(m, share, [(1.0, 16.0)] * 2) == [5, 1]  # more than the machine: at least 1
    assert run(m, share, [(8.0, 0.0)] * 3) == [1, 1, 8]  # never more than the limit
    # a count that starts below the limit (a previous stage left it there) rises when the cores free up
    m2 = FakeMachine()
    assert run(m2, m2.share(limit=2, threads=1), [(1.0, 0.0)] * 3) == [1, 1, 2]


def test_polls_between_intervals_sample_nothing():
    m = FakeMachine()
    share = m.share()
    reads = []
    share._read_busy = lambda: reads.append(1) or m.busy
    for _ in range(50):
        share.poll()  # no time has passed
    assert reads == []


def test_core_share_only_where_gancompress_chose_the_count(monkeypatch):
    assert core_share({}) is None  # the user fixed the count (or ran without the entry point)
    assert core_share({ADAPT_VAR: "1"}) is None  # one thread: nothing to give back
    assert core_share({ADAPT_VAR: "many"}) is None
    share = core_share({ADAPT_VAR: "2"})
    if sys.platform.startswith("linux"):
        assert share is not None and share.limit == 2 and share.cpus == set(os.sched_getaffinity(0))
    else:
        assert share is None


def test_proc_readers_parse_stat_lines():
    stat = ("cpu  9 9 9 9 9 9 9 9 0 0\n"
            "cpu0 10 1 5 1000 7 2 3 50 0 0\n"  # busy: 10 + 1 + 5 + 2 + 3 (idle, iowait, steal out)
            "cpu1 20 0 10 500 0 0 0 0 0 0\n"
            "cpu2 99 99 99 99 99 99 99 99 0 0\n"
            "intr 1 2 3\n")
    assert busy_ticks({0, 1}, stat) == 21 + 30
    assert busy_ticks({2}, stat) == 99 * 3 + 99 * 2
    # a process name with spaces and parentheses does not shift the fields
    line = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 4 0 100 0 0"
    assert process_ticks(line) == 10 and process_ticks(line, reaped=True) == 34


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_real_counters_see_this_process_working():
    before = coreshare.own_ticks()
    machine_before = coreshare.machine_ticks(set(os.sched_getaffinity(0)))
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    used = coreshare.own_ticks() - before
    assert used >= 0.2 * os.sysconf("SC_CLK_TCK")
    assert coreshare.machine_ticks(set(os.sched_getaffinity(0))) - machine_before >= used * 0.9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_entry_point_marks_its_own_count_and_not_the_users():
    code = ("import os, sys\n"
            "from gancompress.cli import main\n"
            "import gancompress.commands.macs as macs\n"
            f"macs.run = lambda args: print('ADAPT', os.environ.get({ADAPT_VAR!r})) or 0\n"
            "sys.exit(main(sys.argv[1:]))\n")
    base = {**clean_env(), "PYTHONPATH": str(ROOT)}

    def adapt(*args: str, **env: str) -> str:
        proc = subprocess.run([sys.executable, "-c", code, "macs", "recipe.yaml", *args], capture_output=True,
                              text=True, env={**base, **env}, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split("ADAPT", 1)[1].strip()

    cores = len(os.sched_getaffinity(0))
    assert adapt() == str(cores)  # gancompress chose: it may adapt
    assert adapt("--threads", "2") == "None"  # fixed by the user
    assert adapt(OMP_NUM_THREADS="1") == "None"
    # inherited from a parent gancompress process (its own choice): still adapts
    assert adapt(OMP_NUM_THREADS=str(cores), **{ADAPT_VAR: str(cores)}) == str(cores)
