"""gpu-check's demo rows: each demo recipe end to end, fast (bf16 + channels_last) and in fp32; every
stage must leave its output, and the student's metric must lie in the range of CPU runs of the same
settings (:data:`REFERENCE`).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .check import Check, Outcome, Row, RowFailure, set_override
from .data import make_demo_data, path_lock, write_random_feature_extractor

DEMO_FAMILIES = ("pix2pix", "cyclegan", "sagan", "srgan")

#: Recipe overrides of the demo rows, on every device: short enough that the eight demo rows fit
#: the budget on one GPU. The CPU reference ranges (:data:`REFERENCE`) were made with these, on
#: the demo recipes as they were then: the settings the recipes have changed since (the Pix2Pix
#: and CycleGAN student widths, weights and teachers, Pix2Pix's gammas, SRGAN's D) are pinned here
#: to those values, so the ranges stay the reference of exactly what the rows run.
DEMO_SHORT: dict[str, dict[str, object]] = {
    "pix2pix": {"sparse.epochs": 3, "distill.epochs_const": 8, "distill.epochs_decay": 8,
                "model.ngf_student": 12, "prune.inherit_weights": False, "distill.teacher": "scratch",
                "distill.gamma_m": 50.0, "distill.gamma_t": 1.0e4},
    "cyclegan": {"sparse.epochs": 2, "distill.epochs_const": 6, "distill.epochs_decay": 6,
                 "model.ngf_student": 12, "prune.inherit_weights": False, "distill.teacher": "scratch"},
    "sagan": {},  # the demo is already short: 2 + 5 epochs
    "srgan": {"train.pretrain_epochs": 20, "distill.epochs_const": 5, "distill.epochs_decay": 5,
              "model.d_blocks": 6, "model.d_fc": 64},
}
#: ``--quick`` (CI): one epoch per stage; the metric is then not compared with the reference.
DEMO_QUICK: dict[str, dict[str, object]] = {
    f: {"sparse.epochs": 1, "distill.epochs_const": 1, "distill.epochs_decay": 0,
        **({"train.pretrain_epochs": 1} if f == "srgan" else {})}
    for f in DEMO_FAMILIES
}


@dataclass(frozen=True)
class Reference:
    """The student's metric of a demo row in CPU runs of the row's own settings.

    Args:
        metric: the report's value key ('miou', 'fid', 'psnr').
        seeds: generator name -> the figure of seeds 0, 1, 2.
        floor: the least margin around the seeds' spread (run-to-run noise of a GPU run, whose
            float reductions differ from the CPU's like another seed does).
        source: how the figures were made.
    """

    metric: str
    seeds: dict[str, tuple[float, ...]]
    floor: float
    source: str

    def bounds(self, name: str) -> tuple[float, float]:
        """[lowest - margin, highest + margin], the margin the seeds' spread or ``floor``."""
        values = self.seeds[name]
        lo, hi = min(values), max(values)
        margin = max(hi - lo, self.floor)
        return lo - margin, hi + margin


_SOURCE = ("gancompress gpu-check --device cpu --rows 'demo/*/fp32' --demo-seed S (S = 0, 1, 2; DEMO_SHORT "
           "settings, fp32, OMP_NUM_THREADS=1), this project's 2-core CPU machine, 2026-11-28")
#: CPU figures of the demo rows' students, seeds 0, 1, 2 (see :class:`Reference`): mIoU by the demo
#: segmenter on its 16 held-out crops (pix2pix; real photos score about 60), FID on the fixed
#: random-feature extractor of :func:`write_random_feature_extractor` (cyclegan: the untranslated
#: inputs score 0.59; sagan: the teachers about 0.36) and Y-PSNR in dB (srgan). At these short
#: settings the seeds spread widely; the range is the seeds' spread on either side of them.
REFERENCE: dict[str, Reference] = {
    "pix2pix": Reference("miou", {"G": (32.46, 39.60, 39.46)}, 3.0, _SOURCE),
    "cyclegan": Reference("fid", {"AtoB": (0.01404, 0.00800, 0.02137),
                                         "BtoA": (0.00833, 0.00808, 0.01084)}, 0.02, _SOURCE),
    "sagan": Reference("fid", {"G": (0.3088, 0.5270, 0.1494)}, 0.05, _SOURCE),
    "srgan": Reference("psnr", {"G": (21.73, 21.81, 21.99)}, 0.5, _SOURCE),
}


def demo_overrides(family: str, quick: bool) -> dict[str, object]:
    """The epoch overrides of a demo row (:data:`DEMO_SHORT`, or :data:`DEMO_QUICK`)."""
    return dict((DEMO_QUICK if quick else DEMO_SHORT)[family])


def student_metric(report: dict, family: str) -> dict[str, float]:
    """Generator name -> the student's value of the family's reference metric in ``report``."""
    key = REFERENCE[family].metric
    out = {}
    for name, entry in report.get("generators", {}).items():
        value = entry.get("metrics", {}).get("student", {}).get(key)
        if value is None:
            skipped = {m: r.get("skipped") for m, r in entry.get("protocol", {}).items() if r.get("skipped")}
            raise RowFailure(f"the report has no student {key} for generator {name}"
                             + (f" ({'; '.join(f'{m}: {s}' for m, s in skipped.items())})" if skipped else ""))
        out[name] = float(value)
    if not out:
        raise RowFailure("the report lists no generators")
    return out


def stage_outputs(run_dir: Path, names: list[str], pretrain: bool) -> list[Path]:
    """The file every stage of a finished run leaves (see :class:`~gancompress.files.rundir.RunDir`)."""
    from ...files.rundir import RunDir

    run = RunDir(run_dir)
    names_t = tuple(names)
    paths = [run.sparse, run.pruned, run.report_json, run.report_md, run.metrics]
    if pretrain:
        paths += [run.pretrain("pretrain_S"), run.pretrain("pretrain_T")]
    for n in names:
        paths += [run.generator("student", n), run.generator("teacher", n), run.export(n, names_t, ".pt")]
    return paths


def demo_row(family: str, fast: bool) -> Row:
    """The demo recipe of ``family`` end to end: bf16 + channels_last (``fast``) or fp32."""
    variant = "fast" if fast else "fp32"
    setting = "train.amp auto (bf16), train.channels_last true" if fast else "train.amp off (fp32)"

    def run(check: Check) -> Outcome:
        recipe = check.recipe(f"demo/{family}.yaml")
        data = make_demo_data(family, check.work / "data" / family)
        sets = {"seed": check.demo_seed, "data.root": data, "train.amp": "auto" if fast else "off",
                "train.channels_last": fast, **demo_overrides(family, check.quick)}
        if family == "pix2pix":
            sets["eval.segmenter"] = data / "segmenter.pt"
        if REFERENCE[family].metric == "fid":
            extractor = check.work / "data" / "random_features.pt"
            with path_lock(extractor):
                if not extractor.is_file():
                    write_random_feature_extractor(extractor)
            sets.update({"eval.fid_extractor": extractor, "eval.trust_torchscript": True})
        run_dir = check.work / "runs" / f"{family}-{variant}"
        shutil.rmtree(run_dir, ignore_errors=True)
        args = [sys.executable, "-m", "gancompress.cli", "compress", str(recipe), "--device", check.device,
                "--run-dir", str(run_dir)]
        for key, value in sets.items():
            args += ["--set", set_override(key, value)]
        started = time.monotonic()
        check.call(args, "compress")
        seconds = time.monotonic() - started
        report = json.loads((run_dir / "report.json").read_text())
        names = list(report.get("generators", {}))
        pretrain = family == "srgan"
        missing = [str(p.relative_to(run_dir)) for p in stage_outputs(run_dir, names, pretrain) if not p.is_file()]
        if missing:
            raise RowFailure(f"stage outputs missing: {', '.join(missing)}")
        precision = report.get("training", {}).get("precision")
        expected = ("bf16" if check.device == "cuda" else "fp32") if fast else "fp32"
        if precision != expected:
            raise RowFailure(f"the run trained in {precision}, not {expected} as {setting} asks on {check.device}")
        values = student_metric(report, family)
        ref = REFERENCE[family]
        details = {"setting": setting, "overrides": {k: str(v) for k, v in sets.items()}, "precision": precision,
                   "pipeline_s": seconds, "student_metric": values, "metric": ref.metric,
                   "student_macs": {n: g["student"]["macs"] for n, g in report["generators"].items()}}
        shown = ", ".join(f"{n} {v:.4g}" for n, v in values.items())
        if check.quick:
            details["range"] = "not compared: --quick trains for one epoch, the reference for DEMO_SHORT's"
            return Outcome(f"{precision}, student {ref.metric} {shown} (quick: not compared)", details)
        bounds = {n: ref.bounds(n) for n in values}
        details["range"] = {n: list(b) for n, b in bounds.items()}
        details["reference_source"] = ref.source
        outside = [f"{n} {v:.4g} not in [{bounds[n][0]:.4g}, {bounds[n][1]:.4g}]"
                   for n, v in values.items() if not bounds[n][0] <= v <= bounds[n][1]]
        if outside:
            raise RowFailure(f"student {ref.metric} outside the CPU runs' range: {'; '.join(outside)}", details)
        ranges = ", ".join(f"[{b[0]:.4g}, {b[1]:.4g}]" for b in bounds.values())
        return Outcome(f"{precision}, student {ref.metric} {shown} in CPU range {ranges}", details)

    what = f"demo/{family}.yaml end to end, {setting}; student metric vs CPU runs"
    estimates = {"pix2pix": 45, "cyclegan": 40, "sagan": 20, "srgan": 30}
    if fast:
        return Row(f"demo/{family}/fast", what, run, timeout_s=150, estimate_s=estimates[family],
                   cuda_only="bf16 autocast and channels_last are CUDA paths (amp auto is fp32 on a CPU)")
    return Row(f"demo/{family}/fp32", what, run, timeout_s=150, estimate_s=estimates[family])
