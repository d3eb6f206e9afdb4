"""The SAGAN demo's faces, made from images shipped in scikit-image (nothing is downloaded).

``lfw_subset.npy`` holds 200 grayscale 25x25 crops from Labeled Faces in the Wild: the first
100 are faces, the other 100 are NOT (scikit-image's face-detection negatives), so only the
first 100 are used; each becomes an RGB image (the channel repeated) upscaled to 64x64. A few jittered crops of the
astronaut photo's face (Eileen Collins, the one colour face scikit-image ships) are added, so the
set is not purely grayscale. Everything is written as PNGs to one flat folder, the layout of
CelebA's ``img_align_celeba/`` that :class:`~gancompress.data.imagefolder.ImageFolderDataset`
reads.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import MissingFileError
from .demo import skimage_photo

log = logging.getLogger(__name__)

# The astronaut's face in astronaut.png (512x512): left, top, side of a square around it.
ASTRONAUT_FACE = (170, 45, 120)


LFW_FACES = 100  # lfw_subset.npy: images 0-99 are faces, 100-199 non-faces


def _lfw_faces() -> np.ndarray:
    """(100, 25, 25) float faces in [0, 1]: the face half of scikit-image's ``lfw_subset.npy``."""
    try:
        import skimage
    except ImportError:
        raise MissingFileError("the SAGAN demo data is made from scikit-image's faces: pip install "
                               "'gancompress[demo]' (or scikit-image)") from None
    path = Path(skimage.__file__).parent / "data" / "lfw_subset.npy"
    if not path.is_file():
        raise MissingFileError(f"{path}: face set missing from the scikit-image install; reinstall scikit-image")
    return np.load(path)[:LFW_FACES]


def make_sagan_demo(out: str | Path, size: int = 64, n_lfw: int = LFW_FACES, n_astronaut: int = 28,
                    seed: int = 0) -> Path:
    """Write ``n_lfw`` LFW faces and ``n_astronaut`` astronaut face crops as ``size``-pixel PNGs.

    Args:
        out: the folder to write (created; existing PNGs of the same names are replaced).
        size: side of the written images.
        n_lfw: how many of the 100 LFW faces to use (the first ones).
        n_astronaut: how many jittered crops (shift up to 1/8 of the face box, scale 0.9-1.1) of
            the astronaut's face to add.
        seed: seed of the jitter.

    Returns:
        ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faces = _lfw_faces()[:n_lfw]
    for i, face in enumerate(faces):
        gray = Image.fromarray((np.clip(face, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")
        gray.resize((size, size), Image.Resampling.BICUBIC).convert("RGB").save(out / f"lfw_{i:04d}.png")
    photo = skimage_photo("astronaut.png")
    gen = torch.Generator().manual_seed(seed)
    left, top, side = ASTRONAUT_FACE
    for i in range(n_astronaut):
        scale = 0.9 + 0.2 * float(torch.rand((), generator=gen))
        s = int(round(side * scale))
        dx, dy = ((torch.rand(2, generator=gen) - 0.5) * side / 4).round().int().tolist()
        x0, y0 = left + (side - s) // 2 + dx, top + (side - s) // 2 + dy
        crop = photo.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.Resampling.BICUBIC)
        crop.save(out / f"astronaut_{i:04d}.png")
    log.info("wrote the SAGAN demo faces to %s (%d LFW, %d astronaut)", out, len(faces), n_astronaut)
    return out
