"""The pix2pix aligned layout: each file holds A|B side by side."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .images import Augment, ImageSource, item_key, list_images, screen_images

LAYOUT = ("<root>/<split>/*.png|jpg (train/, val/), each image A|B side by side (A left, B right, equal halves; "
          "pix2pix's layout); gancompress make-demo-data pix2pix writes one, gancompress prepare-cityscapes "
          "converts Cityscapes")


def _even_width(path: Path, size: tuple[int, int]) -> None:
    if size[0] % 2:
        raise DataError(f"{path}: width {size[0]} is odd, so it is not two equal halves A|B ({LAYOUT})")


class AlignedDataset(Dataset):
    """Paired images A|B.

    Args:
        root: dataset folder holding one sub-folder per split.
        split: 'train', 'val', ...
        direction: 'AtoB' (input is the left half) or 'BtoA'.
        load_size, crop_size, flip: augmentation (crop and flip only when ``train``).
        train: augment or not.
        max_items: keep only the first N files (0 = all).
        on_bad_image: 'error' or 'skip' (bad files are screened out when the dataset is built; one
            that still fails to decode when loaded is replaced by the next file that decodes).

    Items: {"A": (3, crop, crop) input in [-1, 1], "B": target, "index": the file's index (the
    replacement's, when a bad file was skipped)}.
    """

    def __init__(self, root: str | Path, split: str, direction: str = "AtoB", load_size: int = 286,
                 crop_size: int = 256, flip: bool = True, train: bool = True, max_items: int = 0,
                 on_bad_image: str = "error"):
        if not str(root):
            raise DataError(f"data.root is empty: set it to a folder in the aligned layout {LAYOUT}")
        folder = Path(root) / split
        files = list_images(folder, f"split '{split}' of data.root; expected {LAYOUT}")
        if max_items:
            files = files[:max_items]
        self.files = screen_images(files, on_bad_image, check=_even_width)
        self.source = ImageSource(self.files, on_bad_image)
        self.direction = direction
        self.augment = Augment(load_size, crop_size, flip, train)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict:
        index, seed = item_key(key)
        index, img = self.source.load(index)
        w, h = img.size
        a, b = img.crop((0, 0, w // 2, h)), img.crop((w // 2, 0, w, h))
        if self.direction == "BtoA":
            a, b = b, a
        a_t, b_t = self.augment([a, b], seed)
        return {"A": a_t, "B": b_t, "index": torch.tensor(index)}
