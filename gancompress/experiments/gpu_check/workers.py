"""The in-process work of gpu-check's rows, run by ``gancompress gpu-check --worker NAME`` in a fresh
process each (a CUDA error poisons its process; a hang is killed with its process group).
:data:`WORKERS` maps a worker's name to its function(device=..., **kwargs) -> JSON-able dict.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ...errors import GanCompressError

#: FastGenerator parity tolerances (max abs difference of outputs in [-1, 1]): a replayed graph runs
#: eager's kernels; inductor fuses and reorders, more so in bf16 (8-bit mantissa, ~16 layers).
PARITY_TOLERANCE = {("cuda_graph", "fp32"): 1e-4, ("cuda_graph", "bf16"): 1e-2,
                    ("compile", "fp32"): 2e-3, ("compile", "bf16"): 0.1}


def nccl_version() -> str:
    """NCCL's version as text, e.g. '2.21.5'."""
    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old ones
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _device(name: str) -> torch.device:
    """The worker's device, with cudnn autotuning on CUDA as ``compress`` and ``benchmark`` set it."""
    from ...system.devices import pick_device

    dev = pick_device(name)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dev


def _w_stage3(device: str, recipe: str, batch: int, iters: int, warmup: int) -> dict:
    from ...families.recipe import load_recipe
    from ..benchmark import stage3_rate

    dev = _device(device)
    r = load_recipe(recipe)
    modes = {"fp32_eager": {"train.amp": "off", "train.channels_last": False, "train.compile": False},
             "fast": {"train.amp": "auto", "train.channels_last": dev.type == "cuda", "train.compile": False}}
    out = {m: stage3_rate(r, dev, batch, iters, warmup, True, o) for m, o in modes.items()}
    return {"recipe": recipe, "batch": batch, "iters": iters, "warmup": warmup, "modes": out,
            "fast_setting": modes["fast"]}


def _fast_settings(dev) -> dict:
    settings = {"eager_fp32": None}
    if dev.type == "cuda":
        settings["cuda_graph_bf16"] = {"mode": "cuda_graph", "bf16": True, "channels_last": True}
    return settings


def _w_latency(device: str, recipe: str, batches: list[int], iters: int, warmup: int) -> dict:
    from ...families import get_family
    from ...families.recipe import load_recipe
    from ..benchmark import generator_latency

    dev = _device(device)
    r = load_recipe(recipe)
    family = get_family(r.family)(r)
    name = family.generator_names[0]
    torch.manual_seed(0)
    gens = {"teacher": family.for_export(family.build_generator(name, r.model.ngf_teacher)),
            "student": family.for_export(family.build_generator(name, r.model.ngf_student))}
    settings = _fast_settings(dev)
    lat = generator_latency(gens, lambda b: family.example_input(name, b, dev), dev, batches, settings, warmup, iters)
    return {"recipe": recipe, "batches": batches, "settings": list(settings), "latency": lat,
            "student_is": f"unpruned, ngf {r.model.ngf_student}"}


def _w_pruned_vs_uniform(device: str, recipe: str, iters: int, warmup: int) -> dict:
    from ...families.recipe import load_recipe
    from ..benchmark import pruned_vs_uniform

    dev = _device(device)
    r = load_recipe(recipe, ["prune.round_to=8"])
    res = pruned_vs_uniform(r, dev, None, _fast_settings(dev), warmup, iters)
    return {"recipe": recipe, "round_to": 8, **res}


def _w_parity(device: str, recipe: str, mode: str, batch: int) -> dict:
    from ...families import get_family
    from ...families.recipe import load_recipe
    from ...system.fast_infer import FastGenerator

    dev = _device(device)
    r = load_recipe(recipe)
    family = get_family(r.family)(r)
    name = family.generator_names[0]
    torch.manual_seed(0)
    g = family.for_export(family.build_generator(name, r.model.ngf_student)).to(dev).eval()
    example = family.example_input(name, batch, dev)
    # The graph is captured on ``example``; parity is measured on another input, so a replay that
    # ignored its new input would show.
    x = torch.rand(example.shape, generator=torch.Generator().manual_seed(1)).to(dev) * 2 - 1
    out = {"recipe": recipe, "mode": mode, "batch": batch, "shape": list(example.shape), "precisions": {}}
    if mode == "cpu_fallback":
        fast = FastGenerator(copy.deepcopy(g), example, mode="cuda_graph", bf16=True, channels_last=True)
        with torch.no_grad():
            same = torch.equal(fast(x), g(x))
        out["mode_run"] = fast.mode
        out["precisions"]["fp32"] = {"max_abs_diff": 0.0 if same else float("inf"), "tolerance": 0.0,
                                     "ok": same and fast.mode == "eager" and not fast.bf16}
        return out
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"
        eager = FastGenerator(copy.deepcopy(g), example, mode="eager", bf16=bf16, channels_last=True)
        fast = FastGenerator(copy.deepcopy(g), example, mode=mode, bf16=bf16, channels_last=True)
        ref = eager(x).float().clone()
        got = fast(x).float().clone()  # a static buffer in cuda_graph mode: copied before the next call
        again = fast(-x).float().clone()
        diff = (ref - got).abs().max().item()
        tol = PARITY_TOLERANCE[(mode, precision)]
        moved = (again - got).abs().max().item()
        out["mode_run"] = fast.mode
        out["precisions"][precision] = {"max_abs_diff": diff, "tolerance": tol, "output_changes_with_input": moved,
                                        "finite": bool(torch.isfinite(got).all()),
                                        "ok": bool(torch.isfinite(got).all()) and diff <= tol and moved > 0}
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        low = g(x).float()
    with torch.no_grad():
        out["bf16_vs_fp32_eager_max_abs_diff"] = (low - g(x).float()).abs().max().item()
    return out


def _w_compile_stage3(device: str, recipe: str, batch: int, iters: int, warmup: int) -> dict:
    from ...families import get_family
    from ...families.recipe import load_recipe
    from ...run.stage_runs import make_distill_stage

    dev = _device(device)
    r = load_recipe(recipe, [f"data.batch_size={batch}", "train.compile=true", "train.amp=\"auto\"",
                             f"train.channels_last={'true' if dev.type == 'cuda' else 'false'}"])
    family = get_family(r.family)(r)
    torch.manual_seed(0)
    student = {n: family.build_generator(n, r.model.ngf_student) for n in family.generator_names}
    stage = make_distill_stage(family, r, dev, student)
    batches = (family.synthetic_batch(batch, dev), family.synthetic_batch(batch, dev))
    stage.set_epoch(0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    watch = _RecompileWatch()
    logging.getLogger("torch._dynamo").addHandler(watch)
    t0 = time.perf_counter()
    for _ in range(warmup):
        logs = stage.step(*batches)
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iters):
        logs = stage.step(*batches)
    sync()
    rate = iters / (time.perf_counter() - t0)
    losses = {k: float(v.float().mean()) for k, v in logs.items()}
    counters = _dynamo_counters()
    return {"recipe": recipe, "batch": batch, "warmup": warmup, "warmup_s": warm, "iters": iters,
            "iters_per_s": rate, "losses": losses, "finite": all(math.isfinite(v) for v in losses.values()),
            "recompile_limit_hits": watch.messages, **counters}


def _dynamo_counters() -> dict:
    """Graphs compiled and graph breaks (with their most frequent reasons) so far in this process,
    from torch._dynamo's counters (zeros where a torch version keeps them elsewhere)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {"unique_graphs": 0, "graph_breaks": 0, "break_reasons": []}
    breaks = counters.get("graph_break", {})
    return {"unique_graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "graph_breaks": int(sum(breaks.values())),
            "break_reasons": [str(k)[:200] for k in sorted(breaks, key=lambda k: -breaks[k])[:5]]}


class _RecompileWatch(logging.Handler):
    """Counts torch._dynamo's warnings that a function hit its recompile limit (it then runs
    eager: compile silently stops helping)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "recompile_limit" in text or "cache_size_limit" in text:
            self.messages.append(" ".join(text.split())[:300])


def _w_nccl_probe(device: str) -> dict:
    """Under torchrun with one process: the NCCL collectives gancompress uses, and SyncBatchNorm's
    autograd function against BatchNorm (the module falls back to BatchNorm with one process, so
    its kernels are called directly here)."""
    import torch.distributed as dist
    from torch import nn

    from ...system import distributed

    launch = distributed.launch_env()
    if launch is None:
        raise GanCompressError("the NCCL probe runs under torchrun (WORLD_SIZE is not set)")
    dev = torch.device("cuda", launch.local_rank)
    torch.cuda.set_device(dev)
    # The same call as distributed.process_group, which skips a group of one process.
    dist.init_process_group("nccl", timeout=distributed.TIMEOUT, device_id=dev)
    problems = []
    out = {"backend": dist.get_backend(), "world": dist.get_world_size(), "nccl_version": nccl_version()}
    try:
        t = torch.arange(4.0, device=dev)
        dist.all_reduce(t)
        low = torch.tensor([3.0, -1.0], device=dev)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        flags = torch.tensor([1, 0, 1], dtype=torch.uint8, device=dev)  # bool state travels as uint8
        dist.broadcast(flags, src=0)
        box = [{"stage": "distill", "step": 7}]
        dist.broadcast_object_list(box, src=0)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, "digest")
        dist.barrier()
        ok = (t.tolist() == [0.0, 1.0, 2.0, 3.0] and low.tolist() == [3.0, -1.0] and flags.tolist() == [1, 0, 1]
              and box[0]["step"] == 7 and gathered == ["digest"])
        if not ok:
            problems.append("an NCCL collective returned wrong values")
        out["collectives_ok"] = ok
        out["syncbn"] = _syncbn_vs_batchnorm(dev, dist.group.WORLD, dist.get_world_size())
        if out["syncbn"]["out_diff"] > 1e-4 or out["syncbn"]["grad_diff"] > 1e-3:
            problems.append(f"SyncBatchNorm differs from BatchNorm: {out['syncbn']}")
        sbn = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)))
        out["convert_sync_batchnorm"] = type(sbn[0]).__name__
    finally:
        dist.destroy_process_group()
    out.update(ok=not problems, problems=problems)
    return out


def _syncbn_vs_batchnorm(dev, group, world: int) -> dict:
    import torch.nn.functional as F
    from torch.nn.modules._functions import SyncBatchNorm as SyncBatchNormFunction

    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(4, 8, 16, 16, device=dev, generator=gen)
    weight, bias = torch.rand(8, device=dev, generator=gen) + 0.5, torch.randn(8, device=dev, generator=gen)
    results = []
    for fn in ("sync", "plain"):
        xi = x.clone().requires_grad_(True)
        mean, var = torch.zeros(8, device=dev), torch.ones(8, device=dev)
        if fn == "sync":
            y = SyncBatchNormFunction.apply(xi, weight, bias, mean, var, 1e-5, 0.1, group, world)
        else:
            y = F.batch_norm(xi, mean, var, weight, bias, True, 0.1, 1e-5)
        (y * torch.linspace(-1, 1, y.numel(), device=dev).view_as(y)).sum().backward()
        results.append((y.detach(), xi.grad, mean, var))
    (ys, gs, ms, vs), (yp, gp, mp, vp) = results
    return {"out_diff": (ys - yp).abs().max().item(), "grad_diff": (gs - gp).abs().max().item(),
            "running_mean_diff": (ms - mp).abs().max().item(), "running_var_diff": (vs - vp).abs().max().item()}


#: Worker name -> function(device=..., **kwargs) -> JSON-able dict.
WORKERS: dict[str, Callable[..., dict]] = {
    "stage3": _w_stage3,
    "latency": _w_latency,
    "pruned_vs_uniform": _w_pruned_vs_uniform,
    "parity": _w_parity,
    "compile_stage3": _w_compile_stage3,
    "nccl_probe": _w_nccl_probe,
}


def run_worker(name: str, args_json: str, device: str | None, out: Path) -> None:
    """Run worker ``name`` with the JSON keyword arguments ``args_json`` and write its result to ``out``."""
    from ...files.atomic import atomic_write_json

    if name not in WORKERS:
        raise GanCompressError(f"unknown gpu-check worker {name!r} (valid: {', '.join(WORKERS)})")
    kwargs = json.loads(args_json)
    result = WORKERS[name](device=device or "cuda", **kwargs)
    atomic_write_json(out, result)
