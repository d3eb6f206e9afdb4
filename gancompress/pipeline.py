"""The four stages, each resumable: sparse teacher -> prune -> distill -> export and report.

A stage is done when its output file exists in the run folder; ``--resume`` skips finished
stages and continues the unfinished one from its latest checkpoint.

Run folder::

    recipe.yaml            the resolved recipe
    pretrain/              optional generator-only pre-training (train.pretrain_epochs > 0)
    sparse/model.pt        stage 1: the sparse generators and discriminators
    pruned/pruned.pt       stage 2: pruned architectures (see prune.architecture_record) + weights
    student/, teacher/     stage 3: rebuildable generators (export.load_generator)
    checkpoints/           <stage>-<step>.pt, the latest train.keep_checkpoints of each stage
    samples/               PNG grids per epoch: input | teacher | student | target
    metrics.jsonl          losses and active-channel fractions every train.log_every iterations
    export/                TorchScript generators (generator.pt, or generator_<name>.pt)
    report.json            teacher vs student MACs, params, budget (and metrics once evaluated)

Under ``torchrun`` (``distributed``) every rank trains; rank 0 alone writes the run folder, prunes
and reports, while the others wait for it and then read what it wrote (the folder must be on a
filesystem every rank sees). Whether a stage is done is decided on rank 0's view of the folder,
so every rank takes the same path. The other ranks stop after stage 3.
"""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
from torch import nn

from . import distributed
from .checkpoint import atomic_save, safe_load
from .config import Recipe, dump_recipe, parse_budget
from .errors import GanCompressError, RecipeError
from .export import export_torchscript, load_generator, save_generator
from .families import get_family
from .families.base import Family
from .metrics.macs import count_macs
from .prune import layer_widths, prune_to_budget, rebuild
from .stages import DistillStage, PretrainStage, SparseStage, check_stage3_settings
from .train import train_stage

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str | None) -> torch.device:
    """The device ``name`` ('cpu', 'cuda', or None/'auto' for CUDA when present); under a
    process group, CUDA means this rank's own GPU, ``cuda:LOCAL_RANK``."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise GanCompressError("--device cuda: no CUDA device is available here; use --device cpu")
    if name == "cuda" and distributed.is_active():
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def stage_done(path: Path) -> bool:
    """Whether ``path`` (a stage's output) exists, as rank 0 sees it: every rank decides alike."""
    return distributed.broadcast_object(path.exists())


def resolve_budget(recipe: Recipe, name: str, teacher_macs: int) -> int:
    """The MACs budget of generator ``name`` (a ratio budget is taken of the teacher's MACs)."""
    budget = recipe.prune.budget
    if isinstance(budget, dict):
        budget = budget[name]
    kind, value = parse_budget(budget)
    return int(round(value * 1e9)) if kind == "gmacs" else int(round(value * teacher_macs))


def teacher_macs(family: Family, name: str):
    """MACs of the distillation teacher (width ``ngf_teacher``) at the recipe's input shape."""
    g = family.build_generator(name, family.cfg.ngf_teacher)
    return count_macs(g, family.example_input(name, 1))


def describe(recipe: Recipe) -> str:
    """The dry-run text: resolved recipe, teacher MACs and params, and the budget of each generator."""
    family = get_family(recipe.family)(recipe)
    lines = ["# resolved recipe", dump_recipe(recipe).rstrip(), ""]
    for name in family.generator_names:
        m = teacher_macs(family, name)
        budget = resolve_budget(recipe, name, m.complete)
        shape = tuple(family.example_input(name, 1).shape)
        lines.append(f"teacher {name} (ngf {recipe.model.ngf_teacher}) at input {shape}: "
                     f"{m.thop / 1e9:.4g} GMACs (thop), {m.complete / 1e9:.4g} GMACs complete, "
                     f"{m.params / 1e6:.4g} M params")
        if m.missed:
            lines.append("  missed by thop: " + ", ".join(f"{k} {v / 1e9:.4g} G" for k, v in m.missed.items()))
        lines.append(f"budget {name}: {budget / 1e9:.4g} GMACs ({budget / m.complete:.1%} of the teacher, "
                     f"tolerance {recipe.prune.tolerance:.0%})")
    return "\n".join(lines)


def prepare_run_dir(recipe: Recipe, run_dir: Path, resume: bool) -> None:
    """Create the run folder and write the resolved recipe; refuse to overwrite a run.

    Under a process group rank 0 writes; every rank raises the same errors.
    """
    if stage_done(run_dir / "recipe.yaml") and not resume:
        raise GanCompressError(f"{run_dir}: already holds a run; pass --resume to continue it, or --run-dir "
                               "to start a new one elsewhere")
    distributed.on_main(_write_run_dir, recipe, run_dir)


def _write_run_dir(recipe: Recipe, run_dir: Path) -> None:
    saved = run_dir / "recipe.yaml"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise GanCompressError(f"{run_dir}: cannot write the run folder ({exc.strerror}); choose a writable "
                               "--run-dir") from None
    text = dump_recipe(recipe)
    if saved.exists() and saved.read_text() != text:
        log.warning("the recipe differs from the one %s was started with; continuing with the new one", run_dir)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(saved)


# ----------------------------------------------------------------------------------------------
# Stages.

def run_pretrain(family: Family, recipe: Recipe, run_dir: Path, device: torch.device, resume: bool,
                 ngf: int, name: str) -> dict | None:
    """Optional generator-only pre-training at width ``ngf``; returns the generators' state."""
    if recipe.train.pretrain_epochs == 0:
        return None
    out = run_dir / "pretrain" / f"{name}.pt"
    if stage_done(out):
        log.info("stage '%s' already done (%s)", name, out)
        return safe_load(out)
    seed_everything(recipe.seed + 2)
    stage = PretrainStage(family, recipe, device, ngf, name)
    train_stage(stage, family, recipe, run_dir, device, resume=resume)
    state = stage.gens.state_dict()
    distributed.on_main(atomic_save, state, out)
    return state


def run_sparse(family: Family, recipe: Recipe, run_dir: Path, device: torch.device, resume: bool) -> dict:
    """Stage 1 (after optional pre-training); returns the saved state {gens, discs}."""
    out = run_dir / "sparse" / "model.pt"
    if stage_done(out):
        log.info("stage 'sparse' already done (%s)", out)
        return safe_load(out)
    init = run_pretrain(family, recipe, run_dir, device, resume, recipe.model.ngf_student, "pretrain_S")
    seed_everything(recipe.seed)
    stage = SparseStage(family, recipe, device, init)
    train_stage(stage, family, recipe, run_dir, device, resume=resume)
    state = {"gens": stage.gens.state_dict(), "discs": stage.discs.state_dict()}
    distributed.on_main(atomic_save, state, out)
    return state


def run_prune(family: Family, recipe: Recipe, run_dir: Path, sparse_state: dict) -> dict[str, dict]:
    """Stage 2; returns {name: {"arch", "state_dict", "macs", "budget", ...}}.

    Pruning runs once, on rank 0; the other ranks read its result from ``pruned/pruned.pt``.
    """
    out = run_dir / "pruned" / "pruned.pt"
    if stage_done(out):
        log.info("stage 'prune' already done (%s)", out)
        return safe_load(out)
    result = distributed.on_main(_prune, family, recipe, sparse_state, out)
    return result if distributed.rank() == 0 else safe_load(out)


def _prune(family: Family, recipe: Recipe, sparse_state: dict, out: Path) -> dict[str, dict]:
    ngf = recipe.model.ngf_student
    sparse = nn.ModuleDict({n: family.build_generator(n, ngf) for n in family.generator_names})
    sparse.load_state_dict(sparse_state["gens"])
    result = {name: prune_generator(family, recipe, name, sparse[name]) for name in family.generator_names}
    atomic_save(result, out)
    return result


def prune_generator(family: Family, recipe: Recipe, name: str, sparse: nn.Module) -> dict:
    """Prune the sparse generator ``name`` (width ``ngf_student``) to its budget.

    Returns its entry of ``pruned/pruned.pt``: {"arch", "state_dict", "macs", "budget", "removed",
    "channels", "widths"}; :func:`pruned_generator` rebuilds the module from it.
    """
    from .prune import architecture_record

    g = sparse.eval()
    example = family.example_input(name, 1)
    full = teacher_macs(family, name)
    budget = resolve_budget(recipe, name, full.complete)
    token = family.before_pruning(g)
    pruned = prune_to_budget(g, example, method=recipe.sparse.method, budget_macs=budget,
                             tolerance=recipe.prune.tolerance, round_to=recipe.prune.round_to,
                             custom_pruners=family.custom_pruners())
    family.after_pruning(pruned.model, token)
    return {"arch": architecture_record(pruned.model), "state_dict": pruned.model.state_dict(),
            "macs": pruned.macs, "budget": budget, "removed": pruned.removed,
            "channels": pruned.total, "widths": layer_widths(pruned.model)}


def pruned_generator(family: Family, recipe: Recipe, name: str, entry: dict, inherit: bool) -> nn.Module:
    """The pruned architecture of ``name``, with the pruned weights or re-initialised (GCC)."""
    g = family.build_generator(name, recipe.model.ngf_student)
    rebuild(g, entry["arch"])
    g.load_state_dict(entry["state_dict"])
    if not inherit:
        family.reinit_generator(g)
    return g


def run_distill(family: Family, recipe: Recipe, run_dir: Path, device: torch.device, resume: bool,
                sparse_state: dict, pruned: dict) -> None:
    """Stage 3; writes student/ and teacher/ generator files."""
    names = family.generator_names
    done = [run_dir / "student" / f"generator_{n}.pt" for n in names]
    if distributed.broadcast_object(all(p.exists() for p in done)):
        log.info("stage 'distill' already done (%s)", done[0].parent)
        return
    teacher_init = None
    if recipe.distill.teacher == "scratch":
        teacher_init = run_pretrain(family, recipe, run_dir, device, resume, recipe.model.ngf_teacher, "pretrain_T")
    seed_everything(recipe.seed + 1)
    student = {n: pruned_generator(family, recipe, n, pruned[n], recipe.prune.inherit_weights) for n in names}
    teacher = None
    if recipe.distill.teacher != "scratch":
        from .stages import _build_pair
        gens, discs = _build_pair(family, recipe.model.ngf_student, recipe, device)
        gens.load_state_dict(sparse_state["gens"])
        discs.load_state_dict(sparse_state["discs"])
        teacher = (gens, discs)
    stage = DistillStage(family, recipe, device, student, teacher, teacher_init)
    train_stage(stage, family, recipe, run_dir, device, resume=resume, needs_second_batch=True)
    t_ngf = recipe.model.ngf_student if teacher is not None else recipe.model.ngf_teacher

    def save() -> None:
        for n in names:
            save_generator(run_dir / "teacher" / f"generator_{n}.pt", stage.t_gens[n], recipe, n, t_ngf)
            save_generator(run_dir / "student" / f"generator_{n}.pt", stage.s_gens[n], recipe, n,
                           recipe.model.ngf_student)
    distributed.on_main(save)


def export_name(family: Family, name: str) -> str:
    return "generator.pt" if len(family.generator_names) == 1 else f"generator_{name}.pt"


def run_export(family: Family, recipe: Recipe, run_dir: Path) -> dict:
    """Stage 4a: TorchScript (and ONNX if asked) of each student; returns parity figures."""
    out = {}
    for n in family.generator_names:
        g, meta = load_generator(run_dir / "student" / f"generator_{n}.pt")
        shipped = family.for_export(g)
        example = family.example_input(n, 1)
        entry = {}
        if recipe.export.torchscript:
            entry["torchscript"] = export_torchscript(shipped, example, run_dir / "export" / export_name(family, n))
        if recipe.export.onnx:
            from .onnx_export import export_onnx, onnx_parity
            path = run_dir / "export" / export_name(family, n).replace(".pt", ".onnx")
            export_onnx(shipped, example, path, opset=recipe.export.opset)
            entry["onnx"] = {"path": str(path), "max_abs_diff": onnx_parity(path, shipped, example)}
        out[n] = entry
    return out


def build_report(family: Family, recipe: Recipe, run_dir: Path, pruned: dict, exports: dict) -> dict:
    """report.json: teacher vs student MACs (thop and complete), params, budget and widths.

    The task metric, latency and ONNX parity are added by ``evaluate.evaluate_run``.
    """
    report = {"family": recipe.family, "recipe": recipe.name, "generators": {}}
    loaded = {role: {n: load_generator(run_dir / role / f"generator_{n}.pt")[0] for n in family.generator_names}
              for role in ("teacher", "student")}
    for n in family.generator_names:
        teacher, student = loaded["teacher"][n].cpu(), loaded["student"][n].cpu()
        example = family.example_input(n, 1)
        t, s = count_macs(teacher, example), count_macs(student, example)
        budget = pruned[n]["budget"]
        entry = {"teacher": t.as_dict(), "student": s.as_dict(), "budget": budget / 1e9,
                 "budget_tolerance": recipe.prune.tolerance,
                 "student_within_budget": abs(s.complete - budget) <= recipe.prune.tolerance * budget,
                 "macs_ratio": t.complete / s.complete, "channels_removed": pruned[n]["removed"],
                 "channels_prunable": pruned[n]["channels"], "export": exports.get(n, {}),
                 "input_shape": list(example.shape),
                 "widths": {layer: [w, s_w] for (layer, w), s_w in
                            zip(layer_widths(teacher).items(), layer_widths(student).values())}}
        report["generators"][n] = entry
    if len(family.generator_names) == 1:
        only = report["generators"][family.generator_names[0]]
        report.update({"teacher": only["teacher"], "student": only["student"], "budget": only["budget"]})
    return report


def write_report(run_dir: Path, report: dict) -> Path:
    path = run_dir / "report.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    return path


def compress(recipe: Recipe, run_dir: Path, *, resume: bool = False, device: str | None = None,
             until: str = "report") -> dict:
    """Run the pipeline on ``recipe`` into ``run_dir``; returns the report (or a stage summary).

    Args:
        recipe: the resolved recipe.
        run_dir: the run folder.
        resume: continue a run found in ``run_dir``.
        device: 'cpu', 'cuda' or None (CUDA when present).
        until: stop after 'sparse', 'prune', 'distill' or run everything ('report').

    Under a process group (``distributed.process_group``) every rank calls this alike; ranks
    other than 0 return ``{"stage": "distill", "rank": r}`` after stage 3, while rank 0 exports,
    reports and evaluates.
    """
    stages = ("sparse", "prune", "distill", "report")
    if until not in stages:
        raise RecipeError(f"until: expected one of {', '.join(stages)}, got {until!r}")
    dev = pick_device(device)
    if recipe.train.sync_bn and distributed.world_size() > 1 and dev.type != "cuda":
        raise RecipeError("train.sync_bn: SyncBatchNorm runs on CUDA devices only; set train.sync_bn: false "
                          "for processes on the CPU")
    if dev.type == "cuda" and recipe.train.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    family = get_family(recipe.family)(recipe)
    if recipe.distill.teacher != "scratch" and recipe.model.ngf_teacher != recipe.model.ngf_student:
        raise RecipeError(f"distill.teacher: '{recipe.distill.teacher}' continues the stage-1 model, so "
                          "model.ngf_teacher must equal model.ngf_student; use distill.teacher: scratch")
    family.check_data()
    check_stage3_settings(family, recipe)
    prepare_run_dir(recipe, run_dir, resume)
    sparse_state = run_sparse(family, recipe, run_dir, dev, resume)
    if until == "sparse":
        return {"stage": "sparse", "path": str(run_dir / "sparse" / "model.pt")}
    pruned = run_prune(family, recipe, run_dir, sparse_state)
    if until == "prune":
        return {"stage": "prune", "generators": {n: {"macs": e["macs"] / 1e9, "budget": e["budget"] / 1e9}
                                                 for n, e in pruned.items()}}
    run_distill(family, recipe, run_dir, dev, resume, sparse_state, pruned)
    if until == "distill":
        return {"stage": "distill"}
    if distributed.rank() != 0:
        return {"stage": "distill", "rank": distributed.rank()}
    exports = run_export(family, recipe, run_dir)
    write_report(run_dir, build_report(family, recipe, run_dir, pruned, exports))
    from .evaluate import evaluate_run
    return evaluate_run(run_dir, device)
