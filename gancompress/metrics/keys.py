"""The value keys the metrics report: which way is better, and which one a table leads with."""
from __future__ import annotations

#: Metric value keys shown in tables, and whether a larger value is better. Others the registry
#: reports (kid_std, fid_images) describe a measurement rather than score a generator.
HIGHER_IS_BETTER: dict[str, bool] = {"miou": True, "psnr": True, "ssim": True, "fid": False, "kid_mean": False}

#: The headline key is the first of these with values: the figure each family's papers lead with
#: (Cityscapes mIoU for pix2pix when a segmenter is set, FID for the unpaired families, PSNR for SR).
HEADLINE_ORDER: tuple[str, ...] = ("miou", "fid", "psnr", "ssim", "kid_mean")


def headline_key(values: dict) -> str | None:
    """The first key of :data:`HEADLINE_ORDER` in ``values`` (a ``{key: value}`` dict), or None."""
    return next((k for k in HEADLINE_ORDER if k in values), None)


def worsening(key: str, reference: float, value: float) -> float:
    """How much worse ``value`` is than ``reference`` on ``key``, relative to ``|reference|``
    (positive: worse; 0.02 is 2 % worse); an absolute difference when ``reference`` is 0."""
    diff = reference - value if HIGHER_IS_BETTER[key] else value - reference
    return diff / abs(reference) if reference else diff
