"""How many CPU threads each process uses, and how its idle threads wait.

torch runs CPU work on an OpenMP thread pool of one thread per core whose threads *spin* for a
while after each parallel region before they sleep. Alone, that is the fastest setting; two such
jobs on the same cores steal each other's time slices (on a busy 2-core machine a small conv net
trained 12 to 17 times slower). Threads that sleep at once (``OMP_WAIT_POLICY=PASSIVE``) share
well but made a lone Pix2Pix demo run about 14 % slower, and one thread about as much
(CHANGELOG.md, 2026-11). So the wait policy stays the runtime's own and the *count* adapts: where gancompress
chose it, the training loops lower it while other processes keep the cores busy and raise it
again when they are done (:mod:`gancompress.system.coreshare`). The OpenMP runtime reads ``OMP_*`` once,
when torch loads it, so the entry point (:func:`gancompress.cli.main`) calls :func:`configure`
before anything imports torch.

Precedence, for each setting on its own:

1. ``gancompress --threads N`` sets the thread count (fixed: it does not adapt);
2. otherwise the environment's ``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY`` / ``MKL_NUM_THREADS``,
   where the user (or a parent process) set them (a count from there is fixed too);
3. otherwise our defaults: the wait policy the OpenMP runtime has by default (not set); threads =
   the cores this process may run on (``os.sched_getaffinity``, capped by a cgroup v2 CPU quota)
   divided by the processes torchrun started on this node (``LOCAL_WORLD_SIZE``), at least 1,
   adapting to the load (:data:`ADAPT_VAR` carries that limit to the training loop);
   ``MKL_NUM_THREADS`` = the thread count.

Note that torchrun itself sets ``OMP_NUM_THREADS=1`` for its processes when the variable is unset
and ``--nproc_per_node`` > 1, so under torchrun rule 2 usually applies.

DataLoader worker processes (:func:`data_workers` chooses how many) run with one thread each
(:func:`worker_init`). This module imports no torch at module level.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from ..errors import GanCompressError

#: The variables :func:`thread_env` sets (OMP_WAIT_POLICY only where the environment gave one).
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
#: Marks a count the entry point chose, which the training loops may lower under load (its value: the limit).
ADAPT_VAR = "GANCOMPRESS_ADAPT_THREADS"
WAIT_POLICIES = ("ACTIVE", "PASSIVE")
#: Variables that change how a process's threads are made or wait (removed by :func:`clean_env`).
_THREADING_PREFIXES = ("OMP_", "GOMP_", "KMP_")
_THREADING_NAMES = (ADAPT_VAR, "MKL_NUM_THREADS", "MKL_DYNAMIC", "OPENBLAS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
#: torchrun's variables; a process that has them divides the cores with its siblings.
_LAUNCH_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class ThreadsError(GanCompressError):
    """A thread setting in the environment that the OpenMP runtime would not understand."""


@dataclass(frozen=True)
class ThreadSettings:
    """The thread settings of a process.

    Attributes:
        threads: torch's intra-op threads (also ``OMP_NUM_THREADS`` unless the user gave a list).
        wait_policy: the user's ``OMP_WAIT_POLICY``, or None (the OpenMP runtime's default).
        source: where ``threads`` came from: '--threads', 'environment' or 'default' (only a
            default count adapts to the load).
        env: the variables to set (:data:`THREAD_VARS` -> value; :data:`ADAPT_VAR` with a default count).
    """

    threads: int
    wait_policy: str | None
    source: str
    env: dict[str, str]


#: cgroup v2's CPU quota of this process's group (containers, CI runners, systemd slices).
CPU_MAX = "/sys/fs/cgroup/cpu.max"


def cpu_quota(path: str | None = None) -> int | None:
    """Whole cores the cgroup quota allows (``cpu.max``: 'QUOTA PERIOD', rounded up), None without one."""
    try:
        with open(path or CPU_MAX) as f:
            quota, _, period = f.read().strip().partition(" ")
        return max(1, -(-int(quota) // int(period or 100000)))
    except (OSError, ValueError, ZeroDivisionError):  # no file, or 'max': no quota
        return None


def available_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (``os.cpu_count()`` where there is
    none), capped by a cgroup CPU quota (a container given 2 CPUs of a 64-core host gets 2)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = max(1, os.cpu_count() or 1)
    quota = cpu_quota()
    return min(cores, quota) if quota else cores


def local_processes(environ: Mapping[str, str] | None = None) -> int:
    """The processes torchrun started on this node (``LOCAL_WORLD_SIZE``); 1 without torchrun."""
    environ = os.environ if environ is None else environ
    text = environ.get("LOCAL_WORLD_SIZE", "").strip()
    if not text:
        return 1
    try:
        value = int(text)
    except ValueError:
        raise ThreadsError(f"LOCAL_WORLD_SIZE={text!r}: torchrun sets it to the number of processes on this node; "
                           "unset it for a plain start") from None
    return max(1, value)


def default_threads(environ: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """Our default thread count: ``cores`` (default :func:`available_cores`) over :func:`local_processes`, >= 1."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // local_processes(environ))


def _env_threads(text: str, name: str) -> int:
    """The thread count of an ``OMP_NUM_THREADS``-style value: '4', or a nested list '4,2' (its first level)."""
    first = text.split(",", 1)[0].strip()
    try:
        value = int(first)
    except ValueError:
        value = 0
    if value < 1:
        raise ThreadsError(f"{name}={text!r} in the environment: expected a whole number of threads >= 1; "
                           "fix or unset it, or choose with gancompress --threads N")
    return value


def thread_settings(threads: int | None = None, environ: Mapping[str, str] | None = None) -> ThreadSettings:
    """The settings a process started with ``environ`` (default ``os.environ``) should run with.

    Args:
        threads: ``--threads`` (None: not given). It overrides the environment's thread counts;
            the environment's ``OMP_WAIT_POLICY`` is kept either way.
        environ: the environment to read; nothing is changed.

    Raises:
        ThreadsError: a set ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` or ``OMP_WAIT_POLICY`` that
            OpenMP would not understand (an empty value counts as unset).
    """
    environ = os.environ if environ is None else environ
    given = {name: environ.get(name, "").strip() for name in THREAD_VARS}
    policy = given["OMP_WAIT_POLICY"]
    if policy and policy.upper() not in WAIT_POLICIES:
        raise ThreadsError(f"OMP_WAIT_POLICY={policy!r} in the environment: expected PASSIVE or ACTIVE; "
                           "fix or unset it")
    policy = policy or None
    kept = {"OMP_WAIT_POLICY": policy} if policy else {}
    if threads is not None:
        if threads < 1:
            raise ThreadsError(f"--threads {threads}: expected a whole number of threads >= 1")
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **kept}
        return ThreadSettings(threads, policy, "--threads", env)
    omp = given["OMP_NUM_THREADS"]
    if omp:
        count, source = _env_threads(omp, "OMP_NUM_THREADS"), "environment"
    else:
        count, source = default_threads(environ), "default"
        omp = str(count)
    mkl = given["MKL_NUM_THREADS"]
    if mkl:
        _env_threads(mkl, "MKL_NUM_THREADS")
    env = {"OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": mkl or str(count), **kept}
    # A default count adapts; so does one inherited from a parent gancompress process that chose it
    # (its mark still names the count); any other count is the user's and stays fixed.
    if source == "default" or environ.get(ADAPT_VAR) == omp:
        env[ADAPT_VAR] = str(count)
    return ThreadSettings(count, policy, source, env)


def thread_env(threads: int | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the entry point sets (:data:`THREAD_VARS` -> value); see :func:`thread_settings`."""
    return dict(thread_settings(threads, environ).env)


def configure(threads: int | None = None, *, torch_threads: bool = True) -> ThreadSettings:
    """Choose this process's thread settings: set them in ``os.environ`` and in torch.

    Call it before anything imports torch: the OpenMP runtime reads ``OMP_WAIT_POLICY`` only when
    it loads. Child processes inherit the variables.

    Args:
        threads: ``--threads`` (None: the environment's setting or our default).
        torch_threads: also import torch and call ``torch.set_num_threads`` (torch caps its
            default at the machine's cores; an explicit count is applied as given).

    Raises:
        ThreadsError: a thread setting in the environment that OpenMP would not understand.
    """
    settings = thread_settings(threads)
    os.environ.update(settings.env)
    if ADAPT_VAR not in settings.env:  # a fixed count: drop a mark that no longer applies
        os.environ.pop(ADAPT_VAR, None)
    if torch_threads:
        import torch

        if torch.get_num_threads() != settings.threads:
            torch.set_num_threads(settings.threads)
    return settings


def child_env(processes: int = 1, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for ``processes`` child processes that run at the same time.

    The parent's thread count (its settings from :func:`thread_settings`) is divided between them
    (at least 1 each); the wait policy is the parent's. Where the parent's count adapts to the
    load, the children's does too, within their share.

    Args:
        processes: how many children run at once (the waiting parent is not counted).
        base: the environment to start from (default ``os.environ``).
        extra: variables to add (``PYTHONPATH=...``).
    """
    base = os.environ if base is None else base
    settings = thread_settings(environ=base)
    each = str(max(1, settings.threads // max(1, processes)))
    env = {**base, **settings.env, "OMP_NUM_THREADS": each, "MKL_NUM_THREADS": each, **extra}
    if ADAPT_VAR in settings.env:
        env[ADAPT_VAR] = each
    else:
        env.pop(ADAPT_VAR, None)
    return env


def clean_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without any thread setting or torchrun variable.

    A process started with it gets the libraries' own defaults (torch: one spinning thread per core).
    """
    base = os.environ if base is None else base
    return {k: v for k, v in base.items()
            if not k.startswith(_THREADING_PREFIXES) and k not in _THREADING_NAMES and k not in _LAUNCH_NAMES
            and not k.startswith("TORCHELASTIC_")}


def data_workers(requested: int | None, device_type: str, cores: int | None = None,
                 processes: int | None = None, streams: int = 1) -> int:
    """DataLoader worker processes for each batch stream of one training process.

    Args:
        requested: ``data.num_workers``; an explicit count is kept (per stream), None means automatic.
        device_type: 'cuda' or 'cpu' (the training device).
        cores: the cores to share (default :func:`available_cores`).
        processes: training processes on this node sharing them (default :func:`local_processes`).
        streams: batch streams that share an automatic count (stage 3 reads two), rounded up.

    Automatic: with ``c`` = cores / processes, on CUDA ``min(8, c - 1)`` (one core stays with the
    training loop); on the CPU the workers would compete with the training threads for the same
    cores, so 0 when ``c <= 4``, else ``min(4, c // 4)``.
    """
    if requested is not None:
        return requested
    cores = available_cores() if cores is None else cores
    processes = local_processes() if processes is None else processes
    per = max(1, cores // max(1, processes))
    total = max(0, min(8, per - 1)) if device_type == "cuda" else 0 if per <= 4 else min(4, per // 4)
    return -(-total // max(1, streams))


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: whatever a worker starts runs one thread.

    torch's worker loop already calls ``torch.set_num_threads(1)`` before this; the variables
    make processes and thread pools started inside the worker (image decoders, subprocesses)
    follow suit instead of each taking every core.
    """
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
