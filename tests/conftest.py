"""Shared fixtures: tiny recipes and tiny datasets, all made on the fly (no downloads)."""
from __future__ import annotations

import copy
import os

import pytest

from gancompress.system.threads import available_cores, configure

# The settings the command line uses, chosen before torch loads OpenMP; the processes tests start
# inherit them. Under pytest-xdist (setup.cfg runs two workers) each worker takes its share of the
# cores as a fixed count, so the workers and what they start never oversubscribe the machine;
# run alone, a test process gets the command line's default (every core, fewer while other
# processes keep them busy).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
configure(max(1, available_cores() // _WORKERS) if _WORKERS > 1 else None)


TINY_PIX2PIX = {
    "name": "tiny",
    "family": "pix2pix",
    "seed": 0,
    "model": {"netG": "unet", "num_downs": 5, "ngf_teacher": 8, "ngf_student": 8, "ndf": 8, "dropout": True},
    "data": {"root": "", "load_size": 36, "crop_size": 32, "batch_size": 2, "num_workers": 0},
    "train": {"log_every": 2, "checkpoint_every": 2, "samples_per_epoch": False},
    "sparse": {"method": "slimming", "epochs": 1},
    "prune": {"budget": "60%", "tolerance": 0.05},
    "distill": {"epochs_const": 1, "epochs_decay": 1, "gamma_m": 1.0, "gamma_t": 10.0},
    "discriminator": {"mode": "selective", "tau": 0.5},
    "eval": {"latency": False},
}


@pytest.fixture(scope="session")
def aligned_root(tmp_path_factory):
    """A tiny aligned dataset (label map | photo) made from scikit-image's photos."""
    from gancompress.demo.makers import make_pix2pix_demo

    root = tmp_path_factory.mktemp("aligned")
    make_pix2pix_demo(root, n_train=8, n_val=4, size=32, seed=0, segmenter_epochs=0)
    return root


@pytest.fixture
def tiny_raw(aligned_root):
    """A raw recipe mapping for a tiny pix2pix run on ``aligned_root``."""
    raw = copy.deepcopy(TINY_PIX2PIX)
    raw["data"]["root"] = str(aligned_root)
    return raw


@pytest.fixture
def tiny_recipe(tiny_raw):
    from gancompress.families.recipe import recipe_from_dict

    return recipe_from_dict(tiny_raw, "tiny.yaml")
