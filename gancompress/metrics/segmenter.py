"""The segmenter mIoU is measured with (:class:`Segmenter`: a network with its input convention and
training palette), and loading one from a file (:func:`load_segmenter`).

Segmenters load as weights into architectures defined here (never by running code from the file):
the published DRN-D-105 Cityscapes state dict (``drn-d-105_ms_cityscapes.pth``, see
:mod:`.drn`; the segmenter published pix2pix mIoU is measured with) or a self-describing
checkpoint written by ``gancompress train-segmenter`` (:data:`SEGMENTER_FORMAT`, an smp network;
its figures are not comparable with published ones). A TorchScript file is accepted only when
the recipe sets ``eval.trust_torchscript: true``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, DataError, MissingFileError
from .palette import Palette, cityscapes_palette, colour_to_ids
from .weights import (
    TRUST_KEY,
    first_mismatch,
    is_torchscript_archive,
    load_into,
    load_tensors,
    sha256_of,
    unwrap_state_dict,
)

log = logging.getLogger(__name__)

#: Value of the ``"format"`` key of checkpoints written by ``gancompress train-segmenter``.
SEGMENTER_FORMAT = "gancompress-segmenter"


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
        kind: "drn-d-105" (the published Cityscapes DRN), "smp" (a gancompress train-segmenter
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
                 "smp": "own segmentation_models_pytorch segmenter (gancompress train-segmenter)",
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
                f"retrain it with gancompress train-segmenter --palette cityscapes|auto or give id labels"
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
            f"segmenter checkpoint {path} lacks keys {missing}: re-create it with gancompress train-segmenter"
        )
    with torch.device("meta"):  # shapes only: the weights come from the file
        net = build_segmenter_net(ckpt["arch"], ckpt["encoder"], int(ckpt["num_classes"]))
    problem = first_mismatch(net, ckpt["state_dict"])
    if problem:
        raise CheckpointError(
            f"segmenter checkpoint {path} does not fit its {ckpt['arch']}/{ckpt['encoder']} network: {problem}; "
            f"re-create it with gancompress train-segmenter"
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
    * a ``gancompress-segmenter`` checkpoint of gancompress train-segmenter (keys ``format``,
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
    from .drn import (
        CITYSCAPES_CLASSES,
        CITYSCAPES_MEAN,
        CITYSCAPES_STD,
        DRN_D_105_FILENAME,
        DRN_D_105_URL,
        DRNSeg,
    )

    path = Path(path)
    fix = (f"set eval.segmenter to {DRN_D_105_FILENAME} (from {DRN_D_105_URL}) or to a checkpoint written by "
           f"gancompress train-segmenter")
    if not path.is_file():
        raise MissingFileError(
            f"segmenter {path} not found: for Cityscapes mIoU comparable with published figures download "
            f"{DRN_D_105_FILENAME} from {DRN_D_105_URL}, or train your own with gancompress train-segmenter; "
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
