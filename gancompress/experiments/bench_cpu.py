"""Stage 3 on a CPU shared with another job: the old thread settings against the new, side by side.

A fixed number of a recipe's stage-3 iterations (:func:`stage3_seconds`: the stage as
``stage_runs.make_distill_stage`` builds it, on the recipe's own training data, like
``benchmark.stage3_rate``) runs in child processes, (a) one alone and (b) two at once, each with

- ``old``: no thread variable set (:func:`gancompress.system.threads.clean_env`): torch's defaults, one
  thread per core that spins while it waits;
- ``new``: exactly what the entry point sets (:func:`gancompress.system.threads.thread_env` of that same
  clean environment): the cores as threads, the runtime's own wait policy, and the count adapting
  to the load (:mod:`gancompress.system.coreshare`: fewer threads while another process keeps the cores
  busy), polled in the timed loop as ``train_stage`` polls it.

Children start from a clean environment, so the parent's own settings (the command line already
chose the new ones for itself) never reach the old runs. Each child builds its stage and runs the
warm-up iterations, then waits; the timed loops of a pair start together. Only the timed loop is
measured. The recipe's ``data.num_workers`` applies to both settings alike.

``gancompress bench-cpu RECIPE`` (:mod:`gancompress.commands.bench_cpu`) prints the table and the
ratios and writes every figure as JSON. The targets: new alone no slower than old alone (within
:data:`ALONE_TARGET`), and each of two new runs at once within :data:`SHARED_TARGET` of its time
alone. The child side is ``python -m gancompress.experiments.bench_cpu``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import GanCompressError
from ..system.threads import ADAPT_VAR, THREAD_VARS, available_cores, clean_env, thread_env

ALONE_TARGET = 1.05  # new alone / old alone
SHARED_TARGET = 2.3  # each of two at once / alone (2.0 would be a perfect share of the cores)
SETTINGS = ("old", "new")
_SHOWN = THREAD_VARS + (ADAPT_VAR,)  # the variables reported per setting
_READY = "gancompress-bench-cpu ready"
_RESULT = "gancompress-bench-cpu result "
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class ContentionError(GanCompressError):
    """A measuring child process failed; the message is its own last error line."""


def setting_envs(threads: int | None = None, base: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The environments of the children: 'old' and 'new' -> environment.

    Both start from ``clean_env(base)`` (default ``os.environ``) with this package first on
    ``PYTHONPATH``; 'new' adds :func:`thread_env` of that clean environment, the variables the
    entry point would set in a process started with it (and ``--threads threads``, if given).
    """
    clean = clean_env(base)
    path = clean.get("PYTHONPATH")
    clean["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    return {"old": clean, "new": {**clean, **thread_env(threads, clean)}}


def stage3_seconds(recipe, iters: int, warmup: int, ready: Callable[[], None] | None = None) -> dict:
    """Run ``warmup`` then ``iters`` timed stage-3 iterations of ``recipe`` on the CPU.

    Args:
        recipe: a resolved recipe; its stage 3 (student of width ``model.ngf_student``, fresh
            teacher, the recipe's discriminator mode) trains on its training split.
        iters: timed iterations (epochs repeat as needed).
        warmup: untimed iterations first (allocator, first-call costs).
        ready: called between the warm-up and the timed loop (a pair starts together).

    Returns:
        {"seconds": the timed loop's wall time, "threads": torch's intra-op threads,
        "data_workers": DataLoader workers per stream}.
    """
    import torch

    from ..data.loader import BatchSource
    from ..families import get_family
    from ..run.stage_runs import make_distill_stage
    from ..run.train import to_device
    from ..system.coreshare import core_share
    from ..system.threads import data_workers

    device = torch.device("cpu")
    torch.manual_seed(recipe.seed)
    family = get_family(recipe.family)(recipe)
    student = {n: family.build_generator(n, recipe.model.ngf_student) for n in family.generator_names}
    stage = make_distill_stage(family, recipe, device, student)
    data = family.dataset(recipe.data.train_split, train=True)
    size, two = recipe.data.batch_size, stage.needs_second_batch
    workers = data_workers(recipe.data.num_workers, "cpu", streams=2 if two else 1)  # as train_stage has it
    first = BatchSource(data, size, recipe.seed, 0, workers)
    second = BatchSource(data, size, recipe.seed, 1, workers) if two else None

    def batches():
        epoch = 0
        while True:
            seconds = second.epoch(epoch) if second is not None else None
            for batch in first.epoch(epoch):
                yield to_device(batch, device), (to_device(next(seconds), device) if seconds is not None else None)
            epoch += 1

    stream = batches()
    stage.set_epoch(0)
    share = core_share()  # as train_stage has it: on where the entry point chose the count
    for _ in range(warmup):
        stage.step(*next(stream))
    if ready is not None:
        ready()
    threads = torch.get_num_threads()
    start = time.perf_counter()
    for _ in range(iters):
        stage.step(*next(stream))
        if share is not None:
            share.poll()
    return {"seconds": time.perf_counter() - start, "threads": threads, "threads_at_end": torch.get_num_threads(),
            "data_workers": first.num_workers}


def _child_command(recipe: str, overrides: list[str], iters: int, warmup: int) -> list[str]:
    cmd = [sys.executable, "-m", "gancompress.experiments.bench_cpu", str(Path(recipe).resolve()), "--iters", str(iters),
           "--warmup", str(warmup)]
    for assignment in overrides:
        cmd += ["--set", assignment]
    return cmd


def _last_error_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        return "it exited without a message"
    return lines[-1].removeprefix("gancompress: error: ")


def run_group(cmd: list[str], envs: list[dict[str, str]], label: str, timeout: float) -> list[dict]:
    """Start one child of ``cmd`` per environment in ``envs`` at once; time their loops from a common start.

    Returns each child's report (:func:`stage3_seconds` and its thread variables), in the order
    of ``envs``. Raises ContentionError with the child's last error line when one fails, or when
    the group takes longer than ``timeout`` seconds (the children are then killed).
    """
    count, procs = len(envs), []
    timer = threading.Timer(timeout, lambda: [p.kill() for p in procs])
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        logs = [Path(tmp) / f"child{i}.log" for i in range(count)]
        try:
            for env, log_path in zip(envs, logs):
                with open(log_path, "wb") as err:
                    procs.append(subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                  stderr=err, text=True))
            timer.start()

            def read_tagged(i: int, tag: str) -> str:
                for line in procs[i].stdout:
                    if line.startswith(tag):
                        return line[len(tag):]
                procs[i].wait()
                why = (f"it did not finish within {timeout:g} s (raise --timeout)" if not timer.is_alive()
                       else _last_error_line(logs[i]))
                raise ContentionError(f"bench-cpu: the {label} run {i + 1} of {count} failed: {why}")

            for i in range(count):
                read_tagged(i, _READY)
            for p in procs:  # all are built and warm: start the timed loops together
                p.stdin.write("go\n")
                p.stdin.flush()
            reports = [json.loads(read_tagged(i, _RESULT)) for i in range(count)]
            for p in procs:
                p.wait()  # each has printed its report and is exiting
            return reports
        finally:
            timer.cancel()
            for p in procs:
                if p.poll() is None:  # a failure elsewhere: the group's figures are lost anyway
                    p.kill()
                    p.wait()
                with contextlib.suppress(OSError):
                    p.stdin.close()
                p.stdout.close()


def run_contention(recipe: str, overrides: list[str] | None = None, iters: int = 20, warmup: int = 3,
                   repeats: int = 1, threads: int | None = None, timeout: float = 3600.0,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Measure stage 3 of ``recipe`` alone and two at once, with the old and the new settings.

    Args:
        recipe: the recipe file; ``overrides`` are ``KEY.PATH=VALUE`` strings as for ``--set``.
        iters, warmup: timed and untimed stage-3 iterations of every child.
        repeats: the four measurements (old alone, new alone, old pair, new pair) are repeated
            this many times in turn; the medians are compared.
        threads: ``--threads`` for the new setting (None: the entry point's default).
        timeout: seconds one group of children may take.
        progress: called with a line before each measurement.

    Returns:
        A JSON-able dict: the settings' variables, every child's report, the median seconds, the
        ratios and whether the targets are met.

    Raises:
        RecipeError: a bad recipe (checked here before any child starts).
        ContentionError: a child failed.
    """
    from ..families.recipe import load_recipe

    overrides = list(overrides or [])
    loaded = load_recipe(recipe, overrides)
    cmd = _child_command(recipe, overrides, iters, warmup)
    envs = setting_envs(threads)
    runs: dict[str, dict[str, list]] = {s: {"alone": [], "two_at_once": []} for s in SETTINGS}
    for r in range(repeats):
        for count, key in ((1, "alone"), (2, "two_at_once")):
            for setting in SETTINGS:
                label = f"{setting} {key.replace('_', ' ')}"
                if progress is not None:
                    progress(f"[{r + 1}/{repeats}] {label} ...")
                runs[setting][key].append(run_group(cmd, [envs[setting]] * count, label, timeout))

    median = {s: {"alone": statistics.median(g[0]["seconds"] for g in runs[s]["alone"]),
                  "two_at_once": [statistics.median(g[i]["seconds"] for g in runs[s]["two_at_once"])
                                  for i in range(2)]}
              for s in SETTINGS}
    ratios = {"new_alone_vs_old_alone": median["new"]["alone"] / median["old"]["alone"]}
    for s in SETTINGS:
        ratios[f"{s}_two_vs_alone"] = [t / median[s]["alone"] for t in median[s]["two_at_once"]]
    return {
        "recipe": str(recipe), "overrides": overrides, "family": loaded.family, "batch_size": loaded.data.batch_size,
        "iters": iters, "warmup": warmup, "repeats": repeats, "cores": available_cores(), "threads_option": threads,
        "settings": {s: {k: envs[s].get(k) for k in _SHOWN} for s in SETTINGS},
        "runs": runs, "median_seconds": median, "ratios": ratios,
        "targets": {"new_alone_vs_old_alone": ALONE_TARGET, "two_vs_alone": SHARED_TARGET},
        "met": {"new_alone_vs_old_alone": ratios["new_alone_vs_old_alone"] <= ALONE_TARGET,
                "new_two_vs_alone": max(ratios["new_two_vs_alone"]) <= SHARED_TARGET},
    }


def format_table(result: dict) -> str:
    """The measurement as a table and the ratios against their targets."""
    def env_text(s: str) -> str:
        env = result["settings"][s]
        return ", ".join(f"{k}={v}" for k, v in env.items() if v is not None) or "no thread variables"

    def threads(s: str) -> int:
        return result["runs"][s]["alone"][0][0]["threads"]

    median, ratios, targets = result["median_seconds"], result["ratios"], result["targets"]
    lines = [f"stage 3 of {result['recipe']} ({result['family']}, batch {result['batch_size']}): "
             f"{result['iters']} iterations after {result['warmup']} warm-up, {result['cores']} cores, "
             f"median of {result['repeats']}",
             f"{'settings':<9}{'threads':>8}{'alone s':>10}{'two at once s':>18}{'two / alone':>16}"]
    for s in SETTINGS:
        two = median[s]["two_at_once"]
        lines.append(f"{s:<9}{threads(s):>8}{median[s]['alone']:>10.2f}"
                     f"{f'{two[0]:.2f}, {two[1]:.2f}':>18}"
                     f"{', '.join(f'{r:.2f}x' for r in ratios[f'{s}_two_vs_alone']):>16}")
    for s in SETTINGS:
        lines.append(f"  {s}: {env_text(s)}")
    ends = sorted({r["threads_at_end"] for g in result["runs"]["new"]["two_at_once"] for r in g})
    lines.append(f"  new, two at once: {'/'.join(map(str, ends))} thread(s) each at the end of the timed loops")
    met = result["met"]
    lines.append(f"new alone / old alone: {ratios['new_alone_vs_old_alone']:.3f} "
                 f"(target <= {targets['new_alone_vs_old_alone']:.2f}: "
                 f"{'met' if met['new_alone_vs_old_alone'] else 'NOT met'})")
    lines.append(f"new, each of two at once / alone: {max(ratios['new_two_vs_alone']):.2f}x at most "
                 f"(target <= {targets['two_vs_alone']:.1f}x: {'met' if met['new_two_vs_alone'] else 'NOT met'})")
    return "\n".join(lines)


def _wait_for_go() -> None:
    print(_READY, flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("gancompress: error: the parent stopped before the timed loop")


def _child_main(argv: list[str] | None = None) -> int:
    """One measuring child: the environment it was started with is the setting under test."""
    parser = argparse.ArgumentParser(prog="python -m gancompress.experiments.bench_cpu")
    parser.add_argument("recipe")
    parser.add_argument("--iters", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    from ..families.recipe import load_recipe

    try:
        report = stage3_seconds(load_recipe(args.recipe, args.overrides), args.iters, args.warmup, _wait_for_go)
    except GanCompressError as exc:
        print(f"gancompress: error: {exc}", file=sys.stderr)
        return 2
    report["env"] = {k: os.environ.get(k) for k in _SHOWN}
    print(_RESULT + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
