"""FID and KID of two feature sets, computed by torch-fidelity's metric code
(``torch_fidelity.metric_fid`` and ``torch_fidelity.metric_kid``).

The features come from an extractor (:mod:`.extractors`: Inception-V3, the demos' feature net or a
trusted TorchScript model); the real images' are cached per image set and extractor
(:mod:`.feature_cache`).
"""

from __future__ import annotations

import logging

import torch

from ..errors import DataError

log = logging.getLogger(__name__)

#: KID's usual settings (torch-fidelity's defaults, those of Binkowski et al.).
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _check_pair(f1: torch.Tensor, f2: torch.Tensor) -> None:
    if f1.dim() != 2 or f2.dim() != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be (N1, D) and (N2, D), got {tuple(f1.shape)} and {tuple(f2.shape)}")


def fid_from_features(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (torch-fidelity's code).

    Args:
        f1: (N1, D) features. f2: (N2, D) features. Both need N > 1.

    Returns:
        FID (float, >= 0 up to rounding).
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    _check_pair(f1, f2)
    if min(f1.shape[0], f2.shape[0]) < 2:
        raise DataError(f"FID needs at least 2 images per set, got {f1.shape[0]} and {f2.shape[0]}")
    s1 = fid_features_to_statistics(f1.detach().cpu().double())
    s2 = fid_features_to_statistics(f2.detach().cpu().double())
    return float(fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"])


def kid_from_features(
    f1: torch.Tensor, f2: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
    seed: int = 2020
) -> tuple[float, float]:
    """Kernel Inception Distance (cubic polynomial kernel MMD^2, torch-fidelity's code).

    Args:
        f1: (N1, D) features. f2: (N2, D) features.
        subsets: number of random subsets averaged.
        subset_size: samples per subset; lowered to the smaller set size (the usual rule, so
            small sets still get a KID; :func:`kid_subset_size` gives the value used).
        seed: seed of the subset sampling.

    Returns:
        (mean, std) of the MMD^2 estimates over subsets.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    _check_pair(f1, f2)
    n = min(f1.shape[0], f2.shape[0])
    if n < 2:
        raise DataError(f"KID needs at least 2 images per set, got {f1.shape[0]} and {f2.shape[0]}")
    if subset_size > n:
        log.info("KID subset size %d exceeds the %d images available: using %d", subset_size, n, n)
        subset_size = n
    out = kid_features_to_metric(
        f1.detach().cpu().double(),
        f2.detach().cpu().double(),
        kid_subsets=subsets,
        kid_subset_size=subset_size,
        rng_seed=seed,
        verbose=False,
    )
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def kid_subset_size(n1: int, n2: int, subset_size: int = KID_SUBSET_SIZE) -> int:
    """The KID subset size used for sets of ``n1`` and ``n2`` images: ``subset_size`` capped at both."""
    return min(subset_size, n1, n2)
