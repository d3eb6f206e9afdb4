"""Train the segmenter used for the mIoU metric of label->photo generators.

Example (pix2pix Cityscapes, colour label halves):

    python tools/train_segmenter.py datasets/cityscapes/train --palette cityscapes \
        --epochs 30 --device cuda --out weights/segmenter_cityscapes.pt

The output is a ``gancompress-segmenter`` checkpoint; set ``eval.segmenter`` in the recipe to it.
mIoU measured with it is marked "own segmenter: not comparable with published mIoU" in the
report; published Cityscapes figures use DRN-D-105: set ``eval.segmenter`` to
``drn-d-105_ms_cityscapes.pth`` (http://go.yf.io/drn-cityscapes-models) for those.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gancompress.errors import GanCompressError  # noqa: E402
from gancompress.metrics.segmenter_train import train_segmenter  # noqa: E402

log = logging.getLogger("train_segmenter")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="folder of aligned A|B images (left half label map, right half photo)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--arch", default="Unet", help="segmentation_models_pytorch architecture (default Unet)")
    p.add_argument("--encoder", default="resnet18", help="smp encoder (default resnet18, trained from scratch)")
    p.add_argument("--palette", default="cityscapes", choices=["cityscapes", "auto"],
                   help="colour -> id mapping of the label halves (ignored with --labels-from trainid)")
    p.add_argument("--labels-from", default="colour", choices=["colour", "trainid"],
                   help="'colour': label halves are colour maps; 'trainid': their R channel is the class id")
    p.add_argument("--num-classes", type=int, default=None, help="number of classes (default: from the palette)")
    p.add_argument("--ignore-index", type=int, default=255, help="label id of unlabelled pixels")
    p.add_argument("--size", type=int, default=256, help="training resolution, a multiple of 32")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Train and print the final statistics as JSON; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    try:
        result = train_segmenter(
            a.root,
            a.out,
            arch=a.arch,
            encoder=a.encoder,
            num_classes=a.num_classes,
            palette=a.palette,
            labels_from=a.labels_from,
            ignore_index=a.ignore_index,
            size=a.size,
            epochs=a.epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            device=a.device,
            seed=a.seed,
            num_workers=a.workers,
        )
    except GanCompressError as e:
        log.error("%s", e)
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
