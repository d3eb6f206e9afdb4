"""Semantic-segmentation mIoU of generated images (the label->photo protocol of pix2pix-style papers).

A pretrained segmenter labels each generated photo; its prediction is compared with the label
map the photo was generated from. The protocol here: segment the generated image at the
segmenter's input size, bilinearly upsample the *logits* to the label resolution, take the
argmax, accumulate one confusion matrix over the whole set, then compute the IoU of every class
present in the labels or the predictions and average them.

The segmenter is either a TorchScript file or a self-describing checkpoint written by
``tools/train_segmenter.py`` (see :data:`SEGMENTER_FORMAT`).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from gancompress.errors import CheckpointError, DataError, MissingFileError

log = logging.getLogger(__name__)

#: Value of the ``"format"`` key of checkpoints written by ``tools/train_segmenter.py``.
SEGMENTER_FORMAT = "gancompress-segmenter"

#: Cityscapes colour of each of the 19 train classes, in trainId order (cityscapesScripts labels.py).
CITYSCAPES_TRAIN_COLOURS = (
    (128, 64, 128),  # 0 road
    (244, 35, 232),  # 1 sidewalk
    (70, 70, 70),  # 2 building
    (102, 102, 156),  # 3 wall
    (190, 153, 153),  # 4 fence
    (153, 153, 153),  # 5 pole
    (250, 170, 30),  # 6 traffic light
    (220, 220, 0),  # 7 traffic sign
    (107, 142, 35),  # 8 vegetation
    (152, 251, 152),  # 9 terrain
    (70, 130, 180),  # 10 sky
    (220, 20, 60),  # 11 person
    (255, 0, 0),  # 12 rider
    (0, 0, 142),  # 13 car
    (0, 0, 70),  # 14 truck
    (0, 60, 100),  # 15 bus
    (0, 80, 100),  # 16 train
    (0, 0, 230),  # 17 motorcycle
    (119, 11, 32),  # 18 bicycle
)
#: Colours of Cityscapes classes that are not trained on (trainId 255). Polegroup and license
#: plate are absent because they share their colour with pole and car.
CITYSCAPES_IGNORE_COLOURS = (
    (0, 0, 0),  # unlabeled, ego vehicle, rectification border, out of roi, static
    (111, 74, 0),  # dynamic
    (81, 0, 81),  # ground
    (250, 170, 160),  # parking
    (230, 150, 140),  # rail track
    (180, 165, 180),  # guard rail
    (150, 100, 100),  # bridge
    (150, 120, 90),  # tunnel
    (0, 0, 90),  # caravan
    (0, 0, 110),  # trailer
)
#: Colours farther than this (Euclidean, 0-255 RGB) from every Cityscapes colour become ignore;
#: it absorbs the JPEG noise of the pix2pix label halves without merging distinct classes.
CITYSCAPES_MAX_DISTANCE = 30.0


@dataclass(frozen=True)
class Palette:
    """Mapping from label-map colours to class ids.

    Attributes:
        name: "cityscapes" or "auto" (built from the data).
        colours: (K, 3) long RGB colours in 0..255, pairwise distinct.
        ids: (K,) long class id of each colour (``ignore_index`` for colours not trained on).
        max_distance: colours farther than this from every palette colour map to the ignore
            index; None maps every colour to its nearest palette colour.
    """

    name: str
    colours: torch.Tensor
    ids: torch.Tensor
    max_distance: Optional[float] = None

    def to_dict(self) -> dict:
        """Plain-type form stored in checkpoints (loadable with ``weights_only=True``)."""
        return {
            "name": self.name,
            "colours": self.colours.tolist(),
            "ids": self.ids.tolist(),
            "max_distance": self.max_distance,
        }

    @staticmethod
    def from_dict(d: dict) -> "Palette":
        """Inverse of :meth:`to_dict`."""
        return Palette(
            name=str(d["name"]),
            colours=torch.tensor(d["colours"], dtype=torch.long).view(-1, 3),
            ids=torch.tensor(d["ids"], dtype=torch.long),
            max_distance=d.get("max_distance"),
        )


def cityscapes_palette(ignore_index: int = 255) -> Palette:
    """The 19 Cityscapes train-class colours (ids 0..18) plus the void colours (``ignore_index``)."""
    colours = torch.tensor(CITYSCAPES_TRAIN_COLOURS + CITYSCAPES_IGNORE_COLOURS, dtype=torch.long)
    ids = torch.tensor(
        list(range(len(CITYSCAPES_TRAIN_COLOURS))) + [ignore_index] * len(CITYSCAPES_IGNORE_COLOURS),
        dtype=torch.long,
    )
    return Palette("cityscapes", colours, ids, CITYSCAPES_MAX_DISTANCE)


def colour_to_ids(
    label_rgb,
    colours,
    ids: Optional[torch.Tensor] = None,
    *,
    max_distance: Optional[float] = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Convert a colour label map to class ids by nearest palette colour.

    Exact palette colours map to their id; other colours map to the id of the nearest palette
    colour (Euclidean RGB distance), or to ``ignore_index`` when farther than ``max_distance``.

    Args:
        label_rgb: (H, W, 3) uint8 array or tensor, RGB.
        colours: (K, 3) palette colours in 0..255 (tensor, array or nested list), or a
            :class:`Palette` (then ``ids`` and ``max_distance`` come from it).
        ids: (K,) id of each colour; default ``arange(K)``.
        max_distance: see above; None maps every colour to its nearest.
        ignore_index: id given to colours beyond ``max_distance``.

    Returns:
        (H, W) LongTensor of class ids.
    """
    if isinstance(colours, Palette):
        ids, max_distance, colours = colours.ids, colours.max_distance, colours.colours
    lab = torch.as_tensor(label_rgb)
    if lab.dim() != 3 or lab.shape[-1] != 3:
        raise ValueError(f"colour_to_ids expects an (H, W, 3) RGB label map, got shape {tuple(lab.shape)}")
    pal = torch.as_tensor(colours).to(torch.long).view(-1, 3)
    ids = torch.arange(pal.shape[0]) if ids is None else torch.as_tensor(ids).to(torch.long)
    lab = lab.to(torch.long)
    codes = (lab[..., 0] << 16) | (lab[..., 1] << 8) | lab[..., 2]
    # Distances are computed once per distinct colour, not per pixel: a label map has few colours.
    uniq, inverse = torch.unique(codes.flatten(), return_inverse=True)
    uniq_rgb = torch.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], dim=1)
    dist = torch.cdist(uniq_rgb.double(), pal.double())
    best, nearest = dist.min(dim=1)
    uniq_ids = ids[nearest].clone()
    if max_distance is not None:
        uniq_ids[best > max_distance] = ignore_index
    return uniq_ids[inverse].view(codes.shape)


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


class Segmenter:
    """A segmentation network with its input convention.

    Args:
        net: module mapping normalised (N, 3, h, w) images to logits (N, C, h', w').
        device: device the net runs on.
        input_size: (h, w) the images are resized to for the net, or None to feed them as they are.
        mean, std: per-channel normalisation applied to [0, 1] images, or None for none.
        num_classes: C if known.
        palette: colour -> id mapping of the training labels, if the segmenter was trained on
            colour label maps.
        source: where it was loaded from (for messages).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device,
        *,
        input_size: Optional[Sequence[int]] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        num_classes: Optional[int] = None,
        palette: Optional[Palette] = None,
        source: str = "",
    ):
        self.net = net.eval()
        self.device = torch.device(device)
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else None
        self.mean = None if mean is None else self._channel_vector(mean)
        self.std = None if std is None else self._channel_vector(std)
        self.num_classes = num_classes
        self.palette = palette
        self.source = source

    def _channel_vector(self, values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Run the net.

        Args:
            images: (N, 3, h, w) RGB in [0, 1].

        Returns:
            (N, C, h', w') float logits at the net's output resolution.
        """
        x = images.to(self.device, torch.float32)
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.dim() != 4:
            raise CheckpointError(
                f"segmenter {self.source} returned shape {tuple(out.shape)}, expected (N, C, H, W) logits: "
                f"export a model whose forward returns logits"
            )
        return out.float()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, out_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Segment images.

        Args:
            images: (N, 3, h, w) RGB in [0, 1].
            out_size: (H, W) of the returned map; default the images' (h, w). Logits are
                upsampled bilinearly to it before the argmax, which gives smoother class
                boundaries than upsampling the hard ids by nearest neighbour.

        Returns:
            (N, H, W) LongTensor of class ids, on the segmenter's device.
        """
        size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
        logits = self.logits(images)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.argmax(dim=1)

    def labels_from_colour(self, label_rgb) -> torch.Tensor:
        """Convert an (H, W, 3) colour label map to ids with the training palette; returns (H, W) long."""
        if self.palette is None:
            raise CheckpointError(
                f"segmenter {self.source} has no palette, so colour label maps cannot be converted: "
                f"retrain it with tools/train_segmenter.py --palette cityscapes|auto or give id labels"
            )
        return colour_to_ids(label_rgb, self.palette)


def _is_torchscript_archive(path: Path) -> bool:
    """True when ``path`` is a TorchScript zip archive (it holds code and constants, a torch.save file does not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def build_segmenter_net(arch: str, encoder: str, num_classes: int) -> torch.nn.Module:
    """Build an untrained segmentation_models_pytorch network (no weight download).

    Args:
        arch: smp architecture name, e.g. "Unet", "FPN", "DeepLabV3Plus".
        encoder: smp encoder name, e.g. "resnet18".
        num_classes: number of output channels C.
    """
    import segmentation_models_pytorch as smp

    return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes)


def load_segmenter(path, device="cpu") -> Segmenter:
    """Load a segmenter from a TorchScript file or a ``gancompress-segmenter`` checkpoint.

    A TorchScript module must take (N, 3, h, w) RGB in [0, 1] (it does its own normalisation)
    and return (N, C, h', w') logits. A checkpoint is a dict with keys ``format``, ``arch``,
    ``encoder``, ``num_classes``, ``input_size``, ``mean``, ``std``, ``state_dict`` and
    optionally ``palette``; it is loaded with ``weights_only=True`` and rebuilt with smp.

    Args:
        path: file path.
        device: device to run on.

    Returns:
        a :class:`Segmenter`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"segmenter {path} not found: train one with tools/train_segmenter.py "
            f"(or give a TorchScript file) and set its path"
        )
    if _is_torchscript_archive(path):
        net = torch.jit.load(str(path), map_location=device)
        log.info("loaded TorchScript segmenter %s", path)
        return Segmenter(net, device, source=str(path))
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"segmenter {path} is neither a TorchScript file nor a checkpoint loadable with weights_only=True "
            f"({type(e).__name__}): re-create it with tools/train_segmenter.py"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != SEGMENTER_FORMAT:
        raise CheckpointError(
            f"segmenter {path} is not a {SEGMENTER_FORMAT!r} checkpoint nor a TorchScript file: "
            f"re-create it with tools/train_segmenter.py"
        )
    required = ("arch", "encoder", "num_classes", "input_size", "mean", "std", "state_dict")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"segmenter checkpoint {path} lacks keys {missing}: re-create it with tools/train_segmenter.py"
        )
    net = build_segmenter_net(ckpt["arch"], ckpt["encoder"], int(ckpt["num_classes"]))
    net.load_state_dict(ckpt["state_dict"])
    net.to(device)
    palette = Palette.from_dict(ckpt["palette"]) if ckpt.get("palette") else None
    log.info("loaded %s/%s segmenter %s (%d classes)", ckpt["arch"], ckpt["encoder"], path, ckpt["num_classes"])
    return Segmenter(
        net,
        device,
        input_size=ckpt["input_size"],
        mean=ckpt["mean"],
        std=ckpt["std"],
        num_classes=int(ckpt["num_classes"]),
        palette=palette,
        source=str(path),
    )


def evaluate_miou(
    segmenter: Segmenter,
    images_iter: Iterable,
    num_classes: int,
    ignore_index: int = 255,
) -> dict:
    """mIoU of generated images against the label maps they were generated from.

    Each batch is segmented at the segmenter's input size, the logits are bilinearly upsampled
    to the label resolution and argmax-ed, and one confusion matrix is accumulated over the
    whole set (not averaged per image), as in the pix2pix / GAN-compression protocol.

    Args:
        segmenter: a :class:`Segmenter`.
        images_iter: yields ``(images, labels)``: images (N, 3, h, w) RGB in [0, 1], labels
            (N, H, W) long class ids with ``ignore_index`` for unlabelled pixels.
        num_classes: C.
        ignore_index: label value skipped.

    Returns:
        :func:`miou_from_confusion`'s dict plus ``"num_images"``.
    """
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    n = 0
    for images, labels in images_iter:
        if labels.dim() != 3 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"labels must be (N, H, W) class ids matching {images.shape[0]} images, got {tuple(labels.shape)}: "
                f"convert colour label maps with Segmenter.labels_from_colour"
            )
        pred = segmenter.predict(images, out_size=labels.shape[-2:])
        if int(pred.max()) >= num_classes:
            raise DataError(
                f"segmenter {segmenter.source} predicts class {int(pred.max())} but num_classes is {num_classes}: "
                f"pass the number of classes the segmenter was trained with"
            )
        cm += confusion_matrix(pred.cpu(), labels.cpu(), num_classes, ignore_index)
        n += images.shape[0]
    if n == 0:
        raise DataError("evaluate_miou received no images: check the evaluation dataset folder")
    out = miou_from_confusion(cm)
    out["num_images"] = n
    return out
