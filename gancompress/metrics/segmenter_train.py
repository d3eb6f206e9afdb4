"""Train the segmentation network that scores label->photo generators by mIoU.

Data is a folder in the pix2pix *aligned* layout: each image is ``A|B`` side by side, the left
half the label map and the right half the photo. The label half is either a colour label map
(converted to ids with a :class:`~gancompress.metrics.palette.Palette`) or, with
``labels_from="trainid"``, an image whose R channel holds the class id.

The result is a self-describing checkpoint (format ``gancompress-segmenter``) that
:func:`gancompress.metrics.segmenter.load_segmenter` rebuilds without running pickled code.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import IMAGE_SUFFIXES, list_images, load_rgb
from ..errors import DataError, GanCompressError
from ..files.checkpoint import atomic_save
from .palette import Palette, cityscapes_palette, colour_to_ids
from .segmenter import SEGMENTER_FORMAT, build_segmenter_net

log = logging.getLogger(__name__)

__all__ = [
    "AlignedSegmentationDataset",
    "build_auto_palette",
    "colour_to_ids",
    "list_aligned_images",
    "lr_at",
    "read_aligned",
    "train_segmenter",
]

#: ImageNet statistics, the usual normalisation for smp encoders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: smp encoders downsample 5 times, so inputs must be multiples of 2**5.
SIZE_MULTIPLE = 32


#: The fix a message about an unreadable training image offers (after "remove it or").
_BAD_IMAGE_HINT = "replace it with a readable A|B image"


def list_aligned_images(root) -> list:
    """Sorted image files (:data:`~gancompress.data.images.IMAGE_SUFFIXES`) directly inside ``root``;
    DataError names the folder when it is missing or holds none."""
    return list_images(Path(root), "the segmenter's training folder: pix2pix aligned A|B images, label | photo, "
                                    f"as {'/'.join(IMAGE_SUFFIXES)} files")


def read_aligned(path) -> tuple:
    """Read one aligned A|B image.

    Args:
        path: image file whose left half is the label map and right half the photo.

    Returns:
        ``(label_rgb, photo)``: label_rgb (H, W, 3) uint8 tensor; photo (3, H, W) float in [0, 1].
    """
    arr = np.asarray(load_rgb(Path(path), convert=True, hint=_BAD_IMAGE_HINT))
    w = arr.shape[1]
    if w % 2:
        raise DataError(f"image {path} is {w} pixels wide, not even: an aligned image is label|photo side by side")
    half = w // 2
    label = torch.from_numpy(arr[:, :half].copy())
    photo = torch.from_numpy(arr[:, half:].copy()).permute(2, 0, 1).float() / 255.0
    return label, photo


def build_auto_palette(
    paths: Sequence,
    *,
    max_colours: int = 256,
    merge_distance: float = 24.0,
    min_fraction: float = 1e-3,
) -> Palette:
    """Build a palette from the colours of the label halves.

    When the label halves hold at most ``max_colours`` distinct colours (lossless PNG labels),
    each becomes one class, in order of decreasing pixel count. Otherwise (JPEG noise) colours
    are taken by decreasing count, skipping those within ``merge_distance`` of a kept colour or
    covering less than ``min_fraction`` of the pixels, up to ``max_colours``.

    Args:
        paths: aligned image files.
        max_colours: largest palette size.
        merge_distance: Euclidean RGB distance under which a colour is JPEG noise of a kept one.
        min_fraction: smallest share of all label pixels a colour needs to become a class.

    Returns:
        a :class:`Palette` named "auto" with ids ``0..K-1``.
    """
    counts: dict = {}
    for p in paths:
        label, _ = read_aligned(p)
        lab = label.to(torch.long)
        codes = ((lab[..., 0] << 16) | (lab[..., 1] << 8) | lab[..., 2]).flatten()
        uniq, cnt = torch.unique(codes, return_counts=True)
        for c, n in zip(uniq.tolist(), cnt.tolist()):
            counts[c] = counts.get(c, 0) + n
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    rgb = lambda c: ((c >> 16) & 255, (c >> 8) & 255, c & 255)  # noqa: E731
    if len(ordered) <= max_colours:
        colours = [rgb(c) for c, _ in ordered]
    else:
        total = sum(counts.values())
        log.warning(
            "label halves hold %d distinct colours (lossy images?): keeping the frequent ones, merging within %.0f",
            len(ordered), merge_distance,
        )
        colours = []
        for c, n in ordered:
            if n < min_fraction * total or len(colours) >= max_colours:
                break
            col = rgb(c)
            if all(sum((a - b) ** 2 for a, b in zip(col, k)) > merge_distance**2 for k in colours):
                colours.append(col)
    log.info("auto palette: %d colours", len(colours))
    colours_t = torch.tensor(colours, dtype=torch.long).view(-1, 3)
    return Palette("auto", colours_t, torch.arange(len(colours)), None)


class AlignedSegmentationDataset(torch.utils.data.Dataset):
    """(photo, label ids) pairs from aligned A|B images.

    Args:
        paths: aligned image files.
        size: side of the square the photos (bilinear) and labels (nearest) are resized to.
        num_classes: C; ids outside 0..C-1 other than ``ignore_index`` are a DataError.
        palette: colour -> id mapping for colour label halves, or None with ``labels_from="trainid"``.
        labels_from: "colour" or "trainid" (id = R channel of the label half).
        ignore_index: id of unlabelled pixels.
        flip: random horizontal flips.

    Items: ``(photo (3, size, size) float in [0, 1], label (size, size) long)``.
    """

    def __init__(self, paths, size, num_classes, palette, labels_from="colour", ignore_index=255, flip=True):
        self.paths = list(paths)
        self.size = int(size)
        self.num_classes = int(num_classes)
        self.palette = palette
        self.labels_from = labels_from
        self.ignore_index = ignore_index
        self.flip = flip

    def __len__(self) -> int:
        return len(self.paths)

    def label_ids(self, label_rgb: torch.Tensor, path) -> torch.Tensor:
        """(H, W, 3) uint8 label half -> (H, W) long ids, checked against num_classes."""
        if self.labels_from == "trainid":
            ids = label_rgb[..., 0].to(torch.long)
        else:
            ids = colour_to_ids(label_rgb, self.palette, ignore_index=self.ignore_index)
        bad = (ids != self.ignore_index) & (ids >= self.num_classes)
        if bool(bad.any()):
            raise DataError(
                f"label {int(ids[bad][0])} in {path} is >= num_classes {self.num_classes} and is not the ignore "
                f"index {self.ignore_index}: pass --num-classes, store train ids (not label ids) in lossless PNG"
            )
        return ids

    def __getitem__(self, i):
        label_rgb, photo = read_aligned(self.paths[i])
        ids = self.label_ids(label_rgb, self.paths[i])
        size = (self.size, self.size)
        photo = F.interpolate(photo[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        ids = F.interpolate(ids[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
        if self.flip and bool(torch.rand(()) < 0.5):
            photo, ids = photo.flip(-1), ids.flip(-1)
        return photo.clamp(0.0, 1.0), ids


def lr_at(step: int, total_steps: int, base_lr: float) -> float:
    """Cosine learning-rate decay from ``base_lr`` at step 0 to 0 at ``total_steps``."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def _resolve_palette(palette, labels_from, paths, ignore_index):
    """Palette object for the options (None for trainid labels)."""
    if labels_from == "trainid":
        return None
    if labels_from != "colour":
        raise GanCompressError(f"labels_from must be 'colour' or 'trainid', got {labels_from!r}")
    if isinstance(palette, Palette):
        return palette
    if palette == "cityscapes":
        return cityscapes_palette(ignore_index)
    if palette == "auto":
        return build_auto_palette(paths)
    raise GanCompressError(f"unknown palette {palette!r}: use 'cityscapes' or 'auto' (or labels_from='trainid')")


def _resolve_num_classes(num_classes, palette, labels_from, ignore_index) -> int:
    """Number of classes from the option and the palette; raises when they disagree."""
    if palette is None:
        if num_classes is None:
            raise GanCompressError("--labels-from trainid needs --num-classes (e.g. 19 for Cityscapes)")
        return int(num_classes)
    needed = int(palette.ids[palette.ids != ignore_index].max()) + 1 if bool((palette.ids != ignore_index).any()) else 0
    if num_classes is None:
        return needed
    if int(num_classes) < needed:
        raise GanCompressError(
            f"--num-classes {num_classes} is smaller than the {needed} classes of the {palette.name} palette"
        )
    return int(num_classes)


def train_segmenter(
    root,
    out_path,
    *,
    arch: str = "Unet",
    encoder: str = "resnet18",
    num_classes: int | None = None,
    palette="cityscapes",
    labels_from: str = "colour",
    ignore_index: int = 255,
    size: int = 256,
    epochs: int = 30,
    batch_size: int = 8,
    lr: float = 1e-3,
    device="cpu",
    seed: int = 0,
    num_workers: int = 0,
    max_steps: int | None = None,
) -> dict:
    """Train an smp segmentation network from scratch on an aligned A|B folder and save it.

    Args:
        root: folder of aligned images (left half label map, right half photo).
        out_path: checkpoint path; written atomically.
        arch, encoder: smp architecture and encoder names (no pretrained weights are fetched).
        num_classes: C; None takes it from the palette.
        palette: "cityscapes", "auto" or a :class:`Palette`; ignored with ``labels_from="trainid"``.
        labels_from: "colour" (label halves are colour maps) or "trainid" (R channel = id).
        ignore_index: id of unlabelled pixels, skipped by the loss.
        size: training resolution (square), a multiple of 32; stored as the input size.
        epochs, batch_size, lr: optimisation (Adam, cosine decay to 0).
        device: training device.
        seed: seeds initialisation, shuffling and flips.
        num_workers: DataLoader workers.
        max_steps: stop after this many optimiser steps (for smoke tests); None trains all epochs.

    Returns:
        ``{"final_loss": mean loss of the last epoch, "pixel_acc": percent of labelled pixels
        predicted right on the last epoch's training batches (train mode), "num_classes": C,
        "steps": optimiser steps}``.
    """
    if size % SIZE_MULTIPLE:
        raise GanCompressError(f"--size {size} is not a multiple of {SIZE_MULTIPLE}, which smp encoders need")
    paths = list_aligned_images(root)
    pal = _resolve_palette(palette, labels_from, paths, ignore_index)
    num_classes = _resolve_num_classes(num_classes, pal, labels_from, ignore_index)
    torch.manual_seed(seed)
    device = torch.device(device)
    dataset = AlignedSegmentationDataset(paths, size, num_classes, pal, labels_from, ignore_index)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        # BatchNorm cannot train on a final batch of one image.
        drop_last=len(dataset) > batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    net = build_segmenter_net(arch, encoder, num_classes).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    total = epochs * len(loader) if max_steps is None else min(max_steps, epochs * len(loader))
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    log.info("training %s/%s on %d images, %d classes, %d steps", arch, encoder, len(dataset), num_classes, total)
    step, loss_sum, loss_n, correct, labelled = 0, 0.0, 0, 0, 0
    for epoch in range(epochs):
        loss_sum, loss_n, correct, labelled = 0.0, 0, 0, 0
        for photo, ids in loader:
            if step >= total:
                break
            photo, ids = photo.to(device), ids.to(device)
            valid = ids != ignore_index
            if not bool(valid.any()):
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr)
            logits = net((photo - mean) / std)
            loss = F.cross_entropy(logits, ids, ignore_index=ignore_index)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            correct += int(((logits.detach().argmax(1) == ids) & valid).sum())
            labelled += int(valid.sum())
        if loss_n:
            acc = 100.0 * correct / labelled
            log.info("epoch %d/%d loss %.4f pixel acc %.2f%%", epoch + 1, epochs, loss_sum / loss_n, acc)
        if step >= total:
            break
    if loss_n == 0:
        raise DataError(f"no labelled pixels in {root}: check --palette / --labels-from / --ignore-index")
    result = {
        "final_loss": loss_sum / loss_n,
        "pixel_acc": 100.0 * correct / labelled,
        "num_classes": num_classes,
        "steps": step,
    }
    ckpt = {
        "format": SEGMENTER_FORMAT,
        "arch": arch,
        "encoder": encoder,
        "num_classes": num_classes,
        "input_size": [size, size],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "palette": pal.to_dict() if pal is not None else None,
        "labels_from": labels_from,
        "ignore_index": ignore_index,
        "train": {
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "num_images": len(dataset), **result
        },
    }
    atomic_save(ckpt, out_path)
    log.info("wrote segmenter %s", out_path)
    return result
