"""A folder of images for unconditional generation (CelebA's ``img_align_celeba/``, any photos).

Each item is one real image, centre-cropped, resized and randomly flipped, plus the latent code
the generator is fed in the same iteration. The code is drawn from the item's seed (see
:func:`~gancompress.data.images.item_key`), not from the global RNG, so a resumed run sees the
same codes, and the teacher and the student of stage 3 always share one code per sample.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from .images import ImageSource, item_key, list_images, screen_images, to_tensor


class ImageFolderDataset(Dataset):
    """Every image of one folder, as a square ``image_size`` RGB image in [-1, 1].

    Preprocessing (heykeetae's SAGAN on CelebA): centre crop ``center_crop`` pixels (0: no crop;
    clipped to the image's short side), resize to ``image_size`` (bicubic, antialiased), and with
    ``train`` a horizontal flip with probability 1/2.

    Args:
        folder: the folder holding the images (its sub-folders are not read).
        image_size: side of the returned images.
        center_crop: side of the centre crop taken before resizing; 0 keeps the whole image.
        flip: random horizontal flips when ``train``.
        train: augment or not.
        latent_dim: size of the latent code ``z`` each item carries; 0 for none.
        max_items: keep only the first N files in name order (0 = all).
        on_bad_image: 'error' (a bad file raises DataError naming it) or 'skip'.
        what: how error messages name the folder, e.g. "data.root".

    Items for key ``(index, seed)``: {"image": (3, image_size, image_size) in [-1, 1],
    "z": (latent_dim,) standard normal (only when ``latent_dim`` > 0), "index": int64 scalar}.
    The same seed gives the same flip and the same z.
    """

    def __init__(self, folder: str | Path, image_size: int, center_crop: int = 0, flip: bool = True,
                 train: bool = True, latent_dim: int = 0, max_items: int = 0, on_bad_image: str = "error",
                 what: str = "data.root"):
        files = list_images(Path(folder), what)
        if max_items:
            files = files[:max_items]
        self.files = screen_images(files, on_bad_image)
        self.source = ImageSource(self.files, on_bad_image)
        self.image_size, self.center_crop = image_size, center_crop
        self.flip, self.train, self.latent_dim = flip, train, latent_dim

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict:
        index, seed = item_key(key)
        gen = torch.Generator().manual_seed(seed)
        # z first, so an item's code does not depend on whether it is flipped (train or eval).
        z = torch.randn(self.latent_dim, generator=gen) if self.latent_dim else None
        flip = self.train and self.flip and bool(torch.rand((), generator=gen) < 0.5)
        index, img = self.source.load(index)
        if self.center_crop:
            side = min(self.center_crop, *img.size)
            img = TF.center_crop(img, [side, side])
        img = TF.resize(img, [self.image_size, self.image_size],
                        interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        if flip:
            img = TF.horizontal_flip(img)
        item = {"image": to_tensor(img).clamp(-1.0, 1.0), "index": torch.tensor(index)}
        if z is not None:
            item["z"] = z
        return item
