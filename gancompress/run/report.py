"""The run's report: report.json's MACs, widths and route (:func:`build_report`, written after
export), the training record, and report.md with its table, sample grid and plots
(:func:`write_markdown`; plots need matplotlib: ``gancompress[plots]``). The task metric and
latency are filled in by :func:`gancompress.run.evaluate.evaluate_run`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..config import Recipe
from ..errors import GanCompressError
from ..export.generator import load_generator
from ..families.base import Family
from ..files.atomic import atomic_write, atomic_write_text
from ..files.rundir import RunDir
from ..method import coordination
from ..method.pruning import layer_widths
from ..metrics.macs import count_macs
from ..metrics.registry import protocol_markdown
from ..metrics.runtimes import format_rows
from ..system.optim import resolve_amp
from .routes import ROUTES

log = logging.getLogger(__name__)


def _stage_rows(run: RunDir, stage: str) -> list[dict]:
    if not run.metrics.is_file():
        return []
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("stage") == stage]


def stage_diagnostics(run: RunDir, stage: str = "distill") -> dict:
    """What stage 3's log says about the method: iterations, the active fraction of the selective
    D's channels per mask point (first, lowest, last) and when a channel was first off, and each
    term's gradient norm on the student at the start and at the end."""
    rows = _stage_rows(run, stage)
    out: dict = {"iterations": max((r["step"] for r in rows), default=None)}
    if not rows:
        return out
    active = {k: [r[k] for r in rows if k in r] for k in rows[-1] if k.startswith("active_")}
    for key, series in active.items():
        off = [r["step"] for r in rows if key in r and min(r[key]) < 1.0]
        out[key] = {"first": series[0], "lowest": [min(s[i] for s in series) for i in range(len(series[0]))],
                    "last": series[-1], "first_step_with_a_channel_off": off[0] if off else None,
                    "log_points_with_a_channel_off": len(off), "log_points": len(series)}
    grads = [k for k in rows[0] if k.startswith("grad_")]
    if grads:
        out["grad_norms_start"] = {k: rows[0][k] for k in grads}
        out["grad_norms_end"] = {k: rows[-1][k] for k in grads if k in rows[-1]}
    if "w_content" in rows[0]:  # distill.balance: task chose the weights at the first iteration
        out["balanced_weights"] = {"content": rows[0]["w_content"], "texture": rows[0]["w_texture"]}
    return out


def alpha_summary(recipe: Recipe, diagnostics: dict) -> dict | None:
    """What the selective discriminator did in stage 3: its factors' learning rate, how many
    iterations a factor needed to reach tau at it, and whether the run was long enough."""
    c = recipe.discriminator
    total = diagnostics.get("iterations")
    if "selective" not in c.mode or not total:
        return None
    lr = coordination.alpha_learning_rate(c.alpha_lr, alpha_init=c.alpha_init, tau=c.tau, reach=c.alpha_reach,
                                          iterations=total)
    epochs = recipe.distill_epochs
    reach = coordination.iterations_to_reach(lr, c.alpha_init - c.tau, max(1, total // epochs), epochs,
                                             c.alpha_decay_epochs, c.alpha_decay)
    return {"alpha_lr": lr, "iterations": total, "iterations_to_reach_tau": reach, "too_short": reach is None}


def build_report(family: Family, recipe: Recipe, run: RunDir, pruned: dict, exports: dict) -> dict:
    """report.json: teacher vs student MACs (thop and complete), params, budget and widths.

    The task metric and latency are added by ``run.evaluate.evaluate_run``.
    """
    pre = recipe.pretrained
    route = {"name": recipe.route, "description": ROUTES[recipe.route], "teacher": recipe.distill.teacher}
    if pre.generators:
        from ..pretrained.discriminator_files import inspect_discriminator_file
        from ..pretrained.generator_files import inspect_generator_file
        route["pretrained"] = (
            [{"role": "generator", "name": n, "file": str(f), "sha256": inspect_generator_file(f).sha256}
             for n, f in pre.generators.items()]
            + [{"role": "discriminator", "name": n, "file": str(f), "sha256": inspect_discriminator_file(f).sha256}
               for n, f in (pre.discriminators or {}).items()])
        route["teacher_weights"] = ("the pretrained generators as given" if recipe.distill.teacher == "frozen"
                                    else "the pretrained generators, trained on in stage 3")
    report = {"family": recipe.family, "recipe": recipe.name, "route": route, "generators": {}}
    stage3 = stage_diagnostics(run)
    alpha = alpha_summary(recipe, stage3)
    report["stage3"] = {**stage3, **({"selective": alpha} if alpha else {})}
    for n in family.generator_names:
        teacher = load_generator(run.generator("teacher", n))[0]
        student = load_generator(run.generator("student", n))[0]
        example = family.example_input(n, 1)
        t, s = count_macs(teacher, example), count_macs(student, example)
        budget, latency = pruned[n]["budget"], pruned[n].get("latency")
        within = (abs(latency["measured_ms"] - latency["target_ms"]) <= latency["tolerance"] * latency["target_ms"]
                  if latency else abs(s.complete - budget) <= recipe.prune.tolerance * budget)
        entry = {"teacher": t.as_dict(), "student": s.as_dict(), "budget": budget / 1e9,
                 "budget_tolerance": recipe.prune.tolerance, "student_within_budget": within,
                 **({"latency_budget": {**latency, "macs": latency["macs"] / 1e9}} if latency else {}),
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


def training_record(recipe, device: torch.device) -> dict:
    """How the run's weights were trained, for the report: a figure trained in bf16 or fp16 is not
    an fp32 figure, and the reader of a table should know which it is."""
    try:
        precision = resolve_amp(recipe.train.amp, device)
    except GanCompressError:
        precision = recipe.train.amp
    return {"precision": {"off": "fp32"}.get(precision, precision), "amp_setting": recipe.train.amp,
            "device": str(device.type), "seed": recipe.seed, "sparse_epochs": recipe.sparse_epochs,
            "distill_epochs": recipe.distill_epochs, "batch_size": recipe.data.batch_size}


def read_report(run: RunDir) -> dict:
    try:
        report = json.loads(run.report_json.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GanCompressError(f"{run.report_json}: not a readable report ({exc}); delete it and run "
                               f"gancompress compress RECIPE --run-dir {run} --resume to write it again") from None
    if not isinstance(report, dict) or not isinstance(report.get("generators"), dict):
        raise GanCompressError(f"{run.report_json}: not a gancompress report (no 'generators'); delete it and run "
                               f"gancompress compress RECIPE --run-dir {run} --resume to write it again")
    return report


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _int8_lines(entry: dict) -> list[str]:
    """report.md's account of ``gancompress export RUN_DIR --int8`` for one generator."""
    v = entry["verdict"]
    if v["key"] is None:
        verdict = "not written: no task metric was measured to check it against"
    else:
        verdict = (f"{v['key']} {_fmt(v['int8'])} against fp32 ONNX {_fmt(v['fp32'])} ({v['worse_by']:+.1%} worse; "
                   f"tolerance {v['tolerance']:.1%}): " + (f"written to {entry['file']}" if v["accepted"] else
                                                           "refused, not written"))
    return ["", f"int8 student (ONNX Runtime, static, per-channel): {verdict}.", "",
            format_rows(entry["latency"]), ""]


def write_markdown(run: RunDir, report: dict) -> Path:
    """report.md: teacher vs student table per generator, sample grid and training plots."""
    lines = [f"# {report['recipe']} ({report['family']})", ""]
    for n, g in report["generators"].items():
        lines += [f"## Generator {n}", "", "| | teacher | student |", "|---|---|---|"]
        lines.append(f"| MACs (thop, G) | {_fmt(g['teacher']['macs'])} | {_fmt(g['student']['macs'])} |")
        lines.append(f"| MACs (complete, G) | {_fmt(g['teacher']['macs_complete'])} | "
                     f"{_fmt(g['student']['macs_complete'])} |")
        lines.append(f"| params (M) | {_fmt(g['teacher']['params'])} | {_fmt(g['student']['params'])} |")
        for setting, row in g.get("latency", {}).get("models", {}).get("teacher", {}).items():
            s_row = g["latency"]["models"]["student"].get(setting, {})
            if "median_ms" in row and "median_ms" in s_row:
                lines.append(f"| latency {setting} (ms, {g['latency']['device']}) | {_fmt(row['median_ms'])} | "
                             f"{_fmt(s_row['median_ms'])} |")
        for role_metrics in [g.get("metrics", {})]:
            keys = sorted({k for r in role_metrics.values() for k in r if isinstance(r, dict)})
            for k in keys:
                t, s = role_metrics.get("teacher", {}).get(k), role_metrics.get("student", {}).get(k)
                if isinstance(t, (int, float)) or isinstance(s, (int, float)):
                    lines.append(f"| {k} | {_fmt(t)} | {_fmt(s)} |")
        lines += ["", budget_line(g) + f"; MACs ratio {_fmt(g['macs_ratio'])}."]
        others = {r: v for r, v in g.get("metrics", {}).items() if r not in ("teacher", "student")}
        for role, vals in others.items():
            lines.append(f"{role}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in vals.items()
                                                 if isinstance(v, (int, float))))
        for setting, speed in g.get("speedup_vs_macs", {}).items():
            lines.append(f"Speed-up {setting}: measured {_fmt(speed['measured'])}x vs MACs ratio "
                         f"{_fmt(speed['macs_ratio'])}x.")
        if g.get("latency", {}).get("runtimes"):
            lines += ["", f"Latency on the deployment runtimes (eval.runtimes, {g['latency']['device']}):", "",
                      format_rows(g["latency"]["runtimes"]), ""]
        if "int8" in g:
            lines += _int8_lines(g["int8"])
        if "onnx" in g:
            lines.append(f"ONNX (opset {g['onnx']['opset']}): max |onnxruntime - eager| = "
                         f"{g['onnx']['max_abs_diff']:.3g}.")
        if g.get("protocol"):
            lines += ["", "How each figure was measured:", ""] + protocol_markdown({n: g["protocol"]})
        lines.append("")
    if "training" in report:
        t = report["training"]
        lines += [f"Trained in {t['precision']} (train.amp: {t['amp_setting']}) on {t['device']}, seed {t['seed']}, "
                  f"{t['sparse_epochs']} sparse + {t['distill_epochs']} distillation epochs at batch "
                  f"{t['batch_size']}.", ""]
    lines += stage3_lines(report.get("stage3", {}))
    grids = run.sample_grids("distill")
    if grids:
        lines += ["## Samples (input | teacher | student | target)", "",
                  f"![samples]({grids[-1].relative_to(run.root)})", ""]
    for plot in _plots(run):
        lines += [f"![{plot.stem}]({plot.relative_to(run.root)})", ""]
    return atomic_write_text(run.report_md, "\n".join(lines))


def budget_line(g: dict) -> str:
    """report.md's budget of one generator: GMACs, or the latency target with what stage 2 measured."""
    lat = g.get("latency_budget")
    if not lat:
        return f"Budget {_fmt(g['budget'])} GMACs (tolerance {g['budget_tolerance']:.0%})"
    return (f"Latency budget {lat['target_ms']:g} ms on {lat['runtime']} at batch {lat['batch']} (tolerance "
            f"{lat['tolerance']:.0%}, {lat['device']}, torch threads {lat['threads']}): the pruned net measured "
            f"{lat['measured_ms']:.3g} ms at {_fmt(lat['macs'])} GMACs in stage 2")


def stage3_lines(stage3: dict) -> list[str]:
    """report.md's account of stage 3: the selective discriminator's factors and each term's
    gradient norm on the student at the start."""
    lines = []
    alpha = stage3.get("selective")
    if alpha:
        if alpha["too_short"]:
            lines.append(f"Selective discriminator: at alpha_lr {alpha['alpha_lr']:.3g} no retention factor could reach "
                         f"tau within stage 3's {alpha['iterations']} iterations: it acted as a plain discriminator "
                         "(set discriminator.alpha_lr: auto).")
        else:
            lines.append(f"Selective discriminator: alpha_lr {alpha['alpha_lr']:.3g}; a factor could reach tau after "
                         f"{alpha['iterations_to_reach_tau']} of {alpha['iterations']} iterations.")
        for key, v in stage3.items():
            if key.startswith("active_"):
                first = v["first_step_with_a_channel_off"]
                lines.append(f"{key[7:]}: lowest active fraction per mask point "
                             f"{', '.join(f'{x:.2f}' for x in v['lowest'])}, last {', '.join(f'{x:.2f}' for x in v['last'])}; "
                             + (f"first channel off at iteration {first}." if first is not None
                                else "no channel was ever off."))
    grads = stage3.get("grad_norms_start")
    if grads:
        lines.append("Gradient norm of each term of the student's loss at the start of stage 3: "
                     + ", ".join(f"{k[5:]} {v:.3g}" for k, v in grads.items()) + ".")
    weights = stage3.get("balanced_weights")
    if weights:
        lines.append(f"distill.balance: task set the content weight to {weights['content']:.3g} and the texture "
                     f"weight to {weights['texture']:.3g}.")
    return lines + ([""] if lines else [])


def _plots(run: RunDir) -> list[Path]:
    """Loss curves and active-channel fractions of stage 3, if matplotlib is installed."""
    metrics = run.metrics
    if not metrics.is_file():
        return []
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed (pip install 'gancompress[plots]'): no plots in report.md")
        return []
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("stage") == "distill"]
    if not rows:
        return []
    out = []
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in [k for k in rows[-1] if k.startswith(("S_", "T_", "alpha", "L_target", "gap"))]:
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], label=key)
    ax.set_yscale("symlog")
    ax.set_xlabel("iteration")
    ax.legend(fontsize=7, ncol=2)
    out.append(_save_figure(fig, run.plot("losses")))
    plt.close(fig)
    active = [k for k in rows[-1] if k.startswith("active_")]
    if active:
        fig, ax = plt.subplots(figsize=(7, 4))
        for key in active:
            series = [r[key] for r in rows if key in r]
            for layer in range(len(series[0])):
                ax.plot(steps[-len(series):], [s[layer] for s in series], label=f"{key} layer {layer + 1}")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("iteration")
        ax.set_ylabel("active channels")
        ax.legend(fontsize=7)
        out.append(_save_figure(fig, run.plot("active_channels")))
        plt.close(fig)
    return out


def _save_figure(fig, path: Path) -> Path:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
