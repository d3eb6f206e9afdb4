"""The SRGAN demo's HR images, made from photos that ship with scikit-image.

Training images are square crops of five photos, at several scales (``demo._crops``); the model
then takes random ``hr_crop`` crops of them. Evaluation uses two photos that training never
sees (``motorcycle_left.png`` and ``ihc.png``, an immunohistochemistry slide), each whole, resized
down, and as a crop at its native resolution, so the scores measure generalisation to new images.
(``color.png``, a smooth colour wheel, is left out: bicubic alone scores about 50 dB on it.)
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from .makers import _crops, skimage_photo

log = logging.getLogger(__name__)

TRAIN_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg")
EVAL_PHOTOS = ("motorcycle_left.png", "ihc.png")


def make_srgan_demo(out: str | Path, n_train: int = 48, size: int = 128, eval_size: int = 128, seed: int = 0) -> Path:
    """Write ``out/train`` (HR training images) and ``out/val`` (held-out HR evaluation images).

    Args:
        out: the dataset folder.
        n_train: training images, spread evenly over :data:`TRAIN_PHOTOS`.
        size: side of the square training images (>= the recipe's HR crop, 96 by default).
        eval_size: side of the evaluation images; two per photo of :data:`EVAL_PHOTOS`: the whole
            photo resized to it (bicubic), and a centre crop of that side at native resolution.
        seed: seed of the training crops (their position and scale).

    Returns:
        ``out``.
    """
    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    train = out / "train"
    train.mkdir(parents=True, exist_ok=True)
    per_photo = [n_train // len(TRAIN_PHOTOS) + (1 if i < n_train % len(TRAIN_PHOTOS) else 0)
                 for i in range(len(TRAIN_PHOTOS))]
    k = 0
    for name, n in zip(TRAIN_PHOTOS, per_photo):
        for crop in _crops(skimage_photo(name), n, size, (0.0, 1.0), gen):
            crop.save(train / f"{k:04d}.png")
            k += 1
    val = out / "val"
    val.mkdir(parents=True, exist_ok=True)
    for name in EVAL_PHOTOS:
        photo = skimage_photo(name)
        stem = Path(name).stem
        photo.resize((eval_size, eval_size), Image.Resampling.BICUBIC).save(val / f"{stem}_whole.png")
        w, h = photo.size
        left, top = (w - eval_size) // 2, (h - eval_size) // 2
        photo.crop((left, top, left + eval_size, top + eval_size)).save(val / f"{stem}_crop.png")
    log.info("wrote the srgan demo data to %s (%d training images of %d px, %d held-out evaluation images of %d px)",
             out, n_train, size, 2 * len(EVAL_PHOTOS), eval_size)
    return out
