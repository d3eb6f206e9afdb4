#!/usr/bin/env python
"""Measure stage-3 speed and generator latency of a recipe, side by side in one run.

    python tools/benchmark.py recipes/pix2pix_cityscapes.yaml --synthetic --batch-sizes 1 16 [--compile]

For each batch size it times GCC stage-3 iterations (teacher G/D, student G, selective D and
alpha step) in plain fp32 eager mode and in the fast path the recipe can switch on (bf16 autocast
on a GPU, channels_last, cudnn benchmark, fused Adam; optionally torch.compile), then teacher vs
student generator latency. It prints the ratios and writes everything as JSON (--out).
With --synthetic no data is read: random batches of the recipe's shapes.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gancompress.config import load_recipe  # noqa: E402
from gancompress.errors import GanCompressError  # noqa: E402
from gancompress.families import get_family  # noqa: E402
from gancompress.metrics.latency import latency_table  # noqa: E402
from gancompress.pipeline import pick_device  # noqa: E402
from gancompress.stages import DistillStage  # noqa: E402
from gancompress.train import to_device  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def stage3_rate(recipe, device, batch_size, iters, warmup, synthetic, overrides):
    """Iterations per second of stage 3 and the share of time spent waiting for data."""
    from gancompress.config import recipe_from_dict, recipe_to_dict

    raw = recipe_to_dict(recipe)
    raw["data"]["batch_size"] = batch_size
    for key, value in overrides.items():
        section, name = key.split(".")
        raw[section][name] = value
    recipe = recipe_from_dict(raw, "benchmark")
    family = get_family(recipe.family)(recipe)
    torch.manual_seed(0)
    student = {n: family.build_generator(n, recipe.model.ngf_student) for n in family.generator_names}
    stage = DistillStage(family, recipe, device, student)
    if synthetic:
        batches = [family.synthetic_batch(batch_size, device) for _ in range(2)]
        fetch = lambda i: (batches[0], batches[1])  # noqa: E731
    else:
        from gancompress.data.loader import BatchSource
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--synthetic", action="store_true", help="random batches of the recipe's shapes")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time the fast path with torch.compile")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmark.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        recipe = load_recipe(args.recipe)
        device = pick_device(args.device)
        modes = {"fp32_eager": {"train.amp": "off", "train.channels_last": False, "train.compile": False},
                 "fast": {"train.amp": "auto", "train.channels_last": device.type == "cuda", "train.compile": False}}
        if args.compile:
            modes["fast_compiled"] = {**modes["fast"], "train.compile": True}
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        result = {"recipe": args.recipe, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  "torch": torch.__version__, "threads": torch.get_num_threads(), "stage3": {}}
        for bs in args.batch_sizes:
            row = {m: stage3_rate(recipe, device, bs, args.iters, args.warmup, args.synthetic, o)
                   for m, o in modes.items()}
            base = row["fp32_eager"]["iters_per_s"]
            row["speedup_vs_fp32_eager"] = {m: r["iters_per_s"] / base for m, r in row.items() if m != "fp32_eager"}
            result["stage3"][f"batch{bs}"] = row
            print(f"stage 3, batch {bs}: " + ", ".join(
                f"{m} {r['iters_per_s']:.2f} it/s ({r['images_per_s']:.1f} img/s, data wait {r['data_wait_share']:.0%})"
                for m, r in row.items() if m != "speedup_vs_fp32_eager")
                + " | speed-up " + ", ".join(f"{m} {v:.2f}x" for m, v in row["speedup_vs_fp32_eager"].items()))
        family = get_family(recipe.family)(recipe)
        gens = {"teacher": family.build_generator(family.generator_names[0], recipe.model.ngf_teacher),
                "student": family.build_generator(family.generator_names[0], recipe.model.ngf_student)}
        lat = latency_table(gens, lambda b: family.example_input(family.generator_names[0], b, device), device,
                            warmup=3, iters=max(5, args.iters))
        result["generator_latency"] = lat
        for setting, ratio in lat.get("speedup", {}).items():
            t = lat["models"]["teacher"][setting]["median_ms"]
            s = lat["models"]["student"][setting]["median_ms"]
            print(f"generator {setting}: teacher {t:.2f} ms, student {s:.2f} ms, speed-up {ratio:.2f}x")
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    except (GanCompressError, NotImplementedError) as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
