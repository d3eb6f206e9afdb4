"""Evaluate a finished run: task metric, latency, ONNX parity; report.json and report.md.

``gancompress evaluate RUN_DIR`` (and the last step of ``compress``) loads the teacher and
student generators of the run, asks the family for its task metric, measures latency of both
(median over warmed-up runs) and the ONNX export's parity, and writes ``report.json`` plus a
readable ``report.md`` with the table, the latest sample grid and plots of the losses and of the
active-channel fraction per discriminator layer (plots need matplotlib: ``gancompress[plots]``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .config import load_recipe
from .errors import GanCompressError
from .export import load_generator
from .families import get_family

log = logging.getLogger(__name__)


def _load_role(run_dir: Path, role: str, names) -> dict:
    return {n: load_generator(run_dir / role / f"generator_{n}.pt")[0] for n in names}


def latency(family, teacher, student, recipe, device: torch.device) -> dict:
    """Latency table of teacher vs student per generator (see metrics.latency.latency_table)."""
    from .metrics.latency import latency_table

    out = {}
    iters = recipe.eval.latency_iters
    for n in family.generator_names:
        table = latency_table({"teacher": teacher[n].to(device), "student": student[n].to(device)},
                              lambda b, n=n: family.example_input(n, b, device), device,
                              warmup=max(2, iters // 4), iters=iters)
        out[n] = table
    return out


def onnx_parity(family, student, run_dir: Path, recipe) -> dict:
    """Export each student to ONNX and compare onnxruntime with eager; {} when onnx is missing."""
    try:
        from .onnx_export import export_onnx, onnx_parity as parity
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        log.warning("onnx/onnxruntime not installed (pip install 'gancompress[onnx]'): ONNX parity skipped")
        return {}
    out = {}
    for n in family.generator_names:
        shipped = family.for_export(student[n].cpu())
        example = family.example_input(n, 1)
        name = "generator.onnx" if len(family.generator_names) == 1 else f"generator_{n}.onnx"
        path = export_onnx(shipped, example, run_dir / "export" / name, opset=recipe.export.opset)
        out[n] = {"path": str(path), "opset": recipe.export.opset,
                  "max_abs_diff": parity(path, shipped, example)}
    return out


def evaluate_run(run_dir: str | Path, device: str | None = None) -> dict:
    """Fill the metric, latency and ONNX fields of ``report.json`` and write ``report.md``."""
    from .pipeline import pick_device

    run_dir = Path(run_dir)
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise GanCompressError(f"{run_dir}: no report.json; finish the run first with "
                               f"gancompress compress RECIPE --run-dir {run_dir} --resume")
    recipe = load_recipe(run_dir / "recipe.yaml")
    family = get_family(recipe.family)(recipe)
    dev = pick_device(device)
    report = json.loads(report_path.read_text())
    teacher = _load_role(run_dir, "teacher", family.generator_names)
    student = _load_role(run_dir, "student", family.generator_names)
    with torch.no_grad():
        metrics = family.evaluate({"teacher": {n: g.to(dev) for n, g in teacher.items()},
                                   "student": {n: g.to(dev) for n, g in student.items()}}, dev)
    lat = latency(family, teacher, student, recipe, dev) if recipe.eval.latency else {}
    onnx = onnx_parity(family, student, run_dir, recipe)
    for n, entry in report["generators"].items():
        if n in metrics:
            entry["metrics"] = metrics[n]
        if n in lat:
            entry["latency"] = lat[n]
            speed = lat[n].get("speedup", {})
            entry["speedup_vs_macs"] = {k: {"measured": v, "macs_ratio": entry["macs_ratio"]}
                                        for k, v in speed.items()}
        if n in onnx:
            entry["onnx"] = onnx[n]
    if len(report["generators"]) == 1:
        only = next(iter(report["generators"].values()))
        for key in ("metrics", "latency", "onnx"):
            if key in only:
                report[key] = only[key]
    tmp = report_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(report_path)
    write_markdown(run_dir, report)
    return report


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_markdown(run_dir: Path, report: dict) -> Path:
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
        lines += ["", f"Budget {_fmt(g['budget'])} GMACs (tolerance {g['budget_tolerance']:.0%}); "
                  f"MACs ratio {_fmt(g['macs_ratio'])}."]
        others = {r: v for r, v in g.get("metrics", {}).items() if r not in ("teacher", "student")}
        for role, vals in others.items():
            lines.append(f"{role}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in vals.items()
                                                 if isinstance(v, (int, float))))
        for setting, speed in g.get("speedup_vs_macs", {}).items():
            lines.append(f"Speed-up {setting}: measured {_fmt(speed['measured'])}x vs MACs ratio "
                         f"{_fmt(speed['macs_ratio'])}x.")
        if "onnx" in g:
            lines.append(f"ONNX (opset {g['onnx']['opset']}): max |onnxruntime - eager| = "
                         f"{g['onnx']['max_abs_diff']:.3g}.")
        lines.append("")
    grids = sorted((run_dir / "samples").glob("distill-epoch*.png"))
    if grids:
        lines += ["## Samples (input | teacher | student | target)", "",
                  f"![samples]({grids[-1].relative_to(run_dir)})", ""]
    for plot in _plots(run_dir):
        lines += [f"![{plot.stem}]({plot.relative_to(run_dir)})", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def _plots(run_dir: Path) -> list[Path]:
    """Loss curves and active-channel fractions of stage 3, if matplotlib is installed."""
    metrics = run_dir / "metrics.jsonl"
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
    out.append(run_dir / "plot_losses.png")
    fig.savefig(out[-1], dpi=100, bbox_inches="tight")
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
        out.append(run_dir / "plot_active_channels.png")
        fig.savefig(out[-1], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return out
