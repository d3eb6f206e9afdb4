"""Evaluation metrics: PSNR/SSIM, segmentation mIoU, FID/KID and latency (also on the deployment runtimes), and their registry.

``registry.evaluate_generators`` runs the metrics a family declares (``METRICS``, by name) and
returns their values with a protocol record each (evaluator, its weights' hash, settings, and
whether the figure is comparable with a published one).

Names are resolved lazily (PEP 562), so ``import gancompress.metrics`` does not pull in kornia,
segmentation_models_pytorch or torch-fidelity until a metric that needs them is used.

May import: errors, config, system, files, nets, data.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "image": ("rgb_to_y", "psnr_ssim_y", "to_unit", "quantize_8bit"),
    "miou": ("Confusion", "confusion_matrix", "evaluate_miou", "miou_from_confusion"),
    "palette": ("Palette", "cityscapes_palette", "colour_to_ids"),
    "segmenter": ("Segmenter", "load_segmenter"),
    "segmenter_train": ("train_segmenter",),
    "extractors": (
        "FeatureNetExtractor",
        "InceptionExtractor",
        "TorchScriptExtractor",
        "check_fid_extractor",
        "check_inception_weights",
        "extractor_from_eval",
        "load_fid_extractor",
    ),
    "feature_cache": ("cached_real_features", "compute_features", "file_list_digest"),
    "fid": ("fid_from_features", "kid_from_features"),
    "drn": ("DRNSeg", "drn_protocol"),
    "features": ("FeatureNet", "load_feature_net", "save_feature_net", "train_feature_net"),
    "evaldata": ("Baseline", "EvalBatch", "EvalData", "ImageSet", "Reference"),
    "registry": ("METRICS", "evaluate_generators", "get_metric", "protocol_markdown"),
    "weights": ("first_mismatch", "load_tensors", "trust_torchscript"),
    "keys": ("HEADLINE_ORDER", "HIGHER_IS_BETTER", "headline_key", "worsening"),
    "latency": ("latency_table", "measure_latency"),
    "runtimes": ("RUNTIMES", "format_rows", "get_runtime", "parse_runtimes", "runtime_rows", "time_runtime"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'gancompress.metrics' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_WHERE[name]}")
    return getattr(module, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
