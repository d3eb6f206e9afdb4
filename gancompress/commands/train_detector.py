"""Train a real-vs-generated classifier on the generators of a finished run.

Reads RUN_DIR/recipe.yaml, loads each frozen generator RUN_DIR/<role>/generator_<name>.pt, trains
a classifier (gancompress.method.classifier) on balanced batches of the family's real images and that
generator's outputs over the recipe's training split, measures its accuracy on the evaluation
split and writes RUN_DIR/detectors/<role>_<name>.pt. List such files in a later recipe's
classifier.paths so that its student also learns to fool them (the GAN-classifier loss).
"""
from __future__ import annotations

from pathlib import Path

from .common import add_device_arg, positive_int

NAME = "train-detector"
HELP = "train a real-vs-generated classifier on a finished run's generators (for classifier.paths)"
EXAMPLE = "gancompress train-detector runs/demo_pix2pix --epochs 60"


def add_arguments(p) -> None:
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a run folder (directory) holding recipe.yaml and <role>/generator_<name>.pt")
    p.add_argument("--role", choices=("teacher", "student"), default="teacher",
                   help="whose generators produce the fakes (default teacher)")
    p.add_argument("--generator", default=None, metavar="NAME",
                   help="only this generator name (default: every generator of the family)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="the classifier file to write (default RUN_DIR/detectors/<role>_<name>.pt); needs one "
                        "generator")
    p.add_argument("--epochs", type=positive_int, default=5, metavar="N",
                   help="passes over the training split (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                   help="real images per batch, with as many generated ones (default 16)")
    p.add_argument("--lr", type=float, default=2e-4, metavar="LR", help="Adam learning rate (default 2e-4)")
    add_device_arg(p)
    p.add_argument("--seed", type=int, default=0, metavar="SEED",
                   help="seeds the classifier's init and the batch order (default 0)")


def run(args) -> int:
    from ..run.detectors import train_run_detectors

    results = train_run_detectors(args.run_dir, role=args.role, generator=args.generator, out=args.out,
                                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
                                  seed=args.seed)
    for out, accuracy, count in results:
        print(f"{out}: held-out accuracy {accuracy:.4f} on {count} images")
    return 0
