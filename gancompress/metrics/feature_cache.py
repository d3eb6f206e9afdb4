"""The features of an image set (:func:`compute_features`), and the real images' features cached on
disk per image set and extractor (:func:`cached_real_features`), so that every later evaluation
of the same set with the same extractor reads them back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from ..errors import DataError
from ..files.atomic import atomic_write

log = logging.getLogger(__name__)

#: Value of the ``"format"`` key of real-feature cache files.
FEATURE_CACHE_FORMAT = "gancompress-features"


def compute_features(images_iter: Iterable, extractor: Callable) -> torch.Tensor:
    """Features of every image of a set.

    Args:
        images_iter: yields (N, 3, H, W) image batches (uint8, or float in [0, 1]); a yielded
            tuple/list uses its first element as the images.
        extractor: callable mapping a batch to (N, D) features.

    Returns:
        (total N, D) float32 CPU tensor.
    """
    chunks = []
    for batch in images_iter:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        chunks.append(extractor(images).detach().float().cpu())
    if not chunks:
        raise DataError("no images to compute features on: check the evaluation dataset folder")
    return torch.cat(chunks, dim=0)


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s)


def file_list_digest(files: Sequence[str | Path], transform: str = "") -> str:
    """Hex SHA-256 naming an image set: its sorted files (absolute path, size, mtime) and how they
    become images (``transform``, e.g. "resize 256"). A file added, removed, replaced or touched,
    or a different preprocessing, gives another digest.

    Raises:
        DataError: a file is missing.
    """
    entries = []
    for f in sorted(Path(f).resolve() for f in files):
        try:
            st = f.stat()
        except OSError as exc:
            raise DataError(f"{f}: cannot read the image ({exc.strerror}); check the evaluation dataset folder") from None
        entries.append([str(f), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"files": entries, "transform": transform}, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def cached_real_features(cache_dir, key: str, images_iter_fn: Callable[[], Iterable], extractor) -> torch.Tensor:
    """Features of the real images, computed once and cached on disk.

    The cache file ``<cache_dir>/<key>__<extractor.id>.pt`` holds a plain dict (loadable with
    ``weights_only=True``) with the key, the extractor id and the (N, D) features; features
    rather than mean/covariance are kept so that both FID and KID can use them. ``key`` should
    name the image set's content (:func:`file_list_digest`) and ``extractor.id`` its weights, so a
    changed set or extractor misses the cache. A file whose key or extractor id differs, or that
    cannot be read, is recomputed and replaced.

    Args:
        cache_dir: folder for cache files (created if needed).
        key: names the real image set, e.g. ``"val-B-<digest>"``.
        images_iter_fn: called with no argument on a miss; returns an iterable of image batches.
        extractor: an extractor with an ``id`` attribute.

    Returns:
        (N, D) float32 features.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{_safe_name(key)}__{_safe_name(extractor.id)}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            expected = {"format": FEATURE_CACHE_FORMAT, "key": key, "extractor": extractor.id}
            if all(blob.get(k) == v for k, v in expected.items()) and torch.is_tensor(blob.get("features")):
                log.info("real features from cache %s", path)
                return blob["features"]
            log.warning("feature cache %s was made for another set or extractor: recomputing", path)
        except Exception as e:  # a truncated or foreign file: recomputing is always safe
            log.warning("feature cache %s unreadable (%s): recomputing", path, type(e).__name__)
    feats = compute_features(images_iter_fn(), extractor)
    blob = {"format": FEATURE_CACHE_FORMAT, "key": key, "extractor": extractor.id, "features": feats}
    atomic_write(path, lambda f: torch.save(blob, f))
    log.info("cached %d real features in %s", feats.shape[0], path)
    return feats
