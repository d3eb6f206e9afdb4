"""Semantic-segmentation mIoU of generated images (the label->photo protocol of pix2pix-style papers).

A pretrained segmenter labels each generated photo; its prediction is compared with the label
map the photo was generated from. The protocol here: segment the generated image at the
segmenter's input size, bilinearly upsample the *logits* to the label resolution, take the
argmax, accumulate one confusion matrix over the whole set, then compute the IoU of every class
present in the labels or the predictions and average them.

The segmenter and its loading are in :mod:`.segmenter`, colour label maps in :mod:`.palette`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..errors import DataError
from .segmenter import Segmenter


def confusion_matrix(
    pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix of a prediction against a label map.

    Args:
        pred: integer tensor of predicted ids in [0, num_classes), any shape.
        label: integer tensor of true ids, same shape; ``ignore_index`` pixels are skipped.
        num_classes: C.
        ignore_index: label value that marks unlabelled pixels.

    Returns:
        (C, C) LongTensor; entry [t, p] counts pixels of true class t predicted as p.
    """
    if pred.shape != label.shape:
        raise ValueError(f"pred and label shapes differ: {tuple(pred.shape)} vs {tuple(label.shape)}")
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long().to(pred.device)
    keep = label != ignore_index
    pred, label = pred[keep], label[keep]
    if label.numel() and (label.min() < 0 or label.max() >= num_classes):
        bad = label[(label < 0) | (label >= num_classes)][0].item()
        raise DataError(
            f"label value {bad} is outside 0..{num_classes - 1} and is not the ignore index {ignore_index}: "
            f"check num_classes or convert the labels to train ids"
        )
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted ids must lie in 0..{num_classes - 1}")
    cm = torch.bincount(label * num_classes + pred, minlength=num_classes * num_classes)
    return cm.view(num_classes, num_classes).cpu()


def miou_from_confusion(cm: torch.Tensor) -> dict:
    """Mean IoU from a confusion matrix, over the classes present in the labels or predictions.

    Args:
        cm: (C, C) confusion matrix, rows = true class, columns = predicted class.

    Returns:
        ``{"miou": percent, "per_class": [percent or None] * C, "valid_classes": [ids],
        "pixel_acc": percent}``. A class whose union is 0 (never labelled, never predicted)
        gets None and is left out of the mean.
    """
    cm = cm.to(torch.float64)
    inter = cm.diag()
    union = cm.sum(dim=0) + cm.sum(dim=1) - inter
    valid = union > 0
    if not bool(valid.any()):
        raise DataError("the confusion matrix is empty: every label pixel was the ignore index")
    iou = inter / union.clamp(min=1)
    per_class = [float(100.0 * v) if ok else None for v, ok in zip(iou.tolist(), valid.tolist())]
    return {
        "miou": float(100.0 * iou[valid].mean()),
        "per_class": per_class,
        "valid_classes": [i for i, ok in enumerate(valid.tolist()) if ok],
        "pixel_acc": float(100.0 * inter.sum() / cm.sum()),
    }


class Confusion:
    """One confusion matrix accumulated over a whole evaluation set (the pix2pix / GAN Compression way).

    Args:
        num_classes: C.
        ignore_index: label value skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.images = 0

    def add(self, segmenter: Segmenter, images: torch.Tensor, labels) -> None:
        """Segment ``images`` and count their pixels against ``labels``.

        Each prediction is made at the label's resolution (logits upsampled bilinearly).

        Args:
            segmenter: a :class:`Segmenter`.
            images: (N, 3, h, w) RGB in [0, 1].
            labels: (N, H, W) class ids, or a list of N maps, each (H, W) ids or (H, W, 3) colours.
        """
        if torch.is_tensor(labels) and (labels.dim() != 3 or labels.shape[0] != images.shape[0]):
            raise DataError(
                f"labels must be (N, H, W) class ids matching {images.shape[0]} images, got {tuple(labels.shape)}: "
                f"convert colour label maps with Segmenter.labels_from_colour"
            )
        ids = [segmenter.label_ids(label) for label in labels]
        if len(ids) != images.shape[0]:
            raise DataError(f"{len(ids)} label maps for {images.shape[0]} images")
        if len({tuple(i.shape) for i in ids}) == 1:
            preds = [segmenter.predict(images, out_size=ids[0].shape).cpu()]
            ids = [torch.stack(ids)]
        else:  # label maps of different sizes: one image at a time
            preds = [segmenter.predict(images[i:i + 1], out_size=ids[i].shape).cpu() for i in range(len(ids))]
            ids = [i[None] for i in ids]
        for pred, label in zip(preds, ids):
            if int(pred.max()) >= self.num_classes:
                raise DataError(
                    f"segmenter {segmenter.source} predicts class {int(pred.max())} but num_classes is "
                    f"{self.num_classes}: pass the number of classes the segmenter was trained with"
                )
            self.cm += confusion_matrix(pred, label.cpu(), self.num_classes, self.ignore_index)
        self.images += images.shape[0]

    def result(self) -> dict:
        """:func:`miou_from_confusion` of the accumulated matrix plus ``"num_images"``."""
        if self.images == 0:
            raise DataError("mIoU received no images: check the evaluation dataset folder")
        out = miou_from_confusion(self.cm)
        out["num_images"] = self.images
        return out


def evaluate_miou(
    segmenter: Segmenter,
    images_iter: Iterable,
    num_classes: int | None = None,
    ignore_index: int = 255,
) -> dict:
    """mIoU of generated images against the label maps they were generated from.

    Each batch is segmented, the logits are bilinearly upsampled to the label resolution and
    argmax-ed, and one confusion matrix is accumulated over the whole set (not averaged per
    image), as in the pix2pix / GAN Compression protocol (see :class:`Confusion`).

    Args:
        segmenter: a :class:`Segmenter`.
        images_iter: yields ``(images, labels)``: images (N, 3, h, w) RGB in [0, 1], labels
            (N, H, W) long class ids with ``ignore_index`` for unlabelled pixels (or a list of
            per-image id / colour maps).
        num_classes: C; default the segmenter's.
        ignore_index: label value skipped.

    Returns:
        :func:`miou_from_confusion`'s dict plus ``"num_images"``.
    """
    num_classes = num_classes or segmenter.num_classes
    if not num_classes:
        raise DataError(f"segmenter {segmenter.source} does not say its number of classes: pass num_classes")
    confusion = Confusion(num_classes, ignore_index)
    for images, labels in images_iter:
        confusion.add(segmenter, images, labels)
    return confusion.result()
