"""The CycleGAN demo's two domains, made from textures that ship with scikit-image.

Domain A is grass (``grass.png``) tinted green, domain B is gravel (``gravel.png``) tinted sand:
two real textures, unpaired, so the demo learns grass -> gravel and back. Training crops come
from the left 80 % of each texture and test crops from the held-out right 20 %.

FID/KID need an image embedding and Inception's weights cannot be fetched offline, so the maker
also trains a small feature net (``features.pt``, :mod:`gancompress.metrics.features`) to tell
apart every texture (grass, gravel, brick) in both tints: its features respond to texture and to
colour separately, so a generator that recolours grass without making gravel is seen. Figures
measured with it are not comparable with published FID.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image, ImageOps

from .makers import _crops, skimage_photo

log = logging.getLogger(__name__)

# domain -> (scikit-image texture, colour of its darkest and of its brightest grey)
DOMAINS = {
    "A": ("grass.png", (18, 38, 8), (165, 235, 110)),
    "B": ("gravel.png", (45, 35, 25), (245, 225, 190)),
}
#: The feature net's classes: every texture below in each domain's tint (both domains included).
FEATURE_TEXTURES = ("grass.png", "gravel.png", "brick.png")
#: Images per feature-net class: crops of the training band (left 80 %) and of the held-out band.
FEATURE_TRAIN_CROPS = 48
FEATURE_HELD_OUT_CROPS = 16
FEATURE_EPOCHS = 12


def make_cyclegan_demo(out: str | Path, n_train: int = 64, n_test: int = 16, size: int = 32, seed: int = 0,
                       feature_epochs: int = FEATURE_EPOCHS) -> Path:
    """Write ``out/trainA``, ``trainB``, ``testA``, ``testB`` (the unaligned layout) and the FID
    feature net ``out/features.pt``.

    Args:
        out: the dataset folder.
        n_train, n_test: images per domain in each split.
        size: side of the square RGB images.
        seed: seed of the random crops (their position and scale) and of the feature net.
        feature_epochs: epochs of the feature net (:func:`train_cyclegan_features`); 0 writes none.

    Returns:
        ``out``.
    """
    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    for domain, (texture, dark, bright) in DOMAINS.items():
        photo = _tinted(texture, dark, bright)
        for split, count, region in (("train", n_train, (0.0, 0.8)), ("test", n_test, (0.8, 1.0))):
            folder = out / f"{split}{domain}"
            folder.mkdir(parents=True, exist_ok=True)
            for k, crop in enumerate(_crops(photo, count, size, region, gen)):
                crop.save(folder / f"{k:04d}.png")
    log.info("wrote the cyclegan demo data to %s (%d train and %d test images per domain, %dx%d)",
             out, n_train, n_test, size, size)
    if feature_epochs:
        stats = train_cyclegan_features(out / "features.pt", size=size, seed=seed, epochs=feature_epochs)
        log.info("feature net %s: %.1f%% of held-out crops classified right (%d classes)", out / "features.pt",
                 100 * stats["held_out_accuracy"], len(stats["classes"]))
    return out


def _tinted(texture: str, dark, bright) -> Image.Image:
    """A scikit-image texture in grey, its darkest grey mapped to ``dark`` and its brightest to ``bright``."""
    return ImageOps.colorize(skimage_photo(texture).convert("L"), dark, bright)


def feature_classes(size: int, count: int, region: tuple[float, float], gen: torch.Generator,
                    textures=FEATURE_TEXTURES) -> dict[str, torch.Tensor]:
    """The feature net's classes: ``count`` crops of each texture in each domain's tint.

    Crops are drawn as the domains' own (:func:`~gancompress.demo.makers._crops`) from the
    horizontal band ``region``: half from the whole band, at the training images' mix of scales,
    half from sub-bands 0.2 wide, at the close-up scales of the test images (cut from a band
    0.2 wide).

    Returns:
        class name (e.g. "grass.png tinted A") -> (count, 3, size, size) float in [0, 1].
    """
    lo, hi = region
    bands = [(lo + 0.2 * i, min(lo + 0.2 * (i + 1), hi)) for i in range(max(round((hi - lo) / 0.2), 1))]
    per_band = [count // 2 // len(bands) + (1 if i < count // 2 % len(bands) else 0) for i in range(len(bands))]
    classes = {}
    for texture in textures:
        for domain, (_, dark, bright) in DOMAINS.items():
            photo = _tinted(texture, dark, bright)
            crops = _crops(photo, count - count // 2, size, region, gen)
            for band, n in zip(bands, per_band):
                crops += _crops(photo, n, size, band, gen)
            classes[f"{texture} tinted {domain}"] = torch.stack([_to_tensor(c) for c in crops])
    return classes


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float in [0, 1] of an RGB PIL image."""
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(
        image.height, image.width, 3).permute(2, 0, 1).float() / 255.0


def train_cyclegan_features(out: str | Path, size: int = 32, seed: int = 0, epochs: int = FEATURE_EPOCHS,
                            n_train: int = FEATURE_TRAIN_CROPS, n_held_out: int = FEATURE_HELD_OUT_CROPS) -> dict:
    """Train the demo's FID feature net on crops of the textures and write it to ``out``.

    Training crops come from the training band (left 80 %) of each tinted texture, held-out crops
    from the test band (right 20 %), drawn from their own random stream (``seed``), so the
    dataset's images are not touched.

    Returns:
        the net's meta (:func:`~gancompress.metrics.features.train_feature_net`), with its
        held-out accuracy.
    """
    from ..metrics.features import train_feature_net

    gen = torch.Generator().manual_seed(seed + 1)
    train = feature_classes(size, n_train, (0.0, 0.8), gen)
    held_out = feature_classes(size, n_held_out, (0.8, 1.0), gen)
    return train_feature_net(train, out, epochs=epochs, seed=seed, held_out=held_out,
                             trained_on=f"the CycleGAN demo's textures ({', '.join(FEATURE_TEXTURES)}), each in "
                                        f"domain A's green tint and domain B's sand tint: {size}x{size} crops of the "
                                        f"textures' training band")
