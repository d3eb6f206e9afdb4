"""The discriminator ablation (the shape of the GCC appendix's Table III).

One recipe, run once per variant of the student's discriminator, for one seed or several
(``--seeds N``: recipe.seed, +1, ...). Stages 1 and 2 (the sparse model and its pruning) do not
depend on the student's discriminator, so for each seed they run once, in the first variant's
folder, and the others start from copies of their outputs: every variant distils the same pruned
architecture from the same stage-1 model, and only stage 3 differs.

``dmd-random`` is DMD's control: the mask switched on at random, at the on-rate the ``dmd`` variant
of the same seed measured (its share of ``dmd_on_<G>`` records in ``metrics.jsonl``), set through
``discriminator.dmd.schedule=random`` and ``discriminator.dmd.random_on_rate``. A recipe schema
without those keys fails that variant alone, in one line; the others still run.

Output, in ``<output_dir>/<name>-ablation/``: one run folder per variant (``<variant>/`` for the
recipe's seed, ``seed-<s>/<variant>/`` for the further seeds), ``ablation.json`` (the figures, per
seed and as mean ± std) and ``ablation.md`` (the table; with several seeds each figure is
mean ± std and a column says whether a variant differs from full GCC beyond the spread,
:func:`~gancompress.experiments.seeds.differs`).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from ..config.sections import Recipe
from ..errors import GanCompressError, RecipeError
from ..families.recipe import load_recipe
from ..files.atomic import atomic_write_json, atomic_write_text
from ..files.rundir import RunDir
from .ablation_variants import MEASURED, REFERENCE, VARIANTS
from .seeds import RULE, Spread, compare, headline_keys, seed_schedule, select_keys, spread_or_none

log = logging.getLogger(__name__)

# What stages 1-2 leave in a run folder; copied from the first variant to the others.
SHARED_OUTPUTS = ("pretrain", "sparse", "pruned")


def resolve_variants(keys: list[str] | None) -> list[str]:
    """The variant keys to run, in table order; an unknown key lists the valid ones."""
    return select_keys(keys, VARIANTS, "--variants", "variant")


def variant_dir(folder: Path, key: str, seed: int, base_seed: int) -> Path:
    """The run folder of variant ``key`` for ``seed``: ``<key>/`` for the recipe's own seed (the
    single-seed layout), ``seed-<s>/<key>/`` for the others."""
    return folder / key if seed == base_seed else folder / f"seed-{seed}" / key


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


def dmd_on_rate(run_dir: Path) -> float | None:
    """The share of stage 3's ``dmd_on_<G>`` records (all generators) with the mask on, or None."""
    return _final_record(run_dir).get("dmd_on_share")


def variant_overrides(key: str, run_dirs: dict[str, Path]) -> list[str]:
    """The recipe overrides of variant ``key``; a measured one reads its source variant's run folder.

    Args:
        key: the variant.
        run_dirs: variant -> its run folder for the same seed.

    Raises:
        GanCompressError: the figure a measured override needs is not there (one line).
    """
    extra = list(VARIANTS[key][1])
    if key in MEASURED:
        source, setting = MEASURED[key]
        rate = dmd_on_rate(run_dirs[source]) if source in run_dirs else None
        if rate is None:
            raise GanCompressError(f"variant {key}: needs the '{source}' variant's measured mask on-rate "
                                   f"(dmd_on_<G> records in {source}/metrics.jsonl); run '{source}' in the same "
                                   f"ablation (--variants {source} {key})")
        extra.append(f"{setting}={rate:.6g}")
    return extra


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


def run_variant(recipe_path: str, overrides: list[str], key: str, seed: int, run_dir: Path, first: Path | None,
                run_dirs: dict[str, Path], resume: bool, device: str | None) -> dict:
    """Run one variant for one seed (stages 1-2 copied from ``first`` when given).

    Returns ``{"run_dir", "overrides", "seconds", "generators"}``, or ``{"run_dir", "error"}`` when
    the variant's settings cannot be made or the recipe refuses them (the error's one line).
    """
    from ..run.pipeline import compress

    try:
        extra = variant_overrides(key, run_dirs)
        recipe = load_recipe(recipe_path, [*overrides, f"seed={seed}", *extra])
    except GanCompressError as exc:
        message = f"variant {key}: {exc}" if not str(exc).startswith(f"variant {key}") else str(exc)
        log.error("%s", message)
        return {"run_dir": str(run_dir), "error": message}
    already = RunDir(run_dir).recipe.exists()
    if already and not resume:
        raise RecipeError(f"{run_dir}: already holds a run; pass --resume to continue the ablation, "
                          "or --out to start elsewhere")
    if first is not None and not already:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in SHARED_OUTPUTS:
            if (first / name).exists():
                shutil.copytree(first / name, run_dir / name, dirs_exist_ok=True)
    log.info("ablation variant '%s' (%s), seed %d, in %s", key, VARIANTS[key][0], seed, run_dir)
    started = time.perf_counter()
    report = compress(recipe, run_dir, resume=already, device=device)
    return {"run_dir": str(run_dir), "overrides": extra, "seconds": round(time.perf_counter() - started, 1),
            "generators": variant_summary(run_dir, report)}


def run_ablation(recipe_path: str, overrides: list[str], variants: list[str] | None, out_dir: Path | None,
                 resume: bool, device: str | None, seeds: int = 1) -> tuple[Path, dict]:
    """Run the chosen variants of ``recipe_path`` for ``seeds`` seeds; returns the ablation folder
    and the figures.

    ``results["variants"][key]`` holds ``label``, ``overrides``, ``runs`` (seed -> the figures of
    :func:`run_variant`), ``generators`` (the recipe's own seed's figures, as a single-seed
    ablation reports them) and ``spread`` (mean ± std over the seeds, :func:`spread_summary`);
    a variant that failed has ``error``.
    """
    keys = resolve_variants(variants)
    base: Recipe = load_recipe(recipe_path, overrides)
    folder = out_dir if out_dir is not None else Path(base.output_dir) / f"{base.name}-ablation"
    schedule = seed_schedule(base.seed, seeds)
    results: dict = {"recipe": str(recipe_path), "overrides": list(overrides), "seed": base.seed,
                     "seeds": schedule, "variants": {}}
    for key in keys:
        results["variants"][key] = {"label": VARIANTS[key][0], "overrides": list(VARIANTS[key][1]), "runs": {}}
    for seed in schedule:
        first: Path | None = None
        run_dirs: dict[str, Path] = {}
        for key in keys:
            run_dir = variant_dir(folder, key, seed, base.seed)
            run = run_variant(recipe_path, overrides, key, seed, run_dir, first, run_dirs, resume, device)
            results["variants"][key]["runs"][str(seed)] = run
            if "error" in run:
                continue
            run_dirs[key] = run_dir
            if first is None:
                first = run_dir
    for key, v in results["variants"].items():
        done = {s: r for s, r in v["runs"].items() if "error" not in r}
        errors = [r["error"] for r in v["runs"].values() if "error" in r]
        if errors:
            v["error"] = errors[0]
        if str(base.seed) in done:
            v["generators"] = done[str(base.seed)]["generators"]
        if done:
            v["spread"] = spread_summary([r["generators"] for r in done.values()])
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "ablation.json", results)
    atomic_write_text(folder / "ablation.md", markdown_table(results) + "\n")
    return folder, results


def spread_summary(runs: list[dict]) -> dict:
    """Mean ± std over seeds of each figure of :func:`variant_summary` (one dict per seed), as
    :meth:`Spread.as_dict <gancompress.experiments.seeds.Spread.as_dict>` dicts (None where no seed has it)."""
    def spread(values):
        s = spread_or_none(values)
        return s.as_dict() if s is not None else None

    out = {}
    for n in runs[0]:
        gens = [r[n] for r in runs]
        out[n] = {role: {k: spread(g[role].get(k) for g in gens) for k in sorted({k for g in gens for k in g[role]})}
                  for role in ("student", "teacher")}
        for k in ("student_gmacs", "active_fraction", "dmd_on_share"):
            out[n][k] = spread(g[k] for g in gens)
    return out


def _pct(d: dict | None) -> str:
    spread = Spread.from_dict(d)
    if spread is None:
        return "-"
    if spread.std is None:
        return f"{100 * spread.mean:.0f} %"
    return f"{100 * spread.mean:.0f} ± {100 * spread.std:.0f} %"


def _num(d: dict | None) -> str:
    return "-" if d is None else Spread.from_dict(d).format(4)


def markdown_table(results: dict) -> str:
    """One row per variant: student (and teacher) metrics, student MACs, final active channels and
    DMD's on-rate, each the mean ± std over the seeds (the value alone for one seed). With several
    seeds a last column compares the headline metric with full GCC by :data:`~gancompress.experiments.seeds.RULE`.
    A failed variant's row says why."""
    variants = results["variants"]
    done = [v for v in variants.values() if "spread" in v]
    if not done:
        return "\n".join(f"| {v['label']} | failed: {v.get('error', 'not run')} |" for v in variants.values())
    gens = list(done[0]["spread"])
    metric_keys = sorted({k for v in done for g in v["spread"].values() for k, s in g["student"].items()
                          if s is not None})
    several = len(results.get("seeds", [None])) > 1
    primary = next(iter(headline_keys(metric_keys)), None)
    reference = variants.get(REFERENCE, {}).get("spread")
    head = ["variant"]
    for n in gens:
        prefix = f"{n} " if len(gens) > 1 else ""
        head += [f"{prefix}student {k}" for k in metric_keys] + [f"{prefix}teacher {k}" for k in metric_keys]
        head += [f"{prefix}student GMACs", f"{prefix}active channels (final)", f"{prefix}DMD mask on"]
        if several and primary is not None and reference is not None:
            head.append(f"{prefix}better than full GCC? ({primary})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, v in variants.items():
        if "spread" not in v:
            lines.append("| " + " | ".join([v["label"], f"failed: {v.get('error', 'not run')}"]
                                           + ["-"] * (len(head) - 2)) + " |")
            continue
        row = [v["label"] + (" (failed for some seeds: see ablation.json)" if "error" in v else "")]
        for n in gens:
            g = v["spread"][n]
            row += [_num(g["student"].get(k)) for k in metric_keys]
            row += [_num(g["teacher"].get(k)) for k in metric_keys]
            row += [_num(g["student_gmacs"]), _pct(g["active_fraction"]), _pct(g["dmd_on_share"])]
            if several and primary is not None and reference is not None:
                mine, ref = g["student"].get(primary), reference[n]["student"].get(primary)
                row.append("-" if key == REFERENCE or mine is None or ref is None
                           else compare(primary, Spread.from_dict(mine), Spread.from_dict(ref)))
        lines.append("| " + " | ".join(row) + " |")
    if several:
        lines += ["", f"Mean ± sample std over seeds {', '.join(map(str, results['seeds']))}; a difference is "
                      f"called one only where {RULE}."]
    return "\n".join(lines)
