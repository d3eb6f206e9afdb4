"""Evaluation metrics registered by name, and the one entry point that runs them.

A family declares the metrics it reports (``Family.eval_metrics``, names of :data:`METRICS`) and,
per generator, what they are measured on (``Family.eval_data(name)`` ->
:class:`~gancompress.metrics.evaldata.EvalData`). :func:`evaluate_generators` runs every declared
metric on every generator and returns::

    {"metrics":  {generator name: {role: {key: value}}},
     "protocol": {generator name: {metric name: record}}}

Roles are those of ``generators`` ('teacher', 'student', ...) plus the baselines the family
declares ('bicubic', 'input', 'real'). A metric is a function ``metric(ctx, name, data) -> dict``
returning ``{"values": {role: {key: value}}, "protocol": record}``.

Protocol record (plain JSON types), one per generator and metric::

    {"metric": "miou",
     "keys": ["miou"],                         # the value keys it filled
     "evaluator": {"name": str, "kind": str,   # e.g. "drn-d-105", "smp", "inception", "demo-features"
                   "file": str | None, "sha256": first 12 hex | None},
     "protocol": {"images": int, "resolution": [H, W] | None, ...},   # metric-specific settings
     "comparable": bool,                       # with the published figure named in "reference"
     "reference": str | None,                  # the published table and setting
     "why_not": str,                           # "" when comparable, else every reason, "; "-joined
     "note": str}                              # caveats that do not break comparability

A metric that cannot run (no evaluator configured, no labels) gives
``{"metric": name, "skipped": reason}`` and no values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..errors import RecipeError
from .evaldata import EvalBatch, EvalData, ImageSet, Reference
from .image import to_unit

log = logging.getLogger(__name__)

MetricFn = Callable[["MetricContext", str, EvalData], dict]


class MetricContext:
    """What every metric of one evaluation shares: the generators, the device, the recipe's
    evaluator settings, and evaluators and real features loaded once.

    Args:
        family: the family (its ``recipe.eval`` names the evaluator files).
        generators: role -> generator name -> module (eval mode).
        device: where generators and evaluators run.
        cache_dir: folder for the real-feature cache (``<run>/cache``), or None for no cache.
    """

    def __init__(self, family, generators: dict[str, dict[str, torch.nn.Module]], device: torch.device,
                 cache_dir: Path | None):
        self.family = family
        self.generators = generators
        self.device = torch.device(device)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.eval_cfg = family.recipe.eval
        self._segmenter = self._extractor = None
        self._loaded: set[str] = set()
        self._features: dict[str, tuple[torch.Tensor, str]] = {}

    def roles(self, name: str) -> list[str]:
        """The roles that have a generator ``name``."""
        return [role for role, gens in self.generators.items() if name in gens]

    def segmenter(self):
        """The segmenter of ``eval.segmenter`` (loaded once), or None when it is not set."""
        if "segmenter" not in self._loaded:
            from .segmenter import load_segmenter
            from .weights import trust_torchscript

            path = self.eval_cfg.segmenter
            self._segmenter = load_segmenter(path, self.device, trust_torchscript=trust_torchscript(self.eval_cfg)) \
                if path else None
            self._loaded.add("segmenter")
        return self._segmenter

    def extractor(self):
        """The FID feature extractor of the recipe (loaded once), or None when none is set."""
        if "extractor" not in self._loaded:
            from .extractors import extractor_from_eval

            self._extractor = extractor_from_eval(self.eval_cfg, self.device)
            self._loaded.add("extractor")
        return self._extractor

    def set_features(self, images: ImageSet) -> tuple[torch.Tensor, str]:
        """(N, D) features of a fixed image set and where they came from ("cache <file>" or "computed").

        With a cache folder they are computed once per set content and extractor and reused by
        later evaluations (:func:`~gancompress.metrics.feature_cache.cached_real_features`).
        """
        from .feature_cache import cached_real_features, compute_features, file_list_digest

        extractor = self.extractor()
        key = f"{images.name}-{file_list_digest(images.files, images.transform)[:24]}"
        if key not in self._features:
            if self.cache_dir is None:
                self._features[key] = (compute_features(images.images(), extractor), "computed (no cache folder)")
            else:
                feats = cached_real_features(self.cache_dir, key, images.images, extractor)
                self._features[key] = (feats, f"cached in {self.cache_dir}")
        return self._features[key]

    def outputs(self, name: str, data: EvalData, metric: str) -> Iterator[tuple[EvalBatch, dict[str, torch.Tensor]]]:
        """Each batch with every role's images: (N, 3, H, W) float in [0, 1] on the CPU.

        Roles: the generators named ``name``, then the baselines scored by ``metric`` that map a
        batch to images.
        """
        roles = self.roles(name)
        baselines = {r: b for r, b in data.baselines.items() if metric in b.metrics and b.output is not None}
        for batch in data.batches():
            inputs = batch.inputs.to(self.device)
            outs = {r: to_unit(self.generators[r][name](inputs).float()).cpu() for r in roles}
            outs.update({r: b.output(batch).float().cpu() for r, b in baselines.items()})
            yield batch, outs


def skipped(metric: str, reason: str) -> dict:
    """The result of a metric that cannot run: no values, a record saying why."""
    log.info("%s skipped: %s", metric, reason)
    return {"values": {}, "protocol": {"metric": metric, "skipped": reason}}


def _comparison(reference: Reference | None, reasons: list[str]) -> dict:
    """The comparability fields of a record: ``reasons`` are this run's differences from ``reference``."""
    if reference is None:
        return {"comparable": False, "reference": None,
                "why_not": "; ".join(["no published figure is declared for this family's evaluation"] + reasons),
                "note": ""}
    reasons = ([reference.blocker] if reference.blocker else []) + reasons
    return {"comparable": not reasons, "reference": reference.table, "why_not": "; ".join(reasons),
            "note": reference.note}


def _standard_checks(reference: Reference | None, images: int, resolution) -> list[str]:
    """Differences in image count and generated resolution from the published protocol."""
    if reference is None:
        return []
    out = []
    if reference.images is not None and images != reference.images:
        out.append(f"{images} evaluation images, the published protocol uses {reference.images}")
    if reference.resolution is not None and resolution is not None and tuple(resolution) != reference.resolution:
        out.append(f"generated at {resolution[0]}x{resolution[1]}, the published protocol at "
                   f"{reference.resolution[0]}x{reference.resolution[1]}")
    return out


def _size(resolution) -> list[int] | None:
    return list(resolution) if resolution is not None else None


# --- metrics --------------------------------------------------------------------------------------

def psnr_ssim(ctx: MetricContext, name: str, data: EvalData) -> dict:
    """PSNR (dB) and SSIM on the Y channel against the paired targets, per image then averaged.

    Values per role: {"psnr", "ssim"}. Borders of ``data.psnr_border`` pixels are cropped and
    both images are rounded to 8-bit levels first (see :func:`~gancompress.metrics.image.psnr_ssim_y`).
    """
    from .image import psnr_ssim_y

    sums: dict[str, list[float]] = {}
    count = 0
    for batch, outs in ctx.outputs(name, data, "psnr_ssim"):
        if batch.target is None:
            return skipped("psnr_ssim", f"the {ctx.family.name} family's evaluation data has no paired targets")
        n = batch.target.shape[0]
        for role, images in outs.items():
            m = psnr_ssim_y(images, batch.target.float().cpu(), border=data.psnr_border)
            acc = sums.setdefault(role, [0.0, 0.0])
            acc[0] += m["psnr"] * n
            acc[1] += m["ssim"] * n
        count += n
    if count == 0:
        return skipped("psnr_ssim", "no evaluation images")
    reference = data.references.get("psnr_ssim")
    record = {
        "metric": "psnr_ssim", "keys": ["psnr", "ssim"],
        "evaluator": {"name": "PSNR/SSIM on the Y channel (kornia)", "kind": "y-psnr-ssim", "file": None,
                      "sha256": None},
        "protocol": {"images": count, "resolution": _size(data.resolution), "split": data.split,
                     "channel": "Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 (BT.601, MATLAB rgb2ycbcr)",
                     "border_crop": data.psnr_border, "quantisation": "both images rounded to 8-bit levels",
                     "ssim_window": "11x11 Gaussian, sigma 1.5, valid windows only",
                     "average": "per image, then the mean over the set"},
        **_comparison(reference, _standard_checks(reference, count, data.resolution)),
    }
    return {"values": {r: {"psnr": p / count, "ssim": s / count} for r, (p, s) in sums.items()},
            "protocol": record}


def miou(ctx: MetricContext, name: str, data: EvalData) -> dict:
    """Segmentation mIoU of the generated images against the label maps they were generated from.

    The segmenter is ``eval.segmenter``: the published DRN-D-105 (GAN Compression's protocol,
    :func:`~gancompress.metrics.drn.drn_protocol`) or an own one. One confusion matrix per role
    over the whole set. Values per role: {"miou"}.
    """
    from .drn import CITYSCAPES_LABEL_SIZE, drn_protocol
    from .miou import Confusion

    segmenter = ctx.segmenter()
    if segmenter is None:
        return skipped("miou", "eval.segmenter is not set (the DRN-D-105 Cityscapes weights or a segmenter "
                               "trained with gancompress train-segmenter)")
    confusions: dict[str, Confusion] = {}
    label_sizes: set[tuple[int, int]] = set()
    sources: set[str] = set()
    for batch, outs in ctx.outputs(name, data, "miou"):
        if batch.labels is None:
            return skipped("miou", f"the {ctx.family.name} family's evaluation data has no label maps")
        for label in batch.labels:
            label_sizes.add(tuple(label.shape[:2]))
            sources.add("colour label maps converted with the segmenter's palette" if label.dim() == 3
                        else "class-id label files")
        if segmenter.num_classes is None:  # a TorchScript segmenter: its output says how many
            segmenter.num_classes = int(segmenter.logits(next(iter(outs.values()))[:1]).shape[1])
        for role, images in outs.items():
            confusions.setdefault(role, Confusion(segmenter.num_classes)).add(segmenter, images, batch.labels)
    if not confusions:
        return skipped("miou", "no evaluation images")
    count = next(iter(confusions.values())).images
    reference = data.references.get("miou")
    reasons = []
    if segmenter.kind == "smp":
        reasons.append("own segmenter: not comparable with published mIoU")
    elif segmenter.kind != "drn-d-105":
        reasons.append("user TorchScript segmenter: not comparable with published mIoU")
    else:
        if len(sources) != 1 or "class-id" not in next(iter(sources)):
            reasons.append("labels come from the colour label maps, not the full-resolution trainId files")
        if label_sizes != {CITYSCAPES_LABEL_SIZE}:
            sizes = ", ".join(f"{h}x{w}" for h, w in sorted(label_sizes))
            reasons.append(f"labels at {sizes}, the published protocol scores at "
                           f"{CITYSCAPES_LABEL_SIZE[0]}x{CITYSCAPES_LABEL_SIZE[1]}")
    reasons += _standard_checks(reference, count, data.resolution)
    protocol = {"images": count, "resolution": _size(data.resolution), "split": data.split,
                "label_resolution": [list(s) for s in sorted(label_sizes)], "labels": sorted(sources),
                "classes": segmenter.num_classes, "ignore_index": 255,
                "confusion": "one matrix over the whole set; mean IoU over classes labelled or predicted",
                "upsampling": "bilinear logits to the label resolution, then argmax"}
    if segmenter.kind == "drn-d-105":
        protocol.update({k: v for k, v in drn_protocol().items() if k not in protocol})
    else:
        protocol.update({"input_size": _size(segmenter.input_size),
                         "normalisation": None if segmenter.mean is None else
                         {"mean": segmenter.mean.flatten().tolist(), "std": segmenter.std.flatten().tolist()}})
    record = {"metric": "miou", "keys": ["miou"], "evaluator": segmenter.describe(), "protocol": protocol,
              **_comparison(reference, reasons)}
    return {"values": {r: {"miou": c.result()["miou"]} for r, c in confusions.items()}, "protocol": record}


def fid_kid(ctx: MetricContext, name: str, data: EvalData) -> dict:
    """FID and KID of each role's images against the real image set ``data.reals``.

    The real set's features are computed once per set content and extractor and cached in the
    cache folder. KID: torch-fidelity's polynomial-kernel MMD with 100 subsets of 1000 images,
    the subset size capped at the smaller set. Values per role: {"fid", "kid_mean", "kid_std",
    "fid_images"}.
    """
    from .features import FEATURE_NET_KIND, NOT_COMPARABLE
    from .fid import KID_SUBSET_SIZE, KID_SUBSETS, fid_from_features, kid_from_features, kid_subset_size

    if data.reals is None:
        return skipped("fid_kid", f"the {ctx.family.name} family declares no real image set")
    extractor = ctx.extractor()
    if extractor is None:
        return skipped("fid_kid", "no feature extractor: set eval.inception_weights, or eval.fid_extractor to a "
                                  "feature-net checkpoint (a demo's features.pt) or a TorchScript model with "
                                  "eval.trust_torchscript: true")
    real, real_source = ctx.set_features(data.reals)
    chunks: dict[str, list[torch.Tensor]] = {}
    for _, outs in ctx.outputs(name, data, "fid_kid"):
        for role, images in outs.items():
            chunks.setdefault(role, []).append(extractor(images))
    feats = {role: torch.cat(c) for role, c in chunks.items()}
    for role, baseline in data.baselines.items():
        if "fid_kid" in baseline.metrics and baseline.output is None and baseline.images is not None:
            feats[role] = ctx.set_features(baseline.images)[0]
    if not feats:
        return skipped("fid_kid", "no evaluation images")
    values = {}
    for role, f in feats.items():
        kid_mean, kid_std = kid_from_features(f, real, KID_SUBSETS, KID_SUBSET_SIZE)
        values[role] = {"fid": fid_from_features(f, real), "kid_mean": kid_mean, "kid_std": kid_std,
                        "fid_images": int(f.shape[0])}
    count = max(int(f.shape[0]) for f in feats.values())
    reference = data.references.get("fid_kid")
    evaluator = extractor.describe()
    inception = evaluator["kind"] == "inception"
    reasons = []
    if evaluator["kind"] == FEATURE_NET_KIND:
        reasons.append(NOT_COMPARABLE)
    elif not inception:
        reasons.append("features from a user extractor, not the standard Inception pool3")
    reasons += _standard_checks(reference, count, data.resolution)
    if inception:
        preprocessing = "images rounded to 8 bits; Inception resizes to 299x299 as TF1 bilinear"
    else:
        preprocessing = getattr(extractor, "preprocessing", "the user extractor's own")
    record = {
        "metric": "fid_kid", "keys": ["fid", "kid_mean", "kid_std", "fid_images"],
        "evaluator": evaluator,
        "protocol": {"images": count, "resolution": _size(data.resolution), "split": data.split,
                     "real_set": data.reals.name, "real_images": int(real.shape[0]),
                     "real_transform": data.reals.transform, "real_features": real_source,
                     "preprocessing": preprocessing, "feature_dim": int(real.shape[1]),
                     "kid": {"subsets": KID_SUBSETS,
                             "subset_size": kid_subset_size(count, int(real.shape[0])),
                             "kernel": "polynomial, degree 3, gamma 1/D, coef0 1"}},
        **_comparison(reference, reasons),
    }
    smallest, dim = min(min(int(f.shape[0]) for f in feats.values()), int(real.shape[0])), int(real.shape[1])
    if smallest <= dim:
        # Fewer images than feature dimensions: FID's covariances are rank-deficient, so FID is biased
        # upwards and noisy; KID's estimate is unbiased at any set size.
        caution = f"FID from {smallest} images in {dim} feature dimensions is biased and noisy: compare runs by KID"
        if kid_subset_size(smallest, smallest) == smallest:
            # Every KID subset is then the whole set, so kid_std is 0 and says nothing about the error.
            caution += " (each KID subset is the whole set, so kid_std is 0: take the spread over seeds)"
        record["note"] = "; ".join(n for n in (record["note"], caution) if n)
    return {"values": values, "protocol": record}


#: Metrics by name (stylegan2-ada's metric_main style): each maps (ctx, generator name, data) to
#: {"values": ..., "protocol": ...}.
METRICS: dict[str, MetricFn] = {
    "psnr_ssim": psnr_ssim,
    "miou": miou,
    "fid_kid": fid_kid,
}


def get_metric(name: str) -> MetricFn:
    """The metric registered as ``name``; an unknown name is an error listing the valid ones."""
    if name not in METRICS:
        raise RecipeError(f"unknown metric {name!r} (valid: {', '.join(sorted(METRICS))})")
    return METRICS[name]


@torch.no_grad()
def evaluate_generators(family, generators: dict[str, dict[str, torch.nn.Module]], device,
                        cache_dir: Path | None = None, metrics: tuple[str, ...] | None = None) -> dict:
    """Run the family's metrics on every generator.

    Args:
        family: a :class:`~gancompress.families.base.Family` with ``eval_metrics`` and ``eval_data``.
        generators: role ('teacher', 'student', ...) -> generator name -> module, in eval mode.
        device: where to run.
        cache_dir: folder for cached real features (``<run>/cache``); None computes them each time.
        metrics: metric names to run instead of ``family.eval_metrics``.

    Returns:
        ``{"metrics": {name: {role: {key: value}}}, "protocol": {name: {metric: record}}}``
        (see the module docstring); a generator with no values is absent from "metrics".
    """
    names = tuple(family.eval_metrics if metrics is None else metrics)
    functions = {m: get_metric(m) for m in names}
    ctx = MetricContext(family, generators, device, cache_dir)
    out: dict = {"metrics": {}, "protocol": {}}
    if not functions:
        return out
    for gen_name in family.generator_names:
        if not ctx.roles(gen_name):
            continue
        data = family.eval_data(gen_name)
        log.info("evaluating %s on %s (%d items): %s", gen_name, data.split, data.count, ", ".join(functions))
        for metric, fn in functions.items():
            result = fn(ctx, gen_name, data)
            for role, values in result["values"].items():
                out["metrics"].setdefault(gen_name, {}).setdefault(role, {}).update(values)
            out["protocol"].setdefault(gen_name, {})[metric] = result["protocol"]
    return out


def protocol_markdown(protocol: dict) -> list[str]:
    """report.md lines for the protocol records of :func:`evaluate_generators` (one bullet each)."""
    lines = []
    for gen_name, records in protocol.items():
        for metric, r in records.items():
            if "skipped" in r:
                lines.append(f"- {metric} ({gen_name}): not measured: {r['skipped']}.")
                continue
            ev = r["evaluator"]
            sha = f", sha256 {ev['sha256']}" if ev.get("sha256") else ""
            p = r["protocol"]
            res = f" at {p['resolution'][0]}x{p['resolution'][1]}" if p.get("resolution") else ""
            verdict = (f"comparable with {r['reference']}" if r["comparable"]
                       else f"not comparable{' with ' + r['reference'] if r['reference'] else ''}: {r['why_not']}")
            note = f" Note: {r['note']}." if r.get("note") else ""
            lines.append(f"- {metric} ({gen_name}): {ev['name']}{sha}; {p['images']} images{res}; {verdict}.{note}")
    return lines
