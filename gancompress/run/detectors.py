"""Real-vs-generated classifiers for a finished run's generators (``gancompress train-detector``).

The classifiers themselves, their training and the guidance loss they give a later generator
live in :mod:`gancompress.method.classifier`; this module makes their (real, generated) batches
from a run folder's data and generator files and writes one classifier file per generator.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..data.loader import BatchSource
from ..errors import GanCompressError, MissingFileError
from ..export.generator import load_generator
from ..families import get_family
from ..families.recipe import load_recipe
from ..files.rundir import RunDir
from ..method.classifier import save_classifier, train_classifier
from ..system.devices import pick_device

log = logging.getLogger(__name__)


class GeneratedPairs:
    """(real, generated) image batches of one dataset split, re-iterable: each ``iter`` is a pass.

    Args:
        family: the family adapter (turns batches into generator inputs and real images).
        name: the generator's name in the family.
        generator: the frozen generator.
        batches: ``batches(k)`` is an iterable of the dataset's batches for pass k (0, 1, ...).
        device: where the generator runs and the images go.
    """

    def __init__(self, family, name: str, generator: torch.nn.Module, batches, device: torch.device):
        self.family, self.name, self.generator, self.batches, self.device = family, name, generator, batches, device
        self.passes = 0

    def __iter__(self):
        batches = self.batches(self.passes)
        self.passes += 1
        for batch in batches:
            inputs = self.family.generator_inputs(batch)
            with torch.no_grad():
                fake = self.generator(inputs[self.name].to(self.device))
            yield self.family.real(self.name, batch).to(self.device), fake


def _split_pairs(family, name, generator, device, batch_size: int, seed: int):
    """Training pairs (a new shuffle every pass, seeded) and held-out pairs (in order)."""
    data = family.recipe.data
    train = family.dataset(data.train_split, train=True)
    held = family.dataset(data.eval_split, train=False)
    source = BatchSource(train, min(batch_size, len(train)), seed, num_workers=data.num_workers)
    loader = torch.utils.data.DataLoader(held, batch_size=batch_size)
    return (GeneratedPairs(family, name, generator, source.epoch, device),
            GeneratedPairs(family, name, generator, lambda _: loader, device))


def train_run_detectors(run_dir: str | Path, *, role: str = "teacher", generator: str | None = None,
                        out: Path | None = None, epochs: int = 5, batch_size: int = 16, lr: float = 2e-4,
                        device: str | None = None, seed: int = 0) -> list[tuple[Path, float, int]]:
    """Train and save one classifier per generator of a finished run.

    Args:
        run_dir: the run folder.
        role: whose generators make the fakes ('teacher' or 'student').
        generator: only this generator (default: every generator of the family).
        out: the file to write (one generator only); default ``<run>/detectors/<role>_<name>.pt``.
        epochs, batch_size, lr, seed: the classifier's training.
        device: 'cpu', 'cuda' or None (CUDA when present).

    Returns:
        (file, held-out accuracy, held-out images) per generator.
    """
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise MissingFileError(f"{run}: run folder not found (pass a folder made by gancompress compress)")
    recipe = load_recipe(run.recipe)
    family = get_family(recipe.family)(recipe)
    names = list(family.generator_names)
    if generator is not None:
        if generator not in names:
            raise GanCompressError(f"--generator {generator}: the {recipe.family} family has "
                                   f"{', '.join(names)}")
        names = [generator]
    if out is not None and len(names) > 1:
        raise GanCompressError(f"--out names one file but the {recipe.family} family has generators "
                               f"{', '.join(names)}: add --generator NAME")
    dev = pick_device(device)
    results = []
    for name in names:
        path = run.generator(role, name)
        if not path.is_file():
            raise MissingFileError(f"{path}: generator file not found (the distillation stage writes "
                                   f"<run>/teacher/ and <run>/student/; check --role {role})")
        net, _ = load_generator(path)
        net = net.to(dev).eval().requires_grad_(False)
        train_pairs, held_pairs = _split_pairs(family, name, net, dev, batch_size, seed)
        log.info("training a classifier: real %s images vs %s generator %s", recipe.data.train_split, role, name)
        trained = train_classifier(train_pairs, held_pairs, epochs=epochs, lr=lr, device=dev,
                                   seed=seed)
        target = out or run.detector(role, name)
        meta = {"family": recipe.family, "recipe": recipe.name, "generator": name, "role": role,
                "generator_file": str(path), "train_split": recipe.data.train_split,
                "eval_split": recipe.data.eval_split, "accuracy": trained.accuracy,
                "eval_images": trained.eval_images, "train_images": trained.train_images,
                "epochs": epochs, "seed": seed}
        save_classifier(target, trained.model, meta)
        results.append((target, trained.accuracy, trained.eval_images))
    return results
