"""The SAGAN demo's faces, made from images shipped in scikit-image (nothing is downloaded).

``lfw_subset.npy`` holds 200 grayscale 25x25 crops from Labeled Faces in the Wild: the first
100 are faces, the other 100 are NOT (scikit-image's face-detection negatives), so only the
first 100 are used; each becomes an RGB image (the channel repeated) upscaled to 64x64. A few jittered crops of the
astronaut photo's face (Eileen Collins, the one colour face scikit-image ships) are added, so the
set is not purely grayscale. Everything is written as PNGs to one flat folder, the layout of
CelebA's ``img_align_celeba/`` that :class:`~gancompress.data.imagefolder.ImageFolderDataset`
reads.

FID/KID need an image embedding and Inception's weights cannot be fetched offline, so the maker
also trains a small feature net (``features.pt``, :mod:`gancompress.metrics.features`) to tell
faces from non-faces, in grayscale (LFW's faces and its 100 non-face patches) and in colour (the
astronaut's face and crops of other colour photos): its features respond to face structure, not
only to colour. Figures measured with it are not comparable with published FID.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import MissingFileError
from .makers import _crops, skimage_photo

log = logging.getLogger(__name__)

# The astronaut's face in astronaut.png (512x512): left, top, side of a square around it.
ASTRONAUT_FACE = (170, 45, 120)


LFW_FACES = 100  # lfw_subset.npy: images 0-99 are faces, 100-199 non-faces
#: Colour photos (none shows a face) whose crops are the feature net's colour non-faces, with the
#: astronaut photo's lower part (suit, flag; below its face).
NON_FACE_PHOTOS = ("coffee.png", "rocket.jpg", "motorcycle_left.png")
ASTRONAUT_BELOW_FACE = 300
#: The feature net: images per class it trains on and holds out, epochs, input side.
FEATURE_TRAIN_COLOUR = 48
FEATURE_HELD_OUT_COLOUR = 16
FEATURE_HELD_OUT_LFW = 20   # the last 20 faces and the last 20 non-faces of lfw_subset.npy
FEATURE_EPOCHS = 12
FEATURE_SIZE = 32


def _lfw_faces() -> np.ndarray:
    """(100, 25, 25) float faces in [0, 1]: the face half of scikit-image's ``lfw_subset.npy``."""
    return _lfw_subset()[:LFW_FACES]


def _lfw_subset() -> np.ndarray:
    """(200, 25, 25) float images in [0, 1]: scikit-image's ``lfw_subset.npy`` (100 faces, then 100 non-faces)."""
    try:
        import skimage
    except ImportError:
        raise MissingFileError("the SAGAN demo data is made from scikit-image's faces: pip install "
                               "'gancompress[demo]' (or scikit-image)") from None
    path = Path(skimage.__file__).parent / "data" / "lfw_subset.npy"
    if not path.is_file():
        raise MissingFileError(f"{path}: face set missing from the scikit-image install; reinstall scikit-image")
    return np.load(path)


def _lfw_image(face: np.ndarray, size: int) -> Image.Image:
    """One 25x25 LFW crop as the demo stores it: 8-bit grey, bicubic to ``size``, RGB."""
    gray = Image.fromarray((np.clip(face, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L")
    return gray.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")


def _astronaut_crops(photo: Image.Image, count: int, size: int, gen: torch.Generator) -> list[Image.Image]:
    """``count`` jittered crops (shift up to 1/8 of the face box, scale 0.9-1.1) of the astronaut's face."""
    left, top, side = ASTRONAUT_FACE
    out = []
    for _ in range(count):
        scale = 0.9 + 0.2 * float(torch.rand((), generator=gen))
        s = int(round(side * scale))
        dx, dy = ((torch.rand(2, generator=gen) - 0.5) * side / 4).round().int().tolist()
        x0, y0 = left + (side - s) // 2 + dx, top + (side - s) // 2 + dy
        out.append(photo.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.Resampling.BICUBIC))
    return out


def make_sagan_demo(out: str | Path, size: int = 64, n_lfw: int = LFW_FACES, n_astronaut: int = 28,
                    seed: int = 0, feature_epochs: int = FEATURE_EPOCHS) -> Path:
    """Write ``n_lfw`` LFW faces and ``n_astronaut`` astronaut face crops as ``size``-pixel PNGs,
    and the FID feature net ``out/features.pt``.

    Args:
        out: the folder to write (created; existing PNGs of the same names are replaced).
        size: side of the written images.
        n_lfw: how many of the 100 LFW faces to use (the first ones).
        n_astronaut: how many jittered crops (shift up to 1/8 of the face box, scale 0.9-1.1) of
            the astronaut's face to add.
        seed: seed of the jitter and of the feature net.
        feature_epochs: epochs of the feature net (:func:`train_sagan_features`); 0 writes none.

    Returns:
        ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    faces = _lfw_faces()[:n_lfw]
    for i, face in enumerate(faces):
        _lfw_image(face, size).save(out / f"lfw_{i:04d}.png")
    photo = skimage_photo("astronaut.png")
    gen = torch.Generator().manual_seed(seed)
    for i, crop in enumerate(_astronaut_crops(photo, n_astronaut, size, gen)):
        crop.save(out / f"astronaut_{i:04d}.png")
    log.info("wrote the SAGAN demo faces to %s (%d LFW, %d astronaut)", out, len(faces), n_astronaut)
    if feature_epochs:
        stats = train_sagan_features(out / "features.pt", size=size, seed=seed, epochs=feature_epochs)
        log.info("feature net %s: %.1f%% of held-out images classified right (%d classes)", out / "features.pt",
                 100 * stats["held_out_accuracy"], len(stats["classes"]))
    return out


def _tensor(images: list[Image.Image], size: int) -> torch.Tensor:
    """(N, 3, size, size) float in [0, 1] of RGB PIL images, resized as the feature extractor resizes."""
    from ..metrics.features import resize_to

    x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB")).copy()) for im in images])
    return resize_to(x.permute(0, 3, 1, 2).float() / 255.0, size)


def feature_classes(size: int, seed: int, n_colour: int, n_held_out_colour: int,
                    n_held_out_lfw: int = FEATURE_HELD_OUT_LFW) -> tuple[dict, dict]:
    """The feature net's training and held-out images, made at the demo's image side ``size``.

    Classes: "LFW face" and "LFW non-face" (lfw_subset.npy's two halves; the last
    ``n_held_out_lfw`` of each held out), "astronaut face" (jittered crops as the demo's, drawn
    from their own stream) and "colour photo, no face" (crops of :data:`NON_FACE_PHOTOS` and of
    the astronaut photo below the face; held-out crops from each photo's right 20 %).

    Returns:
        (train, held_out): class name -> list of ``size``-pixel RGB PIL images.
    """
    lfw = _lfw_subset()
    faces, non_faces = lfw[:LFW_FACES], lfw[LFW_FACES:]
    cut = LFW_FACES - n_held_out_lfw
    train = {"LFW face": [_lfw_image(f, size) for f in faces[:cut]],
             "LFW non-face": [_lfw_image(f, size) for f in non_faces[:cut]]}
    held = {"LFW face": [_lfw_image(f, size) for f in faces[cut:]],
            "LFW non-face": [_lfw_image(f, size) for f in non_faces[cut:]]}
    gen = torch.Generator().manual_seed(seed + 1)
    astronaut = skimage_photo("astronaut.png")
    train["astronaut face"] = _astronaut_crops(astronaut, n_colour, size, gen)
    held["astronaut face"] = _astronaut_crops(astronaut, n_held_out_colour, size, gen)
    photos = [skimage_photo(n) for n in NON_FACE_PHOTOS]
    photos.append(astronaut.crop((0, ASTRONAUT_BELOW_FACE, astronaut.width, astronaut.height)))
    train["colour photo, no face"], held["colour photo, no face"] = [], []
    for k, photo in enumerate(photos):
        for split, total, region in ((train, n_colour, (0.0, 0.8)), (held, n_held_out_colour, (0.8, 1.0))):
            n = total // len(photos) + (1 if k < total % len(photos) else 0)
            split["colour photo, no face"] += _crops(photo, n, size, region, gen)
    return train, held


def train_sagan_features(out: str | Path, size: int = 64, seed: int = 0, epochs: int = FEATURE_EPOCHS,
                         feature_size: int = FEATURE_SIZE, n_colour: int = FEATURE_TRAIN_COLOUR,
                         n_held_out_colour: int = FEATURE_HELD_OUT_COLOUR) -> dict:
    """Train the SAGAN demo's FID feature net (face vs non-face, grey and colour) and write it to ``out``.

    Args:
        out: checkpoint path.
        size: side the images are made at (the demo's image side), before resizing to ``feature_size``.
        seed: seed of the crops and of the training.
        epochs: training epochs.
        feature_size: the net's input side (the extractor resizes generated images to it).
        n_colour, n_held_out_colour: astronaut-face and colour non-face images trained on / held out.

    Returns:
        the net's meta (:func:`~gancompress.metrics.features.train_feature_net`), with its
        held-out accuracy.
    """
    from ..metrics.features import train_feature_net

    train, held = feature_classes(size, seed, n_colour, n_held_out_colour)
    return train_feature_net({c: _tensor(v, feature_size) for c, v in train.items()}, out, epochs=epochs, seed=seed,
                             held_out={c: _tensor(v, feature_size) for c, v in held.items()},
                             trained_on=f"the SAGAN demo's images: scikit-image's lfw_subset faces and non-faces, "
                                        f"the astronaut's face and colour photos without faces, made at {size}x{size} "
                                        f"and resized to {feature_size}x{feature_size}")
