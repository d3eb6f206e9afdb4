"""Stage-3 speed and generator latency of a recipe, measured side by side in one run.

1. Stage 3: for each batch size, GCC stage-3 iterations (teacher G/D, student G, student D and the
   mode's own phase) in plain fp32 eager mode and in the fast path the recipe can switch on (bf16
   autocast on a GPU, channels_last, cudnn benchmark, fused Adam; optionally torch.compile).
2. Generator latency: teacher vs student (unpruned, width ``ngf_student``); on CUDA also through
   :mod:`gancompress.system.fast_infer` (one CUDA graph replay, bf16, channels_last; with compile also
   torch.compile) next to eager, at batch 1 and 16.
3. Pruned vs uniform: the pruned student (a student file, or the sparse model pruned here to the
   recipe's budget, with untrained weights: its widths then follow random scores) against the
   same family's generator of uniform width ``ngf`` whose complete MACs are nearest, at batch 1
   and 16. The target is a pruned student within 10 % of the uniform one's latency at batch 16.

``gancompress benchmark`` (:mod:`gancompress.commands.benchmark`) prints the ratios and writes
everything as JSON.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch

from ..config.sections import Recipe, recipe_to_dict
from ..data.loader import BatchSource
from ..export.generator import load_generator
from ..families import get_family
from ..families.recipe import recipe_from_dict
from ..metrics.latency import latency_table, measure_latency
from ..metrics.macs import count_macs
from ..run.stage_runs import make_distill_stage, prune_generator, pruned_generator
from ..run.train import to_device
from ..system.devices import pick_device
from ..system.fast_infer import FastGenerator

log = logging.getLogger(__name__)

COMPARE_BATCHES = (1, 16)
TARGET_RATIO = 1.10  # the pruned student may be at most 10 % slower than the uniform one at batch 16
LOOSE_TOLERANCE = 0.2  # of the budget, when pruning untrained weights here


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def stage3_rate(recipe: Recipe, device: torch.device, batch_size: int, iters: int, warmup: int, synthetic: bool,
                overrides: dict) -> dict:
    """Iterations per second of stage 3 and the share of time spent waiting for data.

    Args:
        recipe: the recipe whose stage 3 is timed; ``overrides`` ('section.key' -> value) and
            ``batch_size`` replace its settings.
        synthetic: random batches of the recipe's shapes instead of its data.
    """
    raw = recipe_to_dict(recipe)
    raw["data"]["batch_size"] = batch_size
    for key, value in overrides.items():
        section, name = key.split(".")
        raw[section][name] = value
    recipe = recipe_from_dict(raw, "benchmark")
    family = get_family(recipe.family)(recipe)
    torch.manual_seed(0)
    student = {n: family.build_generator(n, recipe.model.ngf_student) for n in family.generator_names}
    stage = make_distill_stage(family, recipe, device, student)
    if synthetic:
        # As the training loop hands them over (channels_last when the recipe asks).
        batches = [to_device(family.synthetic_batch(batch_size, device), device, recipe.train.channels_last)
                   for _ in range(2)]
        fetch = lambda i: (batches[0], batches[1])  # noqa: E731
    else:
        data = family.dataset(recipe.data.train_split, train=True)
        s1 = iter(BatchSource(data, batch_size, 0, 0, recipe.data.num_workers, device.type == "cuda").epoch(0))
        s2 = iter(BatchSource(data, batch_size, 0, 1, recipe.data.num_workers, device.type == "cuda").epoch(0))
        fetch = lambda i: (to_device(next(s1), device, recipe.train.channels_last),  # noqa: E731
                           to_device(next(s2), device, recipe.train.channels_last))
    stage.set_epoch(0)
    for i in range(warmup):
        stage.step(*fetch(i))
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    waited = 0.0
    start = time.perf_counter()
    for i in range(iters):
        t0 = time.perf_counter()
        b1, b2 = fetch(i)
        waited += time.perf_counter() - t0
        stage.step(b1, b2)
    _sync(device)
    total = time.perf_counter() - start
    out = {"iters_per_s": iters / total, "images_per_s": iters * batch_size / total,
           "data_wait_share": waited / total}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def latency_settings(device, use_compile: bool) -> dict:
    """Label -> FastGenerator options (None: eager fp32, the reference) of the settings timed."""
    settings = {"eager_fp32": None}
    if device.type == "cuda":
        settings["cuda_graph_bf16"] = {"mode": "cuda_graph", "bf16": True, "channels_last": True}
        if use_compile:
            settings["compile_bf16"] = {"mode": "compile", "bf16": True, "channels_last": True}
    return settings


def generator_latency(models, example_fn, device, batch_sizes, settings, warmup, iters) -> dict:
    """Median latency of each shipped generator in each setting and batch size.

    Args:
        models: name -> generator as shipped (``family.for_export``).
        example_fn: batch size -> (N, ...) input on ``device``.
        settings: from :func:`latency_settings`.

    Returns:
        {name: {"<setting>_b<N>": measure_latency dict}}.
    """
    out = {}
    for name, model in models.items():
        rows = {}
        for b in batch_sizes:
            x = example_fn(b)
            for label, options in settings.items():
                # FastGenerator converts its module in place (device, channels_last): give it a copy.
                timed = model if options is None else FastGenerator(copy.deepcopy(model), x, warmup=warmup,
                                                                   **options)
                rows[f"{label}_b{b}"] = measure_latency(timed, x, device=device, warmup=warmup, iters=iters)
        out[name] = rows
    return out


def nearest_uniform_width(family, name: str, target_macs: int, widest: int) -> tuple[int, int]:
    """The width ``ngf`` in 1..``widest`` whose generator ``name`` has the complete MACs nearest
    ``target_macs`` (MACs grow with the width, so a binary search), and those MACs."""
    example = family.example_input(name, 1)
    cache: dict[int, int] = {}

    def macs(width: int) -> int:
        if width not in cache:
            cache[width] = count_macs(family.build_generator(name, width), example).complete
        return cache[width]

    lo, hi = 1, widest
    while lo < hi:  # the smallest width reaching the target
        mid = (lo + hi) // 2
        if macs(mid) >= target_macs:
            hi = mid
        else:
            lo = mid + 1
    best = min({lo, max(1, lo - 1)}, key=lambda w: abs(macs(w) - target_macs))
    return best, macs(best)


def pruned_vs_uniform(recipe, device, student_path, settings, warmup, iters) -> dict:
    """Latency of the pruned student against the uniform-width generator of nearest MACs."""
    if student_path is not None:
        pruned, meta = load_generator(student_path)
        family, name = meta["family"], meta["name"]
        source = str(student_path)
    else:
        # Untrained scores cannot always land within the recipe's tight tolerance, and the
        # comparison is at equal MACs anyway: the budget only says roughly how small.
        loose = dataclasses.replace(recipe.prune, tolerance=max(recipe.prune.tolerance, LOOSE_TOLERANCE))
        recipe = dataclasses.replace(recipe, prune=loose)
        family = get_family(recipe.family)(recipe)
        name = family.generator_names[0]
        torch.manual_seed(0)
        sparse = family.build_generator(name, recipe.model.ngf_student)
        pruned = pruned_generator(family, recipe, name, prune_generator(family, recipe, name, sparse), inherit=True)
        source = "pruned here from untrained weights"
    cfg = family.cfg
    target = count_macs(pruned, family.example_input(name, 1)).complete
    ngf, macs = nearest_uniform_width(family, name, target, max(cfg.ngf_teacher, cfg.ngf_student))
    uniform = family.build_generator(name, ngf)
    models = {"pruned": family.for_export(pruned), "uniform": family.for_export(uniform)}
    lat = generator_latency(models, lambda b: family.example_input(name, b, device), device, COMPARE_BATCHES,
                            settings, warmup, iters)
    ratio = {k: lat["pruned"][k]["median_ms"] / lat["uniform"][k]["median_ms"] for k in lat["pruned"]}
    return {"generator": name, "student": source, "pruned_gmacs": target / 1e9, "uniform_ngf": ngf,
            "uniform_gmacs": macs / 1e9, "latency": lat, "ratio": ratio,
            "within_10pct_at_b16": {k: v <= TARGET_RATIO for k, v in ratio.items() if k.endswith("_b16")}}


def run_benchmark(recipe: Recipe, *, device: str | None = None, batch_sizes=(1,), iters: int = 20, warmup: int = 5,
                  synthetic: bool = False, use_compile: bool = False, stage3: bool = True,
                  student: Path | None = None) -> dict:
    """Every measurement of this module for ``recipe``; returns the figures (and logs the ratios)."""
    dev = pick_device(device)
    modes = {"fp32_eager": {"train.amp": "off", "train.channels_last": False, "train.compile": False},
             "fast": {"train.amp": "auto", "train.channels_last": dev.type == "cuda", "train.compile": False}}
    if use_compile:
        modes["fast_compiled"] = {**modes["fast"], "train.compile": True}
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result = {"recipe": recipe.name, "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
              "torch": torch.__version__, "threads": torch.get_num_threads(), "stage3": {}}
    for bs in (batch_sizes if stage3 else []):
        row = {m: stage3_rate(recipe, dev, bs, iters, warmup, synthetic, o) for m, o in modes.items()}
        base = row["fp32_eager"]["iters_per_s"]
        row["speedup_vs_fp32_eager"] = {m: r["iters_per_s"] / base for m, r in row.items() if m != "fp32_eager"}
        result["stage3"][f"batch{bs}"] = row
        log.info("stage 3, batch %d: %s | speed-up %s", bs, ", ".join(
            f"{m} {r['iters_per_s']:.2f} it/s ({r['images_per_s']:.1f} img/s, data wait {r['data_wait_share']:.0%})"
            for m, r in row.items() if m != "speedup_vs_fp32_eager"),
            ", ".join(f"{m} {v:.2f}x" for m, v in row["speedup_vs_fp32_eager"].items()))

    family = get_family(recipe.family)(recipe)
    name = family.generator_names[0]
    gens = {"teacher": family.build_generator(name, recipe.model.ngf_teacher),
            "student": family.build_generator(name, recipe.model.ngf_student)}

    def example(b: int) -> torch.Tensor:
        return family.example_input(name, b, dev)

    iters = max(5, iters)
    lat = latency_table(gens, example, dev, warmup=3, iters=iters)
    result["generator_latency"] = lat
    for setting, ratio in lat.get("speedup", {}).items():
        t = lat["models"]["teacher"][setting]["median_ms"]
        s = lat["models"]["student"][setting]["median_ms"]
        log.info("generator %s: teacher %.2f ms, student %.2f ms, speed-up %.2fx", setting, t, s, ratio)

    settings = latency_settings(dev, use_compile)
    if len(settings) > 1:  # the fast paths exist on CUDA only; on the CPU they are eager
        shipped = {k: family.for_export(g) for k, g in gens.items()}
        fast = generator_latency(shipped, example, dev, COMPARE_BATCHES, settings, 3, iters)
        result["generator_fast_path"] = fast
        for key in fast["student"]:
            log.info("generator %s: teacher %.2f ms, student %.2f ms", key,
                     fast["teacher"][key]["median_ms"], fast["student"][key]["median_ms"])

    cmp = pruned_vs_uniform(recipe, dev, student, settings, 3, iters)
    result["pruned_vs_uniform"] = cmp
    log.info("pruned student %s (%.4g GMACs, %s) vs uniform ngf %d (%.4g GMACs):", cmp["generator"],
             cmp["pruned_gmacs"], cmp["student"], cmp["uniform_ngf"], cmp["uniform_gmacs"])
    for key, ratio in cmp["ratio"].items():
        line = (f"  {key}: pruned {cmp['latency']['pruned'][key]['median_ms']:.2f} ms, uniform "
                f"{cmp['latency']['uniform'][key]['median_ms']:.2f} ms, ratio {ratio:.2f}")
        if key in cmp["within_10pct_at_b16"]:
            line += " (within 10 %)" if cmp["within_10pct_at_b16"][key] else " (NOT within 10 %)"
        log.info("%s", line)
    return result
