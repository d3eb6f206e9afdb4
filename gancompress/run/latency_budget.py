"""Latency budgets in a run: timing stage 2's candidates on the budget's runtime, the record
``pruned/pruned.pt`` and the report keep of it, and the dry run's check that the target is reachable.

A latency budget (``prune.budget: "6ms@onnxruntime:b1"``) is measured on this machine: the ONNX
runtimes on its CPU, eager PyTorch and TorchScript on the run's device, with torch's thread
count, at the recipe's resolution (the family's example input at the budget's batch). Each
candidate is timed with :func:`gancompress.metrics.runtimes.time_runtime`, for at most
``prune.latency_max_time`` seconds; the search itself is :mod:`gancompress.method.latency_budget`.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config.budget import Budget
from ..config.sections import Recipe
from ..errors import GanCompressError
from ..export.int8 import OnnxFiles
from ..export.onnx_file import onnx_available
from ..families.base import Family
from ..method.latency_budget import prune_to_latency
from ..method.pruning import Candidates, PruneResult
from ..metrics.runtimes import get_runtime, time_runtime


def timing_device(budget: Budget, device: torch.device | str = "cpu") -> torch.device:
    """Where a latency budget is measured: the ONNX runtimes on the CPU, the torch ones on ``device``."""
    return torch.device("cpu") if get_runtime(budget.runtime).needs_onnx else torch.device(device)


def check_runtime(budget: Budget) -> None:
    """The budget's runtime is installed (and, for the ONNX runtimes, the exporter): a one-line error otherwise."""
    if get_runtime(budget.runtime).needs_onnx and not onnx_available():
        raise GanCompressError(f"prune.budget: {budget} needs ONNX files, and onnx or onnxruntime is not installed: "
                               "pip install 'gancompress[onnx]'")


def where(budget: Budget, device: torch.device) -> str:
    return f"on {budget.runtime} at batch {budget.batch} ({device}, torch threads {torch.get_num_threads()})"


@contextmanager
def latency_meter(family: Family, recipe: Recipe, name: str, budget: Budget,
                  device: torch.device | str = "cpu") -> Iterator[Callable[[nn.Module], float]]:
    """``model -> median ms`` of generator ``name``'s nets on the budget's runtime and batch.

    The nets are timed in the form pruning works on, which is the form shipped (SAGAN's spectral
    norm is folded before pruning). The ONNX files live in a temporary folder while the meter is open.
    """
    check_runtime(budget)
    runtime, dev = get_runtime(budget.runtime), timing_device(budget, device)
    example = family.example_input(name, budget.batch)
    count = itertools.count()
    with OnnxFiles(family.example_input(name, 1), recipe.export.opset) as onnx_of:
        def measure(model: nn.Module) -> float:
            model = model.eval()
            onnx_file = onnx_of(f"net{next(count)}", model, "fp32") if runtime.needs_onnx else None
            return time_runtime(budget.runtime, model, example, onnx_file=onnx_file, threads=torch.get_num_threads(),
                                max_time=recipe.prune.latency_max_time, device=dev)["median_ms"]
        yield measure


def prune_to_latency_budget(family: Family, recipe: Recipe, name: str, sparse: nn.Module, budget: Budget,
                            device: torch.device | str = "cpu") -> PruneResult:
    """Stage 2 of generator ``name`` to a latency budget (``sparse`` made prunable by the family)."""
    with latency_meter(family, recipe, name, budget, device) as measure:
        return prune_to_latency(sparse, family.example_input(name, 1), method=recipe.sparse.method,
                                target_ms=budget.value, tolerance=recipe.prune.latency_tolerance, measure=measure,
                                round_to=recipe.prune.round_to, custom_pruners=family.custom_pruners(),
                                what=where(budget, timing_device(budget, device)))


def latency_record(budget: Budget, recipe: Recipe, result: PruneResult, device: torch.device | str = "cpu") -> dict:
    """The ``latency`` field of a generator's entry in ``pruned/pruned.pt`` (absent for MACs budgets)."""
    return {"target_ms": budget.value, "runtime": budget.runtime, "batch": budget.batch,
            "measured_ms": result.latency_ms, "macs": result.macs, "tolerance": recipe.prune.latency_tolerance,
            "device": str(timing_device(budget, device)), "threads": torch.get_num_threads(),
            "nets_timed": result.evaluations}


def dry_run_lines(family: Family, recipe: Recipe, name: str, budget: Budget, device: torch.device | str = "cpu"
                  ) -> list[str]:
    """What ``--dry-run`` says of a latency budget: the untrained teacher's latency, the smallest
    prunable net's (pruned from the sparse model's width, ``round_to`` applied) and whether the
    target lies between, one line each."""
    dev = timing_device(budget, device)
    lines = [f"budget {name}: {budget} (latency tolerance {recipe.prune.latency_tolerance:.0%}), timed on {dev} "
             f"with torch threads {torch.get_num_threads()}"]
    torch.manual_seed(recipe.seed)
    teacher = family.build_generator(name, recipe.model.ngf_teacher).eval()
    sparse = family.build_generator(name, recipe.model.ngf_student).eval()
    family.before_pruning(sparse)
    cands = Candidates(sparse, family.example_input(name, 1), method=recipe.sparse.method,
                       round_to=recipe.prune.round_to, custom_pruners=family.custom_pruners())
    smallest = cands.build(cands.total)
    family.before_pruning(teacher)  # the form timed in stage 2 and shipped
    with latency_meter(family, recipe, name, budget, device) as measure:
        teacher_ms, smallest_ms = measure(teacher), measure(smallest)
    hi_ok = budget.value * (1 + recipe.prune.latency_tolerance)
    lines.append(f"  teacher {name} (untrained, ngf {recipe.model.ngf_teacher}): {teacher_ms:.3g} ms")
    lines.append(f"  smallest prunable {name} (ngf {recipe.model.ngf_student}, {cands.removed(cands.total)} of {cands.total} channels removed, "
                 f"round_to {recipe.prune.round_to}): {smallest_ms:.3g} ms")
    if teacher_ms <= hi_ok:
        verdict = "not reachable: the teacher already meets the target, so there is nothing to prune"
    elif smallest_ms > hi_ok:
        verdict = "not reachable: the target is faster than the smallest prunable net; raise it"
    else:
        verdict = "reachable: the target lies between the smallest prunable net and the teacher"
    lines.append(f"  {budget.value:g} ms: {verdict}")
    return lines
