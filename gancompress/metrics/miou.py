"""Semantic-segmentation mIoU of generated images (the label->photo protocol of pix2pix-style papers).

A pretrained segmenter labels each generated photo; its prediction is compared with the label
map the photo was generated from. The protocol here: segment the generated image at the
segmenter's input size, bilinearly upsample the *logits* to the label resolution, take the
argmax, accumulate one confusion matrix over the whole set, then compute the IoU of every class
present in the labels or the predictions and average them.

Segmenters load as weights into architectures defined here (never by running code from the file):
the published DRN-D-105 Cityscapes state dict (``drn-d-105_ms_cityscapes.pth``, see
:mod:`.drn`; the segmenter published pix2pix mIoU is measured with) or a self-describing
checkpoint written by ``tools/train_segmenter.py`` (:data:`SEGMENTER_FORMAT`, an smp network;
its figures are not comparable with published ones). A TorchScript file is accepted only when
the recipe sets ``eval.trust_torchscript: true``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, DataError, MissingFileError
from .weights import (TRUST_KEY, first_mismatch, is_torchscript_archive, load_into, load_tensors, sha256_of,
                      unwrap_state_dict)

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
    max_distance: float | None = None

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
    ids: torch.Tensor | None = None,
    *,
    max_distance: float | None = None,
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
        palette: colour -> id mapping of the training labels, used to turn colour label maps
            into class ids.
        source: the file it was loaded from (for messages and protocol records).
        kind: "drn-d-105" (the published Cityscapes DRN), "smp" (a tools/train_segmenter.py
            checkpoint) or "torchscript" (a trusted user module).
        sha256: hex SHA-256 of the file.
        quantize: "truncate" to floor images to 8-bit levels first (GAN Compression's
            ``tensor2im``), or None to feed the floats as they are.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        device,
        *,
        input_size: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_classes: int | None = None,
        palette: Palette | None = None,
        source: str = "",
        kind: str = "smp",
        sha256: str = "",
        quantize: str | None = None,
    ):
        self.net = net.eval()
        self.device = torch.device(device)
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else None
        self.mean = None if mean is None else self._channel_vector(mean)
        self.std = None if std is None else self._channel_vector(std)
        self.num_classes = num_classes
        self.palette = palette
        self.source = source
        self.kind = kind
        self.sha256 = sha256
        self.quantize = quantize

    def _channel_vector(self, values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def describe(self) -> dict:
        """The evaluator part of a protocol record: what it is, its file and the file's SHA-256 (12 hex)."""
        names = {"drn-d-105": "DRN-D-105 (DRNSeg, fyu/drn) Cityscapes segmenter",
                 "smp": "own segmentation_models_pytorch segmenter (tools/train_segmenter.py)",
                 "torchscript": "user TorchScript segmenter (trusted by eval.trust_torchscript)"}
        return {"name": names.get(self.kind, self.kind), "kind": self.kind, "file": self.source,
                "sha256": self.sha256[:12]}

    @torch.inference_mode()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Run the net.

        Args:
            images: (N, 3, h, w) RGB in [0, 1].

        Returns:
            (N, C, h', w') float logits at the net's output resolution.
        """
        x = images.to(self.device, torch.float32)
        if self.quantize == "truncate":
            # tensor2im: uint8(clip(x * 255)); the epsilon keeps exact 8-bit levels that went
            # through float arithmetic (k/255 read back as k - 1e-6) on their own level.
            x = torch.floor(x.clamp(0.0, 1.0) * 255.0 + 1e-3) / 255.0
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
    def predict(self, images: torch.Tensor, out_size: Sequence[int] | None = None) -> torch.Tensor:
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

    def label_ids(self, label: torch.Tensor) -> torch.Tensor:
        """(H, W) class ids as they are, or an (H, W, 3) colour map converted with the palette."""
        label = torch.as_tensor(label)
        if label.dim() == 3 and label.shape[-1] == 3:
            return self.labels_from_colour(label)
        if label.dim() != 2:
            raise DataError(f"a label map must be (H, W) class ids or (H, W, 3) colours, got {tuple(label.shape)}")
        return label.long()


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


def build_segmenter_net(arch: str, encoder: str, num_classes: int) -> torch.nn.Module:
    """Build an untrained segmentation_models_pytorch network (no weight download).

    Args:
        arch: smp architecture name, e.g. "Unet", "FPN", "DeepLabV3Plus".
        encoder: smp encoder name, e.g. "resnet18".
        num_classes: number of output channels C.
    """
    import segmentation_models_pytorch as smp

    return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes)


def _smp_segmenter(ckpt: dict, path: Path, device, sha: str) -> Segmenter:
    """Rebuild a ``gancompress-segmenter`` checkpoint (already loaded with weights_only=True)."""
    required = ("arch", "encoder", "num_classes", "input_size", "mean", "std", "state_dict")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"segmenter checkpoint {path} lacks keys {missing}: re-create it with tools/train_segmenter.py"
        )
    with torch.device("meta"):  # shapes only: the weights come from the file
        net = build_segmenter_net(ckpt["arch"], ckpt["encoder"], int(ckpt["num_classes"]))
    problem = first_mismatch(net, ckpt["state_dict"])
    if problem:
        raise CheckpointError(
            f"segmenter checkpoint {path} does not fit its {ckpt['arch']}/{ckpt['encoder']} network: {problem}; "
            f"re-create it with tools/train_segmenter.py"
        )
    load_into(net, ckpt["state_dict"]).to(device)
    palette = Palette.from_dict(ckpt["palette"]) if ckpt.get("palette") else None
    log.info("loaded %s/%s segmenter %s (%d classes)", ckpt["arch"], ckpt["encoder"], path, ckpt["num_classes"])
    return Segmenter(net, device, input_size=ckpt["input_size"], mean=ckpt["mean"], std=ckpt["std"],
                     num_classes=int(ckpt["num_classes"]), palette=palette, source=str(path), kind="smp",
                     sha256=sha)


def load_segmenter(path, device="cpu", *, trust_torchscript: bool = False) -> Segmenter:
    """Load a segmenter as weights into an architecture defined here.

    Accepted files:

    * the DRN-D-105 Cityscapes state dict (``drn-d-105_ms_cityscapes.pth``): a plain state dict,
      possibly under a 'state_dict' or 'model' key and with a 'module.' prefix; every key and
      shape must fit :class:`~gancompress.metrics.drn.DRNSeg`;
    * a ``gancompress-segmenter`` checkpoint of tools/train_segmenter.py (keys ``format``,
      ``arch``, ``encoder``, ``num_classes``, ``input_size``, ``mean``, ``std``, ``state_dict``,
      optionally ``palette``), rebuilt with segmentation_models_pytorch;
    * a TorchScript module mapping (N, 3, h, w) RGB in [0, 1] to logits, only with
      ``trust_torchscript`` (the recipe's ``eval.trust_torchscript``): loading it runs its code.

    The file is read once; its SHA-256 and the unpickled weights come from the same bytes.

    Args:
        path: file path.
        device: device to run on.
        trust_torchscript: allow TorchScript files.

    Returns:
        a :class:`Segmenter`.

    Raises:
        MissingFileError: no such file (the message says where the DRN weights come from).
        CheckpointError: a TorchScript file without trust, a pickle that would run code, or a
            file whose first non-fitting key (missing, unexpected or mis-shaped) is named.
    """
    from .drn import (CITYSCAPES_CLASSES, CITYSCAPES_MEAN, CITYSCAPES_STD, DRN_D_105_FILENAME, DRN_D_105_URL,
                      DRNSeg)

    path = Path(path)
    fix = (f"set eval.segmenter to {DRN_D_105_FILENAME} (from {DRN_D_105_URL}) or to a checkpoint written by "
           f"tools/train_segmenter.py")
    if not path.is_file():
        raise MissingFileError(
            f"segmenter {path} not found: for Cityscapes mIoU comparable with published figures download "
            f"{DRN_D_105_FILENAME} from {DRN_D_105_URL}, or train your own with tools/train_segmenter.py; "
            f"then set eval.segmenter to its path"
        )
    if is_torchscript_archive(path):
        if not trust_torchscript:
            raise CheckpointError(
                f"segmenter {path} is a TorchScript file, and loading TorchScript runs code from the file: "
                f"set {TRUST_KEY}: true in the recipe if you trust it, or {fix}"
            )
        net = torch.jit.load(str(path), map_location=device)
        log.warning("loaded TorchScript segmenter %s (trusted by %s)", path, TRUST_KEY)
        return Segmenter(net, device, source=str(path), kind="torchscript", sha256=sha256_of(path))
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    obj = load_tensors(data, f"segmenter {path}", fix)
    if isinstance(obj, dict) and obj.get("format") == SEGMENTER_FORMAT:
        return _smp_segmenter(obj, path, device, sha)
    state = unwrap_state_dict(obj)
    with torch.device("meta"):  # shapes only: the weights come from the file
        net = DRNSeg(CITYSCAPES_CLASSES)
    problem = first_mismatch(net, state) if state else f"it holds a {type(obj).__name__}, not a state dict"
    if problem:
        raise CheckpointError(
            f"segmenter {path} is neither a {SEGMENTER_FORMAT!r} checkpoint nor a DRN-D-105 state dict: "
            f"{problem}; {fix}"
        )
    load_into(net, state).to(device)
    log.info("loaded DRN-D-105 segmenter %s (sha256 %s)", path, sha[:12])
    return Segmenter(net, device, mean=CITYSCAPES_MEAN, std=CITYSCAPES_STD, num_classes=CITYSCAPES_CLASSES,
                     palette=cityscapes_palette(), source=str(path), kind="drn-d-105", sha256=sha,
                     quantize="truncate")


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
