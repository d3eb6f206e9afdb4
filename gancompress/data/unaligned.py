"""CycleGAN's unaligned layout: two folders of unpaired images per split.

Layout::

    <root>/trainA/*.png|jpg   domain A, training
    <root>/trainB/*.png|jpg   domain B, training
    <root>/testA/, testB/     the same for evaluation (any split name works: <root>/<split>A)

An item pairs one A image with one B image that has nothing to do with it. As in CycleGAN, the
dataset's length is the larger domain's size; the A image is ``index % len(A)`` and the B image
is either drawn at random from the item's seed (``pairing: random``, CycleGAN's default) or
``index % len(B)`` (``pairing: serial``). A and B get independent crops and flips.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .images import Augment, ImageSource, item_key, list_images, screen_images

LAYOUT = ("<root>/<split>A and <root>/<split>B (trainA/, trainB/, testA/, testB/), each a folder of RGB "
          ".png/.jpg images, unpaired (CycleGAN's layout); gancompress make-demo-data cyclegan writes one")

PAIRINGS = ("random", "serial")


def domain_files(root: str | Path, split: str, domain: str, max_items: int = 0,
                 on_bad_image: str = "error") -> list[Path]:
    """The screened image files of ``<root>/<split><domain>`` (sorted).

    Args:
        root: dataset folder.
        split: 'train', 'test', ...
        domain: 'A' or 'B'.
        max_items: keep only the first N files (0 = all).
        on_bad_image: 'error' or 'skip' (see ``images.screen_images``).

    Raises:
        DataError: the folder is missing or empty (naming it and the expected layout), or an image
            is unreadable.
    """
    if not str(root):
        raise DataError(f"data.root is empty: set it to a folder in the unaligned layout {LAYOUT}")
    folder = Path(root) / f"{split}{domain}"
    files = list_images(folder, f"domain {domain} of split '{split}' of data.root; expected {LAYOUT}")
    if max_items:
        files = files[:max_items]
    return screen_images(files, on_bad_image)


class UnalignedDataset(Dataset):
    """Unpaired images of two domains.

    Args:
        root: dataset folder holding ``<split>A`` and ``<split>B``.
        split: 'train', 'test', ...
        load_size, crop_size, flip: augmentation (random crop and flip only when ``train``).
        train: augment or centre-crop.
        pairing: 'random' (B drawn from the item's seed) or 'serial' (B is ``index % len(B)``).
        max_items: keep only the first N files of each domain (0 = all).
        on_bad_image: 'error' or 'skip' (as for ``AlignedDataset``).

    Items, addressed by ``index`` or ``(index, seed)``: {"A": (3, crop, crop) in [-1, 1],
    "B": (3, crop, crop) in [-1, 1], "index": the A file's index}.
    """

    def __init__(self, root: str | Path, split: str, load_size: int = 286, crop_size: int = 256,
                 flip: bool = True, train: bool = True, pairing: str = "random", max_items: int = 0,
                 on_bad_image: str = "error"):
        if pairing not in PAIRINGS:
            raise DataError(f"data.pairing: expected one of {', '.join(PAIRINGS)}, got {pairing!r}")
        self.files_a = domain_files(root, split, "A", max_items, on_bad_image)
        self.files_b = domain_files(root, split, "B", max_items, on_bad_image)
        self.source_a = ImageSource(self.files_a, on_bad_image)
        self.source_b = ImageSource(self.files_b, on_bad_image)
        self.pairing = pairing
        self.augment = Augment(load_size, crop_size, flip, train)

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def __getitem__(self, key) -> dict:
        index, seed = item_key(key)
        gen = torch.Generator().manual_seed(seed)
        index_a = index % len(self.files_a)
        if self.pairing == "random":
            index_b = int(torch.randint(0, len(self.files_b), (1,), generator=gen))
        else:
            index_b = index % len(self.files_b)
        # Two derived seeds: A and B are cropped and flipped independently.
        seed_a, seed_b = torch.randint(0, 2 ** 62, (2,), generator=gen).tolist()
        index_a, image_a = self.source_a.load(index_a)
        _, image_b = self.source_b.load(index_b)
        a = self.augment([image_a], seed_a)[0]
        b = self.augment([image_b], seed_b)[0]
        return {"A": a, "B": b, "index": torch.tensor(index_a)}


class DomainDataset(Dataset):
    """The images of one domain, each once, centre-cropped: what FID is computed on.

    Args:
        files: image files (see :func:`domain_files`).
        load_size, crop_size: resize then centre crop.

    Items: (3, crop, crop) in [-1, 1].
    """

    def __init__(self, files: list[Path], load_size: int, crop_size: int):
        self.files = list(files)
        self.source = ImageSource(self.files, "error")  # every image counts in FID: never substitute
        self.augment = Augment(load_size, crop_size, flip=False, train=False)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.augment([self.source.load(index)[1]], 0)[0]
