"""Inference latency of generators: median and 90th percentile of single forward passes.

Each timed run is one forward pass under ``torch.inference_mode``; on CUDA the device is
synchronised before and after it, so the wall time covers the kernels and not just their launch.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def _percentile(sorted_values, q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of an ascending list."""
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


def measure_latency(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    *,
    device,
    warmup: int = 10,
    iters: int = 50,
    dtype: torch.dtype | None = None,
    torchscript: bool = False,
) -> dict:
    """Time forward passes of a model.

    The model is moved to ``device`` and put in eval mode in place (its training flag is restored
    afterwards).

    Args:
        model: network taking one tensor.
        example_input: (N, ...) input; its batch size is the one timed.
        device: "cpu", "cuda", ...
        warmup: untimed runs first (cudnn autotuning, allocator, JIT profiling).
        iters: timed runs.
        dtype: None for fp32, or a reduced dtype (torch.bfloat16, torch.float16) run under
            ``torch.autocast``.
        torchscript: time a ``torch.jit.trace`` of the model instead of eager mode.

    Returns:
        ``{"median_ms", "p90_ms", "iters"}``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    x = example_input.to(device)
    is_cuda = device.type == "cuda"
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)
    try:
        with torch.inference_mode(), autocast:
            fn = model
            if torchscript:
                # Traced under the same autocast as it is timed, so casts are recorded in the graph.
                fn = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
            for _ in range(warmup):
                fn(x)
            times = []
            for _ in range(iters):
                if is_cuda:
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fn(x)
                if is_cuda:
                    torch.cuda.synchronize(device)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.train(was_training)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": _percentile(times, 0.9), "iters": iters}


def _settings(device: torch.device) -> list:
    """(label, batch, dtype, torchscript) combinations measured on a device type."""
    if device.type == "cuda":
        return [
            (f"eager_b{b}_{name}", b, dt, False)
            for b in (1, 16)
            for name, dt in (("fp32", None), ("bf16", torch.bfloat16))
        ]
    return [("eager_b1_fp32", 1, None, False), ("torchscript_b1_fp32", 1, None, True)]


def latency_table(
    models: dict[str, torch.nn.Module],
    example_fn: Callable[[int], torch.Tensor],
    device,
    *,
    warmup: int = 10,
    iters: int = 50,
) -> dict:
    """Latency of several models in the settings that matter on a device.

    CPU: batch 1, eager and TorchScript, fp32. CUDA: batch 1 and 16, eager, fp32 and bf16.

    Args:
        models: name -> model; "teacher" and "student" also get speedup ratios.
        example_fn: batch size -> example input tensor.
        device: where to measure.
        warmup, iters: passed to :func:`measure_latency`.

    Returns:
        ``{"device": str, "models": {name: {setting: measure_latency dict or {"error": str}}},
        "speedup": {setting: teacher median / student median}}`` ("speedup" only when both
        "teacher" and "student" are given).
    """
    device = torch.device(device)
    table = {"device": str(device), "models": {}}
    for name, model in models.items():
        rows = {}
        for label, batch, dtype, ts in _settings(device):
            try:
                rows[label] = measure_latency(
                    model, example_fn(batch), device=device, warmup=warmup, iters=iters, dtype=dtype, torchscript=ts
                )
            except (RuntimeError, torch.jit.Error) as e:
                if not ts:
                    raise
                # Some nets (data-dependent control flow) cannot be traced; eager numbers still stand.
                log.warning("%s: TorchScript tracing failed (%s); skipping %s", name, e, label)
                rows[label] = {"error": str(e).splitlines()[0]}
            log.info("%s %s: %s", name, label, rows[label])
        table["models"][name] = rows
    if "teacher" in models and "student" in models:
        t, s = table["models"]["teacher"], table["models"]["student"]
        table["speedup"] = {
            k: t[k]["median_ms"] / s[k]["median_ms"]
            for k in t
            if "median_ms" in t[k] and "median_ms" in s.get(k, {}) and s[k]["median_ms"] > 0
        }
    return table
