"""Super-resolution data: folders of high-resolution images; the low-resolution input is made from them.

Layout::

    <root>/<train_split>/*.png|jpg   HR training photos (COCO train2014 in the paper recipe)
    <root>/<eval_split>/*.png|jpg    HR evaluation images (Set5, Set14, B100, Urban100, ...)

Training items are random ``hr_crop`` x ``hr_crop`` crops of an HR image (optionally flipped); the
LR input is the crop downscaled by ``1/scale``. Evaluation items are whole images, cut at the
bottom and right to a multiple of ``scale`` (the usual "modcrop"), and their downscaled LR.

Downscaling is PIL's bicubic resize (``Image.Resampling.BICUBIC``) on the 8-bit image, for training
and evaluation alike; PIL widens the kernel by the reduction factor, so the reduction is
antialiased like MATLAB's ``imresize``. The bicubic baseline (:func:`bicubic_upscale`) upsamples
the same 8-bit LR image with the same PIL filter.

Images are converted to RGB (COCO and Set14 hold a few grayscale images; they become three equal
channels). Images too small for a crop are skipped and counted in one log line; unreadable,
truncated or corrupted files (see ``images.check_image``) follow ``data.on_bad_image``: 'error'
names the file, 'skip' leaves it out (a file that passes the screening but still fails to decode
when its item is loaded is replaced by the next readable image, with a warning).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .images import ImageSource, check_image, item_key, list_images, load_rgb, to_tensor

log = logging.getLogger(__name__)

LAYOUT = ("<root>/<split>/*.png|jpg, one folder of high-resolution images per split (e.g. train2014/, "
          "Set14/; the LR input is made by bicubic downscaling); gancompress make-demo-data srgan writes one")

#: Smallest side an evaluation image may have: the 11x11 SSIM window must fit after a border of
#: ``scale`` pixels is cropped on each side.
SSIM_WINDOW = 11


def downscale(img: Image.Image, scale: int) -> Image.Image:
    """PIL bicubic reduction by ``scale`` (image sides must be multiples of it)."""
    w, h = img.size
    return img.resize((w // scale, h // scale), Image.Resampling.BICUBIC)


def modcrop(img: Image.Image, scale: int) -> Image.Image:
    """Cut the bottom and right edges so both sides are multiples of ``scale``."""
    w, h = img.size
    return img.crop((0, 0, w - w % scale, h - h % scale))


def _to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> 8-bit RGB PIL image (exact for tensors made by ``to_tensor``)."""
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(arr.permute(1, 2, 0).numpy()))


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline: PIL bicubic upsampling of 8-bit LR images.

    Args:
        lr: (N, 3, h, w) in [-1, 1], on any device.
        scale: upscaling factor.

    Returns:
        (N, 3, scale*h, scale*w) in [-1, 1], on ``lr``'s device.
    """
    h, w = lr.shape[-2:]
    out = [to_tensor(_to_pil(x).resize((w * scale, h * scale), Image.Resampling.BICUBIC)) for x in lr]
    return torch.stack(out).to(lr.device)


def load_image(path: Path) -> Image.Image:
    """Decode an image fully and convert it to RGB; DataError names the file if it is corrupt."""
    return load_rgb(path, convert=True)


class SRDataset(Dataset):
    """HR images and their bicubic LR versions.

    Args:
        root: dataset folder holding one sub-folder per split.
        split: sub-folder name ('train2014', 'Set14', ...).
        scale: downscaling factor (4 for SRGAN).
        hr_crop: side of the HR crops (``model.lr_crop * scale``, 96 for SRGAN); random crops when
            ``train``, centre crops otherwise; 0 keeps whole images (cut to a multiple of
            ``scale``), for evaluation.
        train: random crop positions and flips, drawn from each item's seed.
        flip: random horizontal flips when ``train``.
        max_items: keep only the first N files (0 = all).
        on_bad_image: 'error' or 'skip' unreadable files.

    Items, addressed by ``index`` or ``(index, seed)``: {"lr": (3, H/scale, W/scale) in [-1, 1],
    "hr": (3, H, W) in [-1, 1], "index": the file's index}; H = W = ``hr_crop`` when it is set.
    Images with a side under ``hr_crop`` (or, when 0, under ``2*scale + 11`` so that SSIM can be
    measured) are skipped.
    """

    def __init__(self, root: str | Path, split: str, scale: int = 4, hr_crop: int = 96, train: bool = True,
                 flip: bool = True, max_items: int = 0, on_bad_image: str = "error"):
        if not str(root):
            raise DataError(f"data.root is empty: set it to a folder in the super-resolution layout {LAYOUT}")
        if hr_crop % scale:
            raise DataError(f"the HR crop {hr_crop} is not a multiple of the scale {scale}")
        folder = Path(root) / split
        files = list_images(folder, f"split '{split}' of data.root; expected {LAYOUT}")
        if max_items:
            files = files[:max_items]
        self.scale, self.hr_crop, self.train, self.flip = scale, hr_crop, train, flip
        self.on_bad_image = on_bad_image
        min_side = hr_crop or 2 * scale + SSIM_WINDOW
        good, bad, small = [], [], 0
        for path in files:
            try:
                _, size = check_image(path)
            except DataError as exc:
                if on_bad_image == "error":
                    raise
                bad.append(exc)
                continue
            if min(size) < min_side:
                small += 1
            else:
                good.append(path)
        if bad:
            log.warning("%s: skipped %d unreadable image(s) (data.on_bad_image: skip), first: %s",
                        folder, len(bad), bad[0])
        if small:
            log.info("%s: skipped %d image(s) with a side under %d px", folder, small, min_side)
        if not good:
            raise DataError(f"{folder}: no readable image has both sides >= {min_side} px "
                            f"({len(bad)} unreadable, {small} too small)")
        self.files = good
        self.source = ImageSource(good, on_bad_image, convert=True)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict:
        index, seed = item_key(key)
        index, img = self.source.load(index)
        crop = self.hr_crop
        if crop:
            w, h = img.size
            if self.train:
                gen = torch.Generator().manual_seed(seed)
                top = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
                left = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
                flip = self.flip and bool(torch.rand((), generator=gen) < 0.5)
            else:
                top, left, flip = (h - crop) // 2, (w - crop) // 2, False
            img = img.crop((left, top, left + crop, top + crop))
            if flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            img = modcrop(img, self.scale)
        return {"lr": to_tensor(downscale(img, self.scale)), "hr": to_tensor(img), "index": torch.tensor(index)}
