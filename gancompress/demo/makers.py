"""Small real-image datasets for the demos and tests, made from the photos shipped in scikit-image.

Nothing is downloaded: scikit-image installs these photos with the package.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from ..errors import MissingFileError

log = logging.getLogger(__name__)

PIX2PIX_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "ihc.png", "color.png")

# A fixed palette for the demo's label maps, one distinct colour per class (Cityscapes-like).
DEMO_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                (153, 153, 153), (250, 170, 30), (220, 220, 0))


def skimage_photo(name: str) -> Image.Image:
    """An RGB photo that ships inside scikit-image (``pip install scikit-image``)."""
    try:
        import skimage
    except ImportError:
        raise MissingFileError("the demo data is made from scikit-image's photos: pip install "
                               "'gancompress[demo]' (or scikit-image)") from None
    path = Path(skimage.__file__).parent / "data" / name
    if not path.is_file():
        raise MissingFileError(f"{path}: photo missing from the scikit-image install; reinstall scikit-image")
    with Image.open(path) as im:
        return im.convert("RGB")


def _crops(photo: Image.Image, count: int, size: int, region: tuple[float, float], gen: torch.Generator):
    """``count`` random square crops of side ``size`` from the horizontal band ``region`` of the photo.

    The crop side in the photo is drawn between ``size`` and half the photo's short side, then
    resized to ``size``, so crops show the photo at several scales.
    """
    w, h = photo.size
    x0, x1 = int(region[0] * w), int(region[1] * w)
    out = []
    for _ in range(count):
        max_side = max(size, min(x1 - x0, h) // 2)
        side = int(torch.randint(size, max_side + 1, (1,), generator=gen))
        left = int(torch.randint(x0, max(x0, x1 - side) + 1, (1,), generator=gen))
        top = int(torch.randint(0, max(0, h - side) + 1, (1,), generator=gen))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        out.append(crop)
    return out


def _label_map(photo: Image.Image, palette_img: Image.Image) -> Image.Image:
    """Colour-quantise to the shared palette, then paint each class with its demo colour."""
    idx = photo.quantize(palette=palette_img, dither=Image.Dither.NONE)
    flat = []
    for colour in DEMO_PALETTE:
        flat.extend(colour)
    flat.extend([0, 0, 0] * (256 - len(DEMO_PALETTE)))
    idx.putpalette(flat)
    return idx.convert("RGB")


def make_pix2pix_demo(out: str | Path, n_train: int = 64, n_val: int = 16, size: int = 64, seed: int = 0,
                      segmenter_epochs: int = 40) -> Path:
    """Write an aligned dataset (label map | photo) to ``out/train`` and ``out/val``.

    Label maps have ``len(DEMO_PALETTE)`` classes found by median-cut colour quantisation of all
    photos together. Training crops come from the left 80 % of each photo, validation crops from
    the held-out right 20 %. With ``segmenter_epochs`` > 0 it also trains the mIoU segmenter on
    the training photos (``out/segmenter.pt``, a small smp U-Net, no pretrained weights).
    """
    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    photos = [skimage_photo(n) for n in PIX2PIX_PHOTOS]
    mosaic = Image.new("RGB", (256 * len(photos), 256))
    for i, p in enumerate(photos):
        mosaic.paste(p.resize((256, 256)), (256 * i, 0))
    palette_img = mosaic.quantize(colors=len(DEMO_PALETTE), method=Image.Quantize.MEDIANCUT)
    for split, count, region in (("train", n_train, (0.0, 0.8)), ("val", n_val, (0.8, 1.0))):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        per_photo = [count // len(photos) + (1 if i < count % len(photos) else 0) for i in range(len(photos))]
        k = 0
        for photo, n in zip(photos, per_photo):
            for crop in _crops(photo, n, size, region, gen):
                pair = Image.new("RGB", (2 * size, size))
                pair.paste(_label_map(crop, palette_img), (0, 0))
                pair.paste(crop, (size, 0))
                pair.save(folder / f"{k:04d}.png")
                k += 1
    log.info("wrote the pix2pix demo data to %s (%d train, %d val)", out, n_train, n_val)
    if segmenter_epochs:
        from ..metrics.palette import Palette
        from ..metrics.segmenter_train import train_segmenter

        palette = Palette("demo", torch.tensor(DEMO_PALETTE, dtype=torch.long),
                          torch.arange(len(DEMO_PALETTE)), None)
        stats = train_segmenter(out / "train", out / "segmenter.pt", encoder="resnet18", palette=palette,
                                size=size, epochs=segmenter_epochs, batch_size=16, lr=3e-3, seed=seed)
        log.info("trained the demo segmenter: pixel accuracy %.1f%% on its training photos", stats["pixel_acc"])
    return out


# family -> "module:function" writing that family's demo data; resolved by get_demo_maker.
DEMO_MAKERS = {
    "pix2pix": "gancompress.demo.makers:make_pix2pix_demo",
    "cyclegan": "gancompress.demo.cyclegan:make_cyclegan_demo",
    "sagan": "gancompress.demo.sagan:make_sagan_demo",
    "srgan": "gancompress.demo.srgan:make_srgan_demo",
}


def get_demo_maker(family: str):
    """The function ``maker(out: Path) -> Path`` that writes ``family``'s demo data."""
    import importlib

    if family not in DEMO_MAKERS:
        raise KeyError(f"unknown family {family!r} (valid: {', '.join(sorted(DEMO_MAKERS))})")
    module, func = DEMO_MAKERS[family].split(":")
    return getattr(importlib.import_module(module), func)
