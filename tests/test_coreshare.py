"""CoreShare (issue 17): fewer threads while other processes keep the cores busy, back when they stop.

The decisions are tested with fake tick counters and a fake clock; the /proc readers on this
machine's real files; the mark the entry point sets through its own configure call."""
from __future__ import annotations

import logging
import os
import sys
import time

import pytest

from gancompress.system import coreshare
from gancompress.system.coreshare import CoreShare, busy_ticks, core_share, process_ticks
from gancompress.system.threads import ADAPT_VAR, configure

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
    with caplog.at_level(logging.INFO, logger="gancompress.system.coreshare"):
        counts = run(m, share, [(2.0, 0.0)] * 3 + [(1.0, 1.0)] * 4 + [(1.0, 0.0)] * 7)
    # alone: 2; another job takes a core: 1 at the first sample that sees it; it stops: 2 after six
    # quiet samples in a row
    assert counts == [2, 2, 2] + [1, 1, 1, 1] + [1, 1, 1, 1, 1, 2, 2]
    assert m.applied == [1, 2]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "1.0 of this process's 2 cores busy" in messages[0] and "gancompress --threads N" in messages[0]
    assert "back to 2" in messages[1] and "later changes are logged at debug level" in messages[1]
    # on a shared machine the count may change often: only the first drop and rise are logged
    with caplog.at_level(logging.INFO, logger="gancompress.system.coreshare"):
        run(m, share, ([(1.0, 1.0)] + [(1.0, 0.0)] * 6) * 3)
    assert m.applied == [1, 2] * 4 and len(caplog.records) == 2


def test_light_other_work_changes_nothing_and_a_short_lull_does_not_raise():
    m = FakeMachine()
    share = m.share()
    assert run(m, share, [(2.0, 0.0), (1.8, 0.2), (2.0, 0.3), (1.6, 0.4)]) == [2] * 4  # under half a core
    assert m.applied == []
    # busy, then quiet for fewer samples than RAISE_AFTER, then busy again: no flapping
    assert run(m, share, [(1.0, 1.0)] + [(1.0, 0.0)] * 5 + [(1.0, 1.0)] + [(1.0, 0.0)] * 5) == [1] * 12
    assert m.applied == [1]


def test_never_above_its_limit_nor_below_one_and_in_proportion_on_many_cores():
    m = FakeMachine()
    share = m.share(limit=8, threads=8, cpus=8)
    assert run(m, share, [(5.0, 3.0)]) == [5]  # 3 cores busy elsewhere: 5 fit
    assert run(m, share, [(1.0, 16.0)]) == [1]  # more than the machine: at least 1
    assert run(m, share, [(8.0, 0.0)] * 6) == [1] * 5 + [8]  # never more than the limit
    # a count that starts below the limit (a previous stage left it there) rises when the cores free up
    m2 = FakeMachine()
    assert run(m2, m2.share(limit=2, threads=1), [(1.0, 0.0)] * 6) == [1] * 5 + [2]


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
    # a kernel without per-task children lists could not tell our DataLoader workers from others
    monkeypatch.setattr(coreshare.glob, "glob", lambda pattern: [])
    assert core_share({ADAPT_VAR: "2"}) is None


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
    while time.process_time() < end:  # keep a core busy for 0.3 s of CPU time
        sum(range(1000))
    used = coreshare.own_ticks() - before
    assert used >= 0.2 * os.sysconf("SC_CLK_TCK")
    assert coreshare.machine_ticks(set(os.sched_getaffinity(0))) - machine_before >= used * 0.9


@pytest.mark.parametrize("threads, environ, marked", [
    (None, {}, "cores"),  # gancompress chose: it may adapt
    (2, {}, None),  # --threads: fixed by the user
    (None, {"OMP_NUM_THREADS": "1"}, None),  # the user's own count: fixed
    # inherited from a parent gancompress process (its own choice): still adapts
    (None, {"OMP_NUM_THREADS": "cores", ADAPT_VAR: "cores"}, "cores"),
    # a count the user changed after a parent gancompress set the mark: fixed
    (None, {"OMP_NUM_THREADS": "1", ADAPT_VAR: "cores"}, None),
])
def test_the_entry_points_configure_marks_its_own_count_and_not_the_users(monkeypatch, threads, environ, marked):
    cores = str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else str(os.cpu_count())
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", ADAPT_VAR, "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value.replace("cores", cores))
    configure(threads, torch_threads=False)  # what gancompress.cli.main calls first
    assert os.environ.get(ADAPT_VAR) == (marked.replace("cores", cores) if marked else None)
