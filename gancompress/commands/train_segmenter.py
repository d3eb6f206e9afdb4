"""Train a segmenter for the mIoU metric of label->photo generators (our own, for demos and data
without a published segmenter).

ROOT is a directory of aligned A|B images (e.g. datasets/cityscapes/train). The output is a
gancompress-segmenter checkpoint; set eval.segmenter to it. mIoU measured with it is marked "own
segmenter: not comparable with published mIoU" in the report; published Cityscapes figures use
DRN-D-105: set eval.segmenter to drn-d-105_ms_cityscapes.pth
(http://go.yf.io/drn-cityscapes-models) for those.
"""
from __future__ import annotations

import json

from .common import positive_int

NAME = "train-segmenter"
HELP = "train our own segmenter for mIoU (demos; published Cityscapes mIoU uses DRN-D-105)"
EXAMPLE = ("gancompress train-segmenter datasets/cityscapes/train --palette cityscapes --epochs 30 --device cuda "
           "--out weights/segmenter_cityscapes.pt")


def add_arguments(p) -> None:
    p.add_argument("root", metavar="ROOT", help="directory of aligned A|B images (left half label map, right half photo)")
    p.add_argument("--out", required=True, metavar="FILE", help="the segmenter checkpoint file to write")
    p.add_argument("--arch", default="Unet", help="segmentation_models_pytorch architecture (default Unet)")
    p.add_argument("--encoder", default="resnet18", help="smp encoder (default resnet18, trained from scratch)")
    p.add_argument("--palette", default="cityscapes", choices=["cityscapes", "auto"],
                   help="colour -> id mapping of the label halves (ignored with --labels-from trainid)")
    p.add_argument("--labels-from", default="colour", choices=["colour", "trainid"],
                   help="'colour': label halves are colour maps; 'trainid': their R channel is the class id")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="number of classes (default: from the palette)")
    p.add_argument("--ignore-index", type=int, default=255, help="label id of unlabelled pixels")
    p.add_argument("--size", type=positive_int, default=256, help="training resolution, a multiple of 32")
    p.add_argument("--epochs", type=positive_int, default=30, help="passes over the folder")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seeds the init and the batch order")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")


def run(args) -> int:
    from ..metrics.segmenter_train import train_segmenter

    result = train_segmenter(args.root, args.out, arch=args.arch, encoder=args.encoder, num_classes=args.num_classes,
                             palette=args.palette, labels_from=args.labels_from, ignore_index=args.ignore_index,
                             size=args.size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             device=args.device, seed=args.seed, num_workers=args.workers)
    print(json.dumps(result))
    return 0
