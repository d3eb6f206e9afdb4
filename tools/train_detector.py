#!/usr/bin/env python
"""Train a real-vs-generated classifier on the generators of a finished run.

    python tools/train_detector.py RUN_DIR [--role teacher] [--generator NAME] [--out FILE]
        [--epochs N] [--batch-size B] [--lr LR] [--device cpu|cuda] [--seed S]

Reads RUN_DIR/recipe.yaml, loads each frozen generator RUN_DIR/<role>/generator_<name>.pt, trains
a classifier (gancompress.detector) on balanced batches of the family's real images and that
generator's outputs over the recipe's training split, measures its accuracy on the evaluation
split and writes RUN_DIR/detectors/<role>_<name>.pt. List such files in a later recipe's
``classifier.paths`` so that its student also learns to fool them (the GAN-classifier loss,
METHOD 6).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancompress.errors import GanCompressError, MissingFileError  # noqa: E402

log = logging.getLogger("train_detector")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="train_detector", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a run folder holding recipe.yaml and <role>/generator_<name>.pt")
    p.add_argument("--role", choices=("teacher", "student"), default="teacher",
                   help="whose generators produce the fakes (default teacher)")
    p.add_argument("--generator", default=None,
                   help="only this generator name (default: every generator of the family)")
    p.add_argument("--out", type=Path, default=None,
                   help="file to write (default RUN_DIR/detectors/<role>_<name>.pt); needs one generator")
    p.add_argument("--epochs", type=_positive_int, default=5, help="passes over the training split (default 5)")
    p.add_argument("--batch-size", type=_positive_int, default=16,
                   help="real images per batch, with as many generated ones (default 16)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default 2e-4)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when present")
    p.add_argument("--seed", type=int, default=0, help="seeds the classifier's init and the batch order")
    return p.parse_args(argv)


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
    from gancompress.data.loader import BatchSource

    data = family.recipe.data
    train = family.dataset(data.train_split, train=True)
    held = family.dataset(data.eval_split, train=False)
    source = BatchSource(train, min(batch_size, len(train)), seed, num_workers=data.num_workers)
    loader = torch.utils.data.DataLoader(held, batch_size=batch_size)
    return (GeneratedPairs(family, name, generator, source.epoch, device),
            GeneratedPairs(family, name, generator, lambda _: loader, device))


def run(args: argparse.Namespace) -> list[tuple[Path, float, int]]:
    """Train and save one classifier per generator; returns (file, accuracy, held-out images) each."""
    from gancompress.config import load_recipe
    from gancompress.detector import save_classifier, train_classifier
    from gancompress.export import load_generator
    from gancompress.families import get_family
    from gancompress.pipeline import pick_device

    run_dir = args.run_dir
    if not run_dir.is_dir():
        raise MissingFileError(f"{run_dir}: run folder not found (pass a folder made by tools/compress.py)")
    recipe = load_recipe(run_dir / "recipe.yaml")
    family = get_family(recipe.family)(recipe)
    names = list(family.generator_names)
    if args.generator is not None:
        if args.generator not in names:
            raise GanCompressError(f"--generator {args.generator}: the {recipe.family} family has "
                                   f"{', '.join(names)}")
        names = [args.generator]
    if args.out is not None and len(names) > 1:
        raise GanCompressError(f"--out names one file but the {recipe.family} family has generators "
                               f"{', '.join(names)}: add --generator NAME")
    device = pick_device(args.device)
    results = []
    for name in names:
        path = run_dir / args.role / f"generator_{name}.pt"
        if not path.is_file():
            raise MissingFileError(f"{path}: generator file not found (the distillation stage writes "
                                   f"<run>/teacher/ and <run>/student/; check --role {args.role})")
        generator, _ = load_generator(path)
        generator = generator.to(device).eval().requires_grad_(False)
        train_pairs, held_pairs = _split_pairs(family, name, generator, device, args.batch_size, args.seed)
        log.info("training a classifier: real %s images vs %s generator %s", recipe.data.train_split, args.role, name)
        trained = train_classifier(train_pairs, held_pairs, epochs=args.epochs, lr=args.lr, device=device,
                                   seed=args.seed)
        out = args.out or run_dir / "detectors" / f"{args.role}_{name}.pt"
        meta = {"family": recipe.family, "recipe": recipe.name, "generator": name, "role": args.role,
                "generator_file": str(path), "train_split": recipe.data.train_split,
                "eval_split": recipe.data.eval_split, "accuracy": trained.accuracy,
                "eval_images": trained.eval_images, "train_images": trained.train_images,
                "epochs": args.epochs, "seed": args.seed}
        save_classifier(out, trained.model, meta)
        results.append((out, trained.accuracy, trained.eval_images))
    return results


def main(argv=None) -> int:
    """Entry point; returns the exit status (2 for a user mistake)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = parse_args(argv)
    try:
        results = run(args)
    except GanCompressError as exc:
        print(f"train_detector: error: {exc}", file=sys.stderr)
        return 2
    for out, accuracy, count in results:
        print(f"{out}: held-out accuracy {accuracy:.4f} on {count} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
