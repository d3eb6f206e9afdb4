"""gpu-check's timing rows, each run with no other row beside it: stage-3 speed at batch 1 and 16,
generator latency, the pruned student against the uniform net of nearest MACs, and the Cityscapes
recipe's projected full run. Each records the target of :data:`TARGETS` it measures, and whether
it is met (on CUDA only: the CPU form times the small demo recipe).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from .check import CITYSCAPES, Check, Outcome, Row, RowFailure, bench_recipe, set_override
from .data import make_cityscapes_like

CITYSCAPES_TRAIN_IMAGES = 2975  # the paper's training split

#: The issue's targets: key in the JSON's "targets" -> what is asked.
TARGETS = {
    "stage3_b1": "Pix2Pix (Cityscapes) stage 3 at batch 1 on the fast path >= 75 it/s",
    "stage3_b16": "Pix2Pix (Cityscapes) stage 3 at batch 16 on the fast path >= 400 images/s",
    "pruned_vs_uniform": "pruned student (round_to 8) within 10 % of the uniform net at batch 16 on the fast path",
    "cityscapes_full_run": "projected full Cityscapes compression (stage 1 + prune + stage 3) under 6 hours",
}
TARGET_B1_ITS = 75.0
TARGET_B16_IMAGES = 400.0
TARGET_PRUNED_RATIO = 1.10
TARGET_FULL_RUN_S = 6 * 3600.0


def stage_rate(metrics_path: Path, stage: str) -> tuple[float, int]:
    """Iterations per second of ``stage`` between its first and last log records (the first
    interval, with its start-up costs, is left out), and the number of iterations it spans."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("stage") == stage and "seconds" in r]
    if len(rows) < 2:
        raise RowFailure(f"{metrics_path}: fewer than two log records of stage '{stage}' to measure a rate from")
    first, last = rows[0], rows[-1]
    steps, seconds = last["step"] - first["step"], last["seconds"] - first["seconds"]
    if steps <= 0 or seconds <= 0:
        raise RowFailure(f"{metrics_path}: stage '{stage}' logged no progress between its records")
    return steps / seconds, steps


def project_full_run(recipe, stage1_rate: float, stage3_rate: float, prune_s: float,
                     train_images: int = CITYSCAPES_TRAIN_IMAGES) -> dict:
    """Seconds a full run of ``recipe`` would take at the measured rates.

    Stage 1 is ``recipe.sparse_epochs`` and stage 3 ``recipe.distill_epochs`` epochs of
    ``train_images // data.batch_size`` iterations; pruning takes as long as it did here (it does
    not depend on the data). Evaluation and export are left out.
    """
    per_epoch = train_images // recipe.data.batch_size
    it1, it3 = recipe.sparse_epochs * per_epoch, recipe.distill_epochs * per_epoch
    total = it1 / stage1_rate + prune_s + it3 / stage3_rate
    return {"stage1_iterations": it1, "stage3_iterations": it3, "stage1_s": it1 / stage1_rate,
            "prune_s": prune_s, "stage3_s": it3 / stage3_rate, "total_s": total, "total_h": total / 3600}


def cityscapes_row() -> Row:
    def run(check: Check) -> Outcome:
        from ...families.recipe import load_recipe
        from ...files.rundir import RunDir

        recipe_path = check.recipe(CITYSCAPES)
        n_train = 8 if check.quick else 320
        data = make_cityscapes_like(check.work / "data" / "cityscapes_like", n_train, 4)
        run_dir = check.work / "runs" / "cityscapes"
        shutil.rmtree(run_dir, ignore_errors=True)
        log_every = 2 if check.quick else 32
        sets = {"data.root": data, "sparse.epochs": 1, "distill.epochs_const": 1, "distill.epochs_decay": 0,
                "train.amp": "auto", "train.channels_last": True, "train.log_every": log_every,
                "train.samples_per_epoch": False, "eval.latency": False}
        args = [sys.executable, "-m", "gancompress.cli", "compress", str(recipe_path), "--device", check.device,
                "--run-dir", str(run_dir)]
        for key, value in sets.items():
            args += ["--set", set_override(key, value)]
        check.call(args, "compress")
        run = RunDir(run_dir)
        r1, n1 = stage_rate(run.metrics, "sparse")
        r3, n3 = stage_rate(run.metrics, "distill")
        prune_s = run.pruned.stat().st_mtime - run.sparse.stat().st_mtime
        full = project_full_run(load_recipe(recipe_path), r1, r3, prune_s)
        met = full["total_s"] < TARGET_FULL_RUN_S if check.device == "cuda" and not check.quick else None
        details = {"train_images": n_train, "stage1_it_per_s": r1, "stage1_timed_iterations": n1,
                   "stage3_it_per_s": r3, "stage3_timed_iterations": n3, "projection": full,
                   "amp": "auto", "channels_last": True}
        targets = {"cityscapes_full_run": _target(TARGETS["cityscapes_full_run"], full["total_h"], "h", met)}
        targets = targets if met is not None else {}
        return Outcome(f"stage 1 {r1:.1f} it/s, stage 3 {r3:.1f} it/s, prune {prune_s:.0f} s -> full run "
                       f"{full['total_h']:.1f} h{_met_text(met, '< 6 h')}", details, targets)

    return Row("cityscapes/projection", "pix2pix_cityscapes.yaml on synthetic 256x256 pairs: stage rates and the "
               "projected full run", run, timeout_s=180, estimate_s=75, alone=True,
               cuda_only="hundreds of 256x256 iterations of the ngf-64 teacher take most of an hour on a CPU")


def _target(description: str, value: float, unit: str, met: bool | None) -> dict:
    return {"target": description, "value": value, "unit": unit, "met": met}


def _met_text(met: bool | None, what: str) -> str:
    if met is None:
        return ""
    return f" (target {what}: {'met' if met else 'NOT met'})"


def stage3_row(batch: int) -> Row:
    def run(check: Check) -> Outcome:
        cuda = check.device == "cuda" and not check.quick
        iters, warmup = ((50, 10) if batch == 1 else (15, 5)) if cuda else (2, 1)
        res = check.worker("stage3", recipe=str(bench_recipe(check)), batch=batch, iters=iters, warmup=warmup)
        base, fast = res["modes"]["fp32_eager"], res["modes"]["fast"]
        speedup = fast["iters_per_s"] / base["iters_per_s"]
        if batch == 1:
            value, unit, goal, key = fast["iters_per_s"], "it/s", TARGET_B1_ITS, "stage3_b1"
        else:
            value, unit, goal, key = fast["images_per_s"], "images/s", TARGET_B16_IMAGES, "stage3_b16"
        base_value = base["iters_per_s"] if batch == 1 else base["images_per_s"]
        met = value >= goal if cuda else None
        figure = (f"fast {value:.1f} {unit} vs fp32 eager {base_value:.1f} {unit} ({speedup:.2f}x), data wait "
                  f"{fast['data_wait_share']:.0%}{_met_text(met, f'>= {goal:g} {unit}')}")
        # The targets are the Cityscapes recipe's on a GPU; the CPU form times the demo recipe.
        return Outcome(figure, res, {key: _target(TARGETS[key], value, unit, met)} if cuda else {})

    return Row(f"bench/stage3_b{batch}", f"stage-3 speed at batch {batch}, fp32 eager vs bf16 + channels_last",
               run, timeout_s=120, estimate_s=25 if batch == 1 else 30, alone=True)


def latency_row() -> Row:
    def run(check: Check) -> Outcome:
        cuda = check.device == "cuda" and not check.quick
        batches = [1, 16, 64] if cuda else [1]
        res = check.worker("latency", recipe=str(bench_recipe(check)), batches=batches,
                           iters=20 if cuda else 2, warmup=3 if cuda else 1)
        lat = res["latency"]
        parts = []
        for b in batches:
            for setting in res["settings"]:
                key = f"{setting}_b{b}"
                t, s = lat["teacher"][key]["median_ms"], lat["student"][key]["median_ms"]
                parts.append(f"b{b} {setting} T {t:.2f}/S {s:.2f} ms")
        return Outcome("; ".join(parts), res)

    return Row("bench/latency", "teacher vs student generator latency at batch 1, 16, 64, eager fp32 vs CUDA graph "
               "bf16 channels_last", run, timeout_s=120, estimate_s=25, alone=True)


def pruned_row() -> Row:
    def run(check: Check) -> Outcome:
        cuda = check.device == "cuda" and not check.quick
        res = check.worker("pruned_vs_uniform", recipe=str(bench_recipe(check)), iters=20 if cuda else 2,
                           warmup=3 if cuda else 1)
        ratio = res["ratio"]
        key = "cuda_graph_bf16_b16" if "cuda_graph_bf16_b16" in ratio else "eager_fp32_b16"
        met = ratio[key] <= TARGET_PRUNED_RATIO if cuda else None
        figure = (f"pruned {res['pruned_gmacs']:.3g} GMACs vs uniform ngf {res['uniform_ngf']} "
                  f"({res['uniform_gmacs']:.3g} GMACs): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items())
                  + _met_text(met, "<= 1.10x at b16 fast"))
        targets = {"pruned_vs_uniform": _target(TARGETS["pruned_vs_uniform"], ratio[key], f"x ({key})", met)}
        return Outcome(figure, res, targets if cuda else {})

    return Row("bench/pruned_vs_uniform", "pruned student (prune.round_to 8) vs the uniform net of nearest MACs, "
               "batch 1 and 16", run, timeout_s=150, estimate_s=40, alone=True)
