"""Where and how a run computes: the device and the seeds."""
from __future__ import annotations

import random

import torch

from ..errors import GanCompressError
from . import distributed


def pick_device(name: str | None) -> torch.device:
    """The device ``name`` ('cpu', 'cuda', or None/'auto' for CUDA when present); under a
    process group, CUDA means this rank's own GPU, ``cuda:LOCAL_RANK``."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise GanCompressError("--device cuda: no CUDA device is available here; use --device cpu")
    if name == "cuda" and distributed.is_active():
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's generators (every stage starts from its own offset of the seed)."""
    random.seed(seed)
    torch.manual_seed(seed)
