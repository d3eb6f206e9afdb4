"""Each stage's run: read its inputs from the run folder, train or prune, write its output.

:mod:`.pipeline` calls them in order; a stage whose output file exists is skipped (``--resume``
continues an unfinished one from its latest checkpoint). Stage 1 is :func:`run_sparse` (after the
optional generator-only pre-training, :func:`run_pretrain`), stage 2 :func:`run_prune` (each
generator by :func:`prune_generator`, rebuilt by :func:`pruned_generator`), stage 3
:func:`run_distill` and stage 4a :func:`run_export`. The ``make_*_stage`` functions build a stage as
a recipe sets it up, for the baselines and ablations that train the same stages on other nets.

Under ``torchrun`` every rank trains; rank 0 alone writes, prunes and exports, and the other ranks
read what it wrote.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..config.sections import Recipe
from ..export.generator import export_torchscript, load_generator, save_generator
from ..export.onnx_file import export_onnx, onnx_available, onnx_parity
from ..families.base import Family
from ..files.checkpoint import atomic_save, safe_load
from ..files.rundir import RunDir
from ..method.classifier import load_classifiers
from ..method.discriminators.modes import make_mode
from ..method.pruning import architecture_record, layer_widths, prune_to_budget, rebuild
from ..metrics.macs import count_macs
from ..system import distributed
from ..system.devices import seed_everything
from ..system.finite import check_finite, reset_running_stats
from . import latency_budget
from .record import stage_done
from .routes import load_pretrained, stage3_teacher
from .stages import (
    DistillStage,
    PretrainStage,
    SparseStage,
    build_generators,
    build_pair,
)
from .train import train_stage

log = logging.getLogger(__name__)


def teacher_macs(family: Family, name: str):
    """MACs of the distillation teacher (width ``ngf_teacher``) at the recipe's input shape."""
    g = family.build_generator(name, family.cfg.ngf_teacher)
    return count_macs(g, family.example_input(name, 1))


def run_pretrain(family: Family, recipe: Recipe, run: RunDir, device: torch.device, resume: bool,
                 ngf: int, name: str) -> dict | None:
    """Optional generator-only pre-training at width ``ngf``; returns the generators' state."""
    if recipe.train.pretrain_epochs == 0:
        return None
    out = run.pretrain(name)
    if stage_done(out):
        log.info("stage '%s' already done (%s)", name, out)
        return safe_load(out)
    seed_everything(recipe.seed + 2)
    gens = build_generators(family, ngf, recipe.train, device)
    stage = PretrainStage(family, recipe.train, device, gens, recipe.train.pretrain_epochs, name)
    train_stage(stage, family, recipe, run, device, resume=resume)
    state = stage.gens.state_dict()
    check_finite(state, f"stage '{name}' output {out}")
    distributed.on_main(atomic_save, state, out)
    return state


def make_sparse_stage(family: Family, recipe: Recipe, device: torch.device, init_gens: dict | None = None,
                      init_discs: dict | None = None) -> SparseStage:
    """Stage 1 as ``recipe`` sets it up."""
    return SparseStage(family, recipe.train, device, ngf=recipe.model.ngf_student, epochs=recipe.sparse_epochs,
                       method=recipe.sparse.method, l1_lambda=recipe.l1_lambda, init_gens=init_gens,
                       init_discs=init_discs)


def run_sparse(family: Family, recipe: Recipe, run: RunDir, device: torch.device, resume: bool) -> dict:
    """Stage 1 (after optional pre-training); returns the saved state {gens, discs}.

    With ``pretrained.generators`` the sparse model starts from the user's weights (route
    'pretrained-finetune'), is those weights unchanged (route 'pretrained-prune': no training), or
    is trained from scratch at ``model.ngf_student`` (route 'pretrained-scratch').
    """
    out = run.sparse
    if stage_done(out):
        log.info("stage 'sparse' already done (%s)", out)
        return safe_load(out)
    pre = load_pretrained(family, recipe)
    if pre is not None and recipe.route == "pretrained-prune":
        seed_everything(recipe.seed)
        gens, discs = build_pair(family, recipe.model.ngf_student, recipe.train, torch.device("cpu"))
        gens.load_state_dict(pre["gens"])
        for n, state in pre["discs"].items():
            discs[n].load_state_dict(state)
        state = {"gens": gens.state_dict(), "discs": discs.state_dict()}
        log.info("stage 'sparse' skipped (route pretrained-prune): the pretrained generators are pruned as they are")
    else:
        if pre is not None and recipe.route == "pretrained-finetune":
            init, init_discs = pre["gens"], pre["discs"]
        else:  # a fresh sparse model (routes scratch and pretrained-scratch)
            init = run_pretrain(family, recipe, run, device, resume, recipe.model.ngf_student, "pretrain_S")
            init_discs = None
        seed_everything(recipe.seed)
        stage = make_sparse_stage(family, recipe, device, init, init_discs)
        train_stage(stage, family, recipe, run, device, resume=resume)
        state = stage.outputs()
    check_finite(state, f"stage 'sparse' output {out}")
    distributed.on_main(atomic_save, state, out)
    return state


def run_prune(family: Family, recipe: Recipe, run: RunDir, sparse_state: dict,
              device: torch.device | str = "cpu") -> dict[str, dict]:
    """Stage 2; returns {name: {"arch", "state_dict", "macs", "budget", ...}}.

    Pruning runs once, on rank 0; the other ranks read its result from ``pruned/pruned.pt``.
    ``device`` is where a latency budget on eager PyTorch or TorchScript is timed.
    """
    out = run.pruned
    if stage_done(out):
        log.info("stage 'prune' already done (%s)", out)
        return safe_load(out)
    result = distributed.on_main(_prune, family, recipe, sparse_state, out, device)
    return result if distributed.rank() == 0 else safe_load(out)


def _prune(family: Family, recipe: Recipe, sparse_state: dict, out: Path, device) -> dict[str, dict]:
    ngf = recipe.model.ngf_student
    sparse = nn.ModuleDict({n: family.build_generator(n, ngf) for n in family.generator_names})
    sparse.load_state_dict(sparse_state["gens"])
    result = {name: prune_generator(family, recipe, name, sparse[name], device) for name in family.generator_names}
    atomic_save(result, out)
    return result


def prune_generator(family: Family, recipe: Recipe, name: str, sparse: nn.Module,
                    device: torch.device | str = "cpu") -> dict:
    """Prune the sparse generator ``name`` (width ``ngf_student``) to its budget.

    Returns its entry of ``pruned/pruned.pt``: {"arch", "state_dict", "macs", "budget", "removed",
    "channels", "widths"}, and for a latency budget "latency" (:func:`latency_budget.latency_record`:
    target and measured ms, runtime, batch, MACs), where "budget" holds the MACs the target came to;
    :func:`pruned_generator` rebuilds the module from it.
    """
    g = sparse.eval()
    budget = recipe.prune.budget_for(name)
    token = family.before_pruning(g)
    if budget.is_latency:
        pruned = latency_budget.prune_to_latency_budget(family, recipe, name, g, budget, device)
    else:
        pruned = prune_to_budget(g, family.example_input(name, 1), method=recipe.sparse.method,
                                 budget_macs=budget.macs(teacher_macs(family, name).complete),
                                 tolerance=recipe.prune.tolerance, round_to=recipe.prune.round_to,
                                 custom_pruners=family.custom_pruners())
    family.after_pruning(pruned.model, token)
    entry = {"arch": architecture_record(pruned.model), "state_dict": pruned.model.state_dict(),
             "macs": pruned.macs, "budget": pruned.budget, "removed": pruned.removed,
             "channels": pruned.total, "widths": layer_widths(pruned.model)}
    if budget.is_latency:
        entry["latency"] = latency_budget.latency_record(budget, recipe, pruned, device)
    return entry


def pruned_generator(family: Family, recipe: Recipe, name: str, entry: dict, inherit: bool) -> nn.Module:
    """The pruned architecture of ``name``, with the pruned weights or re-initialised (GCC)."""
    g = family.build_generator(name, recipe.model.ngf_student)
    rebuild(g, entry["arch"])
    g.load_state_dict(entry["state_dict"])
    if not inherit:
        family.reinit_generator(g)
        reset_running_stats(g)  # a re-initialised net starts with fresh statistics too
    return g


def run_distill(family: Family, recipe: Recipe, run: RunDir, device: torch.device, resume: bool,
                sparse_state: dict, pruned: dict) -> None:
    """Stage 3; writes student/ and teacher/ generator files."""
    names = family.generator_names
    done = [run.generator("student", n) for n in names]
    if distributed.broadcast_object(all(p.exists() for p in done)):
        log.info("stage 'distill' already done (%s)", done[0].parent)
        return
    teacher_init = None
    if recipe.distill.teacher == "scratch":
        gens = run_pretrain(family, recipe, run, device, resume, recipe.model.ngf_teacher, "pretrain_T")
        teacher_init = {"gens": gens} if gens is not None else None
    seed_everything(recipe.seed + 1)
    student = {n: pruned_generator(family, recipe, n, pruned[n], recipe.prune.inherit_weights) for n in names}
    pretrain_student(family, recipe, run, device, resume, student)
    teacher, fresh_d = stage3_teacher(family, recipe, device, sparse_state)
    stage = make_distill_stage(family, recipe, device, student, teacher, teacher_init, train_teacher_d=fresh_d)
    train_stage(stage, family, recipe, run, device, resume=resume)
    t_ngf = recipe.teacher_ngf

    for n in names:
        check_finite(stage.t_gens[n], f"stage 'distill' teacher generator {n}")
        check_finite(stage.s_gens[n], f"stage 'distill' student generator {n}")

    def save() -> None:
        for n in names:
            save_generator(run.generator("teacher", n), stage.t_gens[n], recipe, n, t_ngf)
            save_generator(run.generator("student", n), stage.s_gens[n], recipe, n, recipe.model.ngf_student)
    distributed.on_main(save)


def pretrain_student(family: Family, recipe: Recipe, run: RunDir, device: torch.device, resume: bool,
                     student: dict[str, nn.Module], epochs: int | None = None) -> None:
    """Generator-only pre-training of the pruned students in place (``distill.student_pretrain_epochs``,
    or ``epochs`` when given: the baselines' small nets get what the gcc student got):
    GCC starts SRGAN's student from an MSE-trained model of the pruned architecture, as SRGAN
    practice does. Stage 'pretrain_P'; its output is ``pretrain/pretrain_P.pt``."""
    epochs = recipe.distill.student_pretrain_epochs if epochs is None else epochs
    if not epochs:
        return
    gens = nn.ModuleDict(student)
    out = run.pretrain("pretrain_P")
    if stage_done(out):
        log.info("stage 'pretrain_P' already done (%s)", out)
        gens.load_state_dict(safe_load(out))
        return
    # In a forked random state: stage 3's teacher is drawn next, from the same state whether or not
    # the student was pre-trained (the baselines' small-distill row relies on it).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        seed_everything(recipe.seed + 3)
        stage = PretrainStage(family, recipe.train, device, gens.to(device), epochs, "pretrain_P")
        train_stage(stage, family, recipe, run, device, resume=resume)
    state = stage.gens.state_dict()
    check_finite(state, f"stage 'pretrain_P' output {out}")
    distributed.on_main(atomic_save, state, out)
    gens.cpu()


def make_distill_stage(family: Family, recipe: Recipe, device: torch.device, student: dict[str, nn.Module],
                       teacher: tuple[nn.ModuleDict, nn.ModuleDict] | None = None,
                       teacher_init: dict | None = None, train_teacher_d: bool = False) -> DistillStage:
    """Stage 3 as ``recipe`` sets it up: its discriminator mode, sections and classifiers."""
    mode = make_mode(recipe.discriminator, seed=recipe.seed, vgg19_weights=recipe.eval.vgg19_weights)
    return DistillStage(family, device, train=recipe.train, distill=recipe.distill, mode=mode, student=student,
                        teacher=teacher, teacher_ngf=recipe.model.ngf_teacher, teacher_init=teacher_init,
                        classifiers=load_classifiers(recipe.classifier.paths, family.generator_names, device),
                        classifier=recipe.classifier, train_teacher_d=train_teacher_d)


def run_export(family: Family, recipe: Recipe, run: RunDir) -> dict:
    """Stage 4a: TorchScript and ONNX (as the recipe asks) of each student, with parity figures.

    This is the one place the run's exports are written; ``evaluate`` reads them.
    """
    out = {}
    names = family.generator_names
    for n in names:
        g, _ = load_generator(run.generator("student", n))
        shipped = family.for_export(g)
        example = family.example_input(n, 1)
        entry = {}
        if recipe.export.torchscript:
            entry["torchscript"] = export_torchscript(shipped, example, run.export(n, names, ".pt"))
        if recipe.export.onnx and not onnx_available():
            log.warning("onnx/onnxruntime not installed (pip install 'gancompress[onnx]'): no ONNX export")
            entry["onnx_skipped"] = "onnx or onnxruntime not installed"
        elif recipe.export.onnx:
            path = export_onnx(shipped, example, run.export(n, names, ".onnx"), opset=recipe.export.opset)
            entry["onnx"] = {"path": str(path), "opset": recipe.export.opset,
                             "max_abs_diff": onnx_parity(path, shipped, example)}
        out[n] = entry
    return out
