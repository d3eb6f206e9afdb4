"""The discriminator ablation (the shape of the GCC appendix's Table III).

One recipe and seed, run once per variant of the student's discriminator. Stages 1 and 2 (the
sparse model and its pruning) do not depend on the student's discriminator, so they run once, in
the first variant's folder, and the others start from copies of their outputs: every variant
distils the same pruned architecture from the same stage-1 model, and only stage 3 differs.

Output, in ``<output_dir>/<name>-ablation/``: one run folder per variant, ``ablation.json`` (the
figures) and ``ablation.md`` (the table).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from .config import Recipe
from .errors import RecipeError
from .fileio import atomic_write_json, atomic_write_text
from .recipe import load_recipe
from .rundir import RunDir

log = logging.getLogger(__name__)

# key -> (label, recipe overrides). Order is the table's order.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "none": ("no discriminator (distillation only)", ("discriminator.mode=none",)),
    "plain": ("plain D", ("discriminator.mode=plain",)),
    "selective-local": ("selective D without the global term",
                        ("discriminator.mode=selective", "discriminator.global_coordination=false")),
    "gcc": ("selective D (full GCC)", ("discriminator.mode=selective", "discriminator.global_coordination=true")),
    "dmd": ("DMD", ("discriminator.mode=dmd",)),
    "selective+dmd": ("selective D + DMD", ("discriminator.mode=selective+dmd",
                                             "discriminator.global_coordination=true")),
    "glead": ("GLeaD", ("discriminator.mode=glead",)),
}

# What stages 1-2 leave in a run folder; copied from the first variant to the others.
SHARED_OUTPUTS = ("pretrain", "sparse", "pruned")


def resolve_variants(keys: list[str] | None) -> list[str]:
    """The variant keys to run, in table order; an unknown key lists the valid ones."""
    if not keys:
        return list(VARIANTS)
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        raise RecipeError(f"--variants: unknown variant {unknown[0]!r} (valid: {', '.join(VARIANTS)})")
    return [k for k in VARIANTS if k in keys]


def _final_record(run_dir: Path, stage: str = "distill") -> dict:
    """The last metrics.jsonl record of ``stage``, and the share of records with DMD's mask on."""
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("stage") == stage]
    if not rows:
        return {}
    last = dict(rows[-1])
    on = [v for r in rows for k, v in r.items() if k.startswith("dmd_on_")]
    if on:
        last["dmd_on_share"] = sum(on) / len(on)
    return last


def variant_summary(run_dir: Path, report: dict) -> dict:
    """The figures of one variant: per generator, student and teacher metrics, MACs, active channels."""
    record = _final_record(run_dir)
    out = {}
    for n, g in report["generators"].items():
        active = record.get(f"active_{n}")
        out[n] = {"student": g.get("metrics", {}).get("student", {}),
                  "teacher": g.get("metrics", {}).get("teacher", {}),
                  "student_gmacs": g["student"]["macs_complete"],
                  "active_fraction": (sum(active) / len(active)) if active else None,
                  "active_per_layer": active,
                  "dmd_on_share": record.get("dmd_on_share")}
    return out


def run_ablation(recipe_path: str, overrides: list[str], variants: list[str] | None, out_dir: Path | None,
                 resume: bool, device: str | None) -> tuple[Path, dict]:
    """Run the chosen variants of ``recipe_path``; returns the ablation folder and the figures."""
    from .pipeline import compress

    keys = resolve_variants(variants)
    base: Recipe = load_recipe(recipe_path, overrides)
    folder = out_dir if out_dir is not None else Path(base.output_dir) / f"{base.name}-ablation"
    results: dict = {"recipe": str(recipe_path), "overrides": list(overrides), "seed": base.seed, "variants": {}}
    first: Path | None = None
    for key in keys:
        label, extra = VARIANTS[key]
        recipe = load_recipe(recipe_path, list(overrides) + list(extra))
        run_dir = folder / key
        already = RunDir(run_dir).recipe.exists()
        if already and not resume:
            raise RecipeError(f"{run_dir}: already holds a run; pass --resume to continue the ablation, "
                              "or --out to start elsewhere")
        if first is not None and not already:
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in SHARED_OUTPUTS:
                if (first / name).exists():
                    shutil.copytree(first / name, run_dir / name, dirs_exist_ok=True)
        log.info("ablation variant '%s' (%s) in %s", key, label, run_dir)
        started = time.perf_counter()
        report = compress(recipe, run_dir, resume=already, device=device)
        results["variants"][key] = {"label": label, "overrides": list(extra), "run_dir": str(run_dir),
                                    "seconds": round(time.perf_counter() - started, 1),
                                    "generators": variant_summary(run_dir, report)}
        if first is None:
            first = run_dir
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "ablation.json", results)
    atomic_write_text(folder / "ablation.md", markdown_table(results) + "\n")
    return folder, results


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


def markdown_table(results: dict) -> str:
    """One row per variant: student (and teacher) metrics, student MACs, final active channels."""
    variants = results["variants"]
    if not variants:
        return ""
    gens = list(next(iter(variants.values()))["generators"])
    metric_keys = sorted({k for v in variants.values() for g in v["generators"].values() for k in g["student"]})
    head = ["variant"]
    for n in gens:
        prefix = f"{n} " if len(gens) > 1 else ""
        head += [f"{prefix}student {k}" for k in metric_keys] + [f"{prefix}teacher {k}" for k in metric_keys]
        head += [f"{prefix}student GMACs", f"{prefix}active channels (final)", f"{prefix}DMD mask on"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants.values():
        row = [v["label"]]
        for n in gens:
            g = v["generators"][n]
            row += [f"{g['student'][k]:.4g}" if k in g["student"] else "-" for k in metric_keys]
            row += [f"{g['teacher'][k]:.4g}" if k in g["teacher"] else "-" for k in metric_keys]
            row += [f"{g['student_gmacs']:.4g}", _pct(g["active_fraction"]), _pct(g["dmd_on_share"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
