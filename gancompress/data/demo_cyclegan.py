"""The CycleGAN demo's two domains, made from textures that ship with scikit-image.

Domain A is grass (``grass.png``) tinted green, domain B is gravel (``gravel.png``) tinted sand:
two real textures, unpaired, so the demo learns grass -> gravel and back. Training crops come
from the left 80 % of each texture and test crops from the held-out right 20 %.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import ImageOps

from .demo import _crops, skimage_photo

log = logging.getLogger(__name__)

# domain -> (scikit-image texture, colour of its darkest and of its brightest grey)
DOMAINS = {
    "A": ("grass.png", (18, 38, 8), (165, 235, 110)),
    "B": ("gravel.png", (45, 35, 25), (245, 225, 190)),
}


def make_cyclegan_demo(out: str | Path, n_train: int = 64, n_test: int = 16, size: int = 32, seed: int = 0) -> Path:
    """Write ``out/trainA``, ``trainB``, ``testA``, ``testB`` (the unaligned layout).

    Args:
        out: the dataset folder.
        n_train, n_test: images per domain in each split.
        size: side of the square RGB images.
        seed: seed of the random crops (their position and scale).

    Returns:
        ``out``.
    """
    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    for domain, (texture, dark, bright) in DOMAINS.items():
        photo = ImageOps.colorize(skimage_photo(texture).convert("L"), dark, bright)
        for split, count, region in (("train", n_train, (0.0, 0.8)), ("test", n_test, (0.8, 1.0))):
            folder = out / f"{split}{domain}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, crop in enumerate(_crops(photo, count, size, region, gen)):
                crop.save(folder / f"{k:04d}.png")
    log.info("wrote the cyclegan demo data to %s (%d train and %d test images per domain, %dx%d)",
             out, n_train, n_test, size, size)
    return out
