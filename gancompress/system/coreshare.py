"""Give cores back while other processes need them, and take them again when they are done.

Measured on a 2-core machine (CHANGELOG.md, 2026-11): torch's OpenMP threads *spin* for a while after
every parallel region, which is the fastest way to train alone, but two such processes on the
same cores slow each other down about 12x; threads that sleep instead
(``OMP_WAIT_POLICY=PASSIVE``) share the cores well but made a lone run about 14 % slower, and
one thread alone about as much. No single setting is best both alone and shared, so the training
loops keep the fast default and watch the cores instead: :class:`CoreShare` reads how busy this
process's cores are (``/proc/stat``) and how much of that is this process and its DataLoader
workers (``/proc/self/stat``); when other processes keep cores busy it lowers torch's intra-op
threads to the cores left over (at least 1), and raises them again, up to the count it started
with, once the others have been quiet for 3 seconds.

It acts only where gancompress chose the thread count itself (the entry point sets
:data:`ADAPT_VAR`); ``gancompress --threads N`` or the user's own ``OMP_NUM_THREADS`` fixes the
count. Linux only (elsewhere :func:`core_share` returns None). ``torch.set_num_threads`` acts on
the calling thread, so :meth:`CoreShare.poll` must be called from the training loop's thread.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from typing import Callable

from .threads import ADAPT_VAR

log = logging.getLogger(__name__)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def busy_ticks(cpus: set[int], stat_text: str) -> int:
    """Clock ticks the CPUs in ``cpus`` spent running anything, from ``/proc/stat``'s text.

    Busy = user + nice + system + irq + softirq (guest time is inside user); idle, iowait and
    steal (time the hypervisor gave to other machines) are not.
    """
    total = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in rest.split()]
        total += fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return total


def process_ticks(stat_text: str, reaped: bool = False) -> int:
    """utime + stime of one ``/proc/<pid>/stat`` text (+ cutime + cstime with ``reaped``)."""
    fields = stat_text.rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
    ticks = int(fields[11]) + int(fields[12])
    return ticks + int(fields[13]) + int(fields[14]) if reaped else ticks


def machine_ticks(cpus: set[int]) -> int | None:
    """:func:`busy_ticks` of the live ``/proc/stat`` (None where it cannot be read)."""
    text = _read("/proc/stat")
    return None if text is None else busy_ticks(cpus, text)


def own_ticks() -> int | None:
    """Ticks used by this process's threads, its live children and the children it has reaped."""
    text = _read("/proc/self/stat")
    if text is None:
        return None
    ticks = process_ticks(text, reaped=True)
    for path in glob.glob("/proc/self/task/*/children"):
        for pid in (_read(path) or "").split():
            child = _read(f"/proc/{pid}/stat")
            if child is not None:
                ticks += process_ticks(child)
    return ticks


class CoreShare:
    """Chooses torch's intra-op thread count from how busy other processes keep our cores.

    Args:
        limit: the thread count to use while the cores are free (never exceeded).
        threads: the count torch uses now.
        cpus: the CPUs this process may run on.
        read_busy, read_own: tick counters (``/proc`` by default; tests pass fakes).
        set_threads: applies a count (``torch.set_num_threads`` by default).
        clock: seconds, monotonic.

    :meth:`poll` samples at most every :data:`INTERVAL` seconds. Other processes' share, in
    cores, is the CPUs' busy time less ours over the interval; the count that fits is
    ``round(cores - others)`` within [1, limit]. A lower count is taken after :data:`DROP_AFTER`
    intervals that agree, a higher one after :data:`RAISE_AFTER` (a burst of other work does not
    make the count flap).
    """

    INTERVAL = 0.5
    DROP_AFTER = 1  # while two jobs' spinning threads fight, each runs many times slower: act at once
    RAISE_AFTER = 6  # a wrong drop costs little (one thread alone: about 1.2x slower for 3 s)

    def __init__(self, limit: int, threads: int, cpus: set[int], read_busy: Callable[[], int | None],
                 read_own: Callable[[], int | None], set_threads: Callable[[int], None],
                 clock: Callable[[], float] = time.monotonic, ticks_per_second: float = _TICKS):
        self.limit, self.threads, self.cpus = limit, threads, cpus
        self._read_busy, self._read_own, self._set = read_busy, read_own, set_threads
        self._clock, self._tps = clock, ticks_per_second
        self._last = self._sample()
        self._agree = 0
        self.others = 0.0  # other processes' cores in the last interval
        self.changes = 0  # thread count changes so far

    def _sample(self) -> tuple[float, int, int] | None:
        busy, own = self._read_busy(), self._read_own()
        return None if busy is None or own is None else (self._clock(), busy, own)

    def fitting(self, others: float) -> int:
        """The thread count that fits beside ``others`` busy cores."""
        return max(1, min(self.limit, int(len(self.cpus) - others + 0.5)))

    def poll(self) -> int | None:
        """Sample if an interval has passed; returns the new thread count when it changed."""
        if self._last is None or self._clock() - self._last[0] < self.INTERVAL:
            return None
        now = self._sample()
        if now is None:
            return None
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        self.others = max(0.0, ((busy1 - busy0) - (own1 - own0)) / self._tps / (t1 - t0))
        want = self.fitting(self.others)
        if want == self.threads:
            self._agree = 0
            return None
        self._agree += 1
        if self._agree < (self.DROP_AFTER if want < self.threads else self.RAISE_AFTER):
            return None
        self._agree = 0
        before, self.threads = self.threads, want
        self._set(want)
        self.changes += 1
        # The first drop and rise are news; later ones (a shared machine) only at debug level.
        say = log.info if self.changes <= 2 else log.debug
        if want < before:
            say("other processes keep %.1f of this process's %d cores busy: %d intra-op thread(s) instead "
                "of %d until they finish (threads waiting for a busy core slow both jobs down many times; "
                "gancompress --threads N fixes the count)", self.others, len(self.cpus), want, before)
        else:
            say("the cores are free again: back to %d intra-op thread(s)%s", want,
                " (later changes are logged at debug level)" if self.changes == 2 else "")
        return want


def core_share(environ: dict[str, str] | None = None) -> CoreShare | None:
    """A :class:`CoreShare` for this process, or None where it does not apply.

    None when gancompress did not choose the thread count (:data:`ADAPT_VAR` unset: the user
    fixed it), when it chose one thread anyway, or without Linux's ``/proc`` (and its per-task
    ``children`` lists). A later stage's
    instance starts from the count the previous one left.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(ADAPT_VAR, "")
    limit = int(text) if text.isdigit() else 0
    if limit < 2 or not hasattr(os, "sched_getaffinity"):
        return None
    # Without /proc/<pid>/task/<tid>/children (a kernel built without it, or no /proc at all) our
    # DataLoader workers would count as other processes: then the count stays fixed.
    if not glob.glob("/proc/self/task/*/children"):
        return None
    cpus = set(os.sched_getaffinity(0))
    import torch

    return CoreShare(limit, torch.get_num_threads(), cpus, lambda: machine_ticks(cpus), own_ticks,
                     torch.set_num_threads)
