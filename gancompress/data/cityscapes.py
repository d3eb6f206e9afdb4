"""Converting the raw Cityscapes download to the pix2pix aligned layout.

Input (as Cityscapes ships it): ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
``gtFine/<split>/<city>/*_gtFine_color.png`` (+ ``*_gtFine_labelIds.png``).
Output: ``<out>/<split>/<name>.png`` = photo | colour label map, each ``size`` x ``size`` (so
``data.direction: BtoA`` makes labels the input), and ``<out>/<split>_trainids/<name>.png``, the
label at full resolution as 19 trainIds (255 = ignore), for the mIoU protocol.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import decode_image, load_rgb

log = logging.getLogger(__name__)

# labelId -> trainId, from the Cityscapes definition (cityscapesscripts/helpers/labels.py).
LABEL_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LAYOUT = ("<cityscapes>/leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
          "<cityscapes>/gtFine/<split>/<city>/*_gtFine_color.png (download leftImg8bit_trainvaltest.zip and "
          "gtFine_trainvaltest.zip from cityscapes-dataset.com and unzip both into one folder)")

REFETCH = "unzip the archive again (the file is damaged)"


def trainid_lookup() -> np.ndarray:
    table = np.full(256, 255, dtype=np.uint8)
    for label, train in LABEL_TO_TRAINID.items():
        table[label] = train
    return table


def convert_cityscapes(src: str | Path, out: str | Path, splits=("train", "val"), size: int = 256) -> dict:
    """Write the aligned layout; returns the number of pairs per split."""
    src, out = Path(src), Path(out)
    table = trainid_lookup()
    counts = {}
    for split in splits:
        photos_dir = src / "leftImg8bit" / split
        if not photos_dir.is_dir():
            raise DataError(f"{photos_dir}: folder not found; expected {LAYOUT}")
        photos = sorted(photos_dir.glob("*/*_leftImg8bit.png"))
        if not photos:
            raise DataError(f"{photos_dir}: no *_leftImg8bit.png files; expected {LAYOUT}")
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / f"{split}_trainids").mkdir(parents=True, exist_ok=True)
        for photo_path in photos:
            stem = photo_path.name[: -len("_leftImg8bit.png")]
            label_dir = src / "gtFine" / split / photo_path.parent.name
            color_path = label_dir / f"{stem}_gtFine_color.png"
            ids_path = label_dir / f"{stem}_gtFine_labelIds.png"
            if not color_path.is_file():
                raise DataError(f"{color_path}: label map missing for {photo_path.name}; expected {LAYOUT}")
            # Bounded, one-line errors naming the file for truncated or oversized downloads.
            photo = load_rgb(photo_path, True, REFETCH).resize((size, size), Image.Resampling.BICUBIC)
            colour = load_rgb(color_path, True, REFETCH).resize((size, size), Image.Resampling.NEAREST)
            pair = Image.new("RGB", (2 * size, size))
            pair.paste(photo, (0, 0))
            pair.paste(colour, (size, 0))
            pair.save(out / split / f"{stem}.png")
            if ids_path.is_file():
                ids = decode_image(ids_path, REFETCH)
                Image.fromarray(table[np.asarray(ids)]).save(out / f"{split}_trainids" / f"{stem}.png")
        counts[split] = len(photos)
        log.info("%s: %d pairs", split, len(photos))
    return counts
