"""Reading image folders safely, and seeded augmentation.

Every dataset item is addressed by ``(index, seed)``: the seed drives that item's random crop and
flip, so a batch is the same whether it is loaded now, after a resume, or by another worker.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: Path, what: str) -> list[Path]:
    """Image files of ``folder`` (sorted); DataError if it is missing or holds none.

    Args:
        folder: the folder.
        what: how the message names the folder's role, e.g. "the training split of data.root".
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found ({what})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in {what}")
    return files


def _check_header(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            mode, size = im.mode, im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}); remove it or set "
                        "data.on_bad_image: skip") from None
    if mode != "RGB":
        raise DataError(f"{path}: image mode {mode} in an RGB dataset; convert it to RGB or set "
                        "data.on_bad_image: skip")
    return size


def screen_images(files: list[Path], on_bad: str, check=None) -> list[Path]:
    """Keep the files whose header reads as RGB (and pass ``check(path, size)``).

    With ``on_bad`` 'error' the first bad file raises DataError naming it; with 'skip' bad files
    are dropped and counted in a warning.
    """
    good, bad = [], []
    for path in files:
        try:
            size = _check_header(path)
            if check is not None:
                check(path, size)
        except DataError:
            if on_bad == "error":
                raise
            bad.append(path)
            continue
        good.append(path)
    if bad:
        log.warning("skipped %d bad image(s) (data.on_bad_image: skip), first: %s", len(bad), bad[0])
    if not good:
        raise DataError(f"{files[0].parent}: every image was unreadable or not RGB")
    return good


def load_rgb(path: Path) -> Image.Image:
    """Decode an image fully; DataError names the file if it is truncated or corrupt."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                raise DataError(f"{path}: image mode {im.mode} in an RGB dataset; convert it to RGB")
            return im.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc}); remove or replace it, or set "
                        "data.on_bad_image: skip") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    t = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return t * 2.0 - 1.0


class Augment:
    """Resize to ``load_size``, random crop ``crop_size``, random horizontal flip, from a seed.

    The same seed gives the same crop and flip, so paired images (A and B) stay aligned.
    """

    def __init__(self, load_size: int, crop_size: int, flip: bool, train: bool):
        self.load_size, self.crop_size, self.flip, self.train = load_size, crop_size, flip, train

    def __call__(self, images: list[Image.Image], seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        size = self.load_size
        if self.train:
            span = max(0, size - self.crop_size)
            top = int(torch.randint(0, span + 1, (1,), generator=gen))
            left = int(torch.randint(0, span + 1, (1,), generator=gen))
            flip = self.flip and bool(torch.rand((), generator=gen) < 0.5)
        else:
            top = left = max(0, size - self.crop_size) // 2
            flip = False
        out = []
        for img in images:
            img = TF.resize(img, [size, size], interpolation=TF.InterpolationMode.BICUBIC)
            img = TF.crop(img, top, left, self.crop_size, self.crop_size)
            if flip:
                img = TF.horizontal_flip(img)
            out.append(to_tensor(img))
        return out


def item_key(key) -> tuple[int, int]:
    """Accept ``index`` or ``(index, seed)``; plain indices get seed = index (evaluation)."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), int(key)
