"""The data gpu-check's rows make for themselves: the demo data sets, Cityscapes-like pairs and a
fixed random-feature FID extractor. Each is made once per work folder, under a lock of its own,
since two rows running side by side may ask for it at the same time.
"""
from __future__ import annotations

import itertools
import math
import shutil
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

DONE = ".gpu-check-done"

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def path_lock(path: Path) -> threading.Lock:
    """One lock per file or folder made by the rows (two rows running side by side may need it)."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(Path(path), threading.Lock())


def make_demo_data(family: str, folder: Path) -> Path:
    """``family``'s demo data in ``folder`` (made once; a marker file says it is complete)."""
    from ...demo.makers import get_demo_maker

    with path_lock(folder):
        if not (folder / DONE).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            get_demo_maker(family)(folder)
            (folder / DONE).write_text("ok\n")
    return folder


def make_cityscapes_like(folder: Path, n_train: int, n_val: int, size: int = 256, seed: int = 0) -> Path:
    """Random aligned pairs in the Cityscapes layout: ``folder/{train,val}/*.jpg``, each a
    (2 size) x size image (A | B). No photos needed (the torchrun rows use it at 64 too)."""
    import numpy as np
    from PIL import Image

    marker = folder / DONE
    with path_lock(folder):
        if marker.is_file() and marker.read_text().strip() == f"{n_train} {n_val} {size}":
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        rng = np.random.default_rng(seed)
        for split, count in (("train", n_train), ("val", n_val)):
            (folder / split).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                # Smooth random fields (8x16 upsampled) compress like photos, unlike pixel noise.
                coarse = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
                image = Image.fromarray(coarse).resize((2 * size, size), Image.Resampling.BICUBIC)
                image.save(folder / split / f"{i:05d}.jpg", quality=90)
        marker.write_text(f"{n_train} {n_val} {size}\n")
    return folder


def _hash_uniform(count: int, salt: int) -> torch.Tensor:
    """``count`` numbers in [-1, 1) from an integer hash of their index: the same on every
    machine and torch version (unlike a seeded RNG stream)."""
    x = torch.arange(count, dtype=torch.int64) + salt * 1_000_003
    for _ in range(3):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (x >> 16) ^ x
    return (x.double() / 2 ** 32 * 2 - 1).float()


class MeanFeatures(nn.Module):
    """Images (N, 3, H, W) in [0, 1] -> the spatial mean of ``body``'s output channels, (N, C)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1).mean(dim=(2, 3))


def write_random_feature_extractor(path: Path, features: int = 12) -> Path:
    """A fixed random-feature FID extractor as TorchScript: (N, 3, H, W) in [0, 1] -> (N, ``features``).

    Three stride-2 3x3 convolutions with tanh and a spatial mean, weights from :func:`_hash_uniform`
    scaled to unit gain. The demo's unpaired families report FID only, and Inception weights
    cannot be downloaded here; FID on these features is no published FID, but it is the same
    function on the CPU and the GPU, so a student that trains worse scores worse on both.
    ``features`` stays below the CycleGAN demo's 16 test images, so the covariances have full rank.
    """
    from ...files.atomic import atomic_write

    widths = (3, 16, 16, features)
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(widths)):
        conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        with torch.no_grad():
            gain = math.sqrt(3 / (cin * 9))
            conv.weight.copy_(_hash_uniform(conv.weight.numel(), 2 * i).view_as(conv.weight) * gain)
            conv.bias.copy_(_hash_uniform(cout, 2 * i + 1) * 0.1)
        layers += [conv, nn.Tanh()]
    # Traced, not scripted: the network has no control flow, and a trace of convolutions and a mean
    # takes any image size.
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit's deprecation notice: TorchScript is what eval.fid_extractor loads.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(MeanFeatures(nn.Sequential(*layers)).eval(), torch.zeros(1, 3, 32, 32))
        return atomic_write(path, lambda f: torch.jit.save(traced, f))
