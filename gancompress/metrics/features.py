"""A small feature network for FID/KID where the Inception weights are not available (the demos).

FID and KID need an image embedding. The published figures use Inception-V3's pool3 features,
whose weights cannot be fetched offline; the demos instead train a small net of our own on their
own images at data-creation time. Its figures measure how far generated images are from the
real set *in this net's eyes*: reproducible and comparable between runs on the same file, never
with published FID (:data:`NOT_COMPARABLE`).

Architecture (:class:`FeatureNet`): ``len(widths)`` blocks of conv3x3 -> BatchNorm -> ReLU ->
2x2 average pooling, then global average pooling: a ``widths[-1]``-d embedding. A linear
classification head on the embedding is used only to train it.

Checkpoint (a plain dict, written atomically, read with ``weights_only=True``; loading never runs
code)::

    {"format": "gancompress-feature-net", "version": 1,
     "arch": {"in_channels": 3, "widths": [16, 32, 64, 128], "num_classes": K, "input_size": S},
     "state_dict": {...},
     "meta": {"classes": [...], "trained_on": str, "held_out_accuracy": float | None, ...}}

The format name differs from ``gancompress-features``, the real-feature cache files of
:mod:`gancompress.metrics.feature_cache`, so neither file is ever taken for the other.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, DataError
from ..files.checkpoint import atomic_save

log = logging.getLogger(__name__)

#: Value of the ``"format"`` key of feature-net checkpoints.
FEATURE_NET_FORMAT = "gancompress-feature-net"
FEATURE_NET_VERSION = 1
#: The protocol record's evaluator kind for a feature net.
FEATURE_NET_KIND = "demo-features"
#: The label every figure measured with a feature net carries.
LABEL = "demo feature net: not comparable with published FID"
#: Why a figure measured with a feature net is not comparable with a published one.
NOT_COMPARABLE = "demo feature net trained on the demo's own images: not comparable with published FID"

# Bounds on the architecture a file may ask for: a hostile or damaged file cannot make us allocate
# an absurd network before its state dict is checked.
_MAX_WIDTH = 4096
_MAX_BLOCKS = 8
_MAX_CLASSES = 100_000
_MAX_INPUT = 1024


class FeatureNet(nn.Module):
    """Conv blocks + global average pooling -> an embedding; a linear head for training only.

    Args:
        in_channels: image channels (3).
        widths: output channels of each block; the embedding has ``widths[-1]`` dimensions.
        num_classes: outputs of the training head.
        input_size: side S of the square images the net was trained on; extractors resize to it.

    ``forward(x)``: x (N, in_channels, S, S) float in [0, 1] -> (N, widths[-1]) embedding.
    ``logits(x)``: the same input -> (N, num_classes).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 128), num_classes: int = 2,
                 input_size: int = 32):
        super().__init__()
        self.arch = {"in_channels": int(in_channels), "widths": [int(w) for w in widths],
                     "num_classes": int(num_classes), "input_size": int(input_size)}
        blocks, c = [], int(in_channels)
        for w in widths:
            blocks += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.AvgPool2d(2)]
            c = w
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c, int(num_classes))

    @property
    def dim(self) -> int:
        """Dimension of the embedding."""
        return self.arch["widths"][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [0, 1] -> [-1, 1]: the range the generators produce before to_unit, centred for the first conv.
        return self.features(x * 2.0 - 1.0).mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, num_classes) of images (N, C, S, S) in [0, 1]."""
        return self.head(self.forward(x))


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) float images resized to (N, C, size, size), bilinear with antialiasing; unchanged
    when already that size. The one resize of feature-net inputs, for training and extraction alike."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


# --- the checkpoint -------------------------------------------------------------------------------

def _int_in(arch: Mapping, key: str, low: int, high: int, where: str) -> int:
    value = arch.get(key)
    if type(value) is not int or not low <= value <= high:
        raise CheckpointError(f"{where}: arch.{key} is {value!r}, expected an integer in [{low}, {high}]; "
                              f"write the file again with gancompress.metrics.features.save_feature_net")
    return value


def _check_arch(arch: object, where: str) -> dict:
    """The constructor arguments of a checkpoint's ``arch``, type- and range-checked."""
    if not isinstance(arch, Mapping):
        raise CheckpointError(f"{where}: 'arch' is a {type(arch).__name__}, not a dict of FeatureNet arguments; "
                              f"write the file again with gancompress.metrics.features.save_feature_net")
    widths = arch.get("widths")
    if (not isinstance(widths, (list, tuple)) or not 1 <= len(widths) <= _MAX_BLOCKS
            or any(type(w) is not int or not 1 <= w <= _MAX_WIDTH for w in widths)):
        raise CheckpointError(f"{where}: arch.widths is {widths!r}, expected 1 to {_MAX_BLOCKS} integers in "
                              f"[1, {_MAX_WIDTH}]; write the file again with save_feature_net")
    return {"in_channels": _int_in(arch, "in_channels", 1, 4, where), "widths": list(widths),
            "num_classes": _int_in(arch, "num_classes", 1, _MAX_CLASSES, where),
            "input_size": _int_in(arch, "input_size", 2 ** len(widths), _MAX_INPUT, where)}


def feature_net_checkpoint(net: FeatureNet, meta: Mapping) -> dict:
    """The checkpoint dict of ``net`` (see the module docstring); ``meta`` says what it was trained on."""
    return {"format": FEATURE_NET_FORMAT, "version": FEATURE_NET_VERSION, "arch": dict(net.arch),
            "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, "meta": dict(meta)}


def save_feature_net(net: FeatureNet, out: str | Path, meta: Mapping) -> Path:
    """Write ``net`` as a feature-net checkpoint to ``out`` atomically; returns ``out``."""
    return atomic_save(feature_net_checkpoint(net, meta), out)


def is_feature_net(blob: object) -> bool:
    """Whether a loaded file is a feature-net checkpoint (by its ``format`` key, nothing else)."""
    return isinstance(blob, Mapping) and blob.get("format") == FEATURE_NET_FORMAT


def feature_net_from_checkpoint(blob: Mapping, where: str = "feature net") -> FeatureNet:
    """Rebuild the net of a checkpoint dict (already loaded with ``weights_only=True``), in eval mode.

    Raises:
        CheckpointError: the format, version, architecture or state dict is not what
            :func:`save_feature_net` writes (the message names the first problem).
    """
    from .weights import first_mismatch, load_into

    if not is_feature_net(blob):
        raise CheckpointError(f"{where}: not a {FEATURE_NET_FORMAT!r} checkpoint (its 'format' key is "
                              f"{blob.get('format') if isinstance(blob, Mapping) else None!r})")
    if blob.get("version") != FEATURE_NET_VERSION:
        raise CheckpointError(f"{where}: feature-net version {blob.get('version')!r}, this gancompress reads "
                              f"version {FEATURE_NET_VERSION}; make the file again with this version")
    net = FeatureNet(**_check_arch(blob.get("arch"), where))
    state = blob.get("state_dict")
    problem = first_mismatch(net, state) if isinstance(state, Mapping) else "it has no 'state_dict' dict"
    if problem:
        raise CheckpointError(f"{where}: the weights do not fit the architecture it declares: {problem}; "
                              f"make the file again with gancompress.metrics.features.train_feature_net")
    return load_into(net, state).eval()


def load_feature_net(path: str | Path) -> tuple[FeatureNet, dict]:
    """Load a feature-net checkpoint with ``weights_only=True``: (net in eval mode, its meta dict)."""
    from ..files.checkpoint import safe_load

    blob = safe_load(path)
    net = feature_net_from_checkpoint(blob, str(path))
    meta = blob.get("meta")
    return net, dict(meta) if isinstance(meta, Mapping) else {}


# --- training -------------------------------------------------------------------------------------

def augment(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.75, 1.0), flip: bool = True,
            jitter: float = 0.1) -> torch.Tensor:
    """Random crops (rescaled to the full size), horizontal flips and brightness/contrast jitter.

    Args:
        x: (N, C, H, W) float images in [0, 1].
        gen: the random stream (every draw comes from it, so a seed fixes the result).
        scale: range of the crop side as a fraction of the image side.
        flip: flip half the images left-right.
        jitter: brightness and contrast factors are drawn in [1 - jitter, 1 + jitter].

    Returns:
        (N, C, H, W) augmented images in [0, 1].
    """
    n = x.shape[0]
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - s)[:, None]
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s * sign, s
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    contrast = 1 + jitter * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    brightness = 1 + jitter * (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (((out - mean) * contrast + mean) * brightness).clamp(0.0, 1.0)


def _stack(images_by_class: Mapping[str, torch.Tensor], what: str,
           classes: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, C, H, W) float images in [0, 1], (N,) labels and the class names.

    Labels number the classes in the mapping's order, or as in ``classes`` when given (held-out
    images are labelled as the training classes).
    """
    if classes is None and len(images_by_class) < 2:
        raise DataError(f"{what}: a feature net needs images of at least 2 classes, got {len(images_by_class)}")
    names = list(images_by_class) if classes is None else classes
    xs, ys, sizes = [], [], set()
    for name, images in images_by_class.items():
        if name not in names:
            raise DataError(f"{what}: class {name!r} is not a training class ({', '.join(names)})")
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[0] == 0:
            raise DataError(f"{what}: class {name!r} must be a non-empty (N, C, H, W) tensor")
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        xs.append(images)
        ys.append(torch.full((images.shape[0],), names.index(name), dtype=torch.long))
        sizes.add(tuple(images.shape[1:]))
    if len(sizes) != 1:
        raise DataError(f"{what}: every class needs images of one shape, got {sorted(sizes)}")
    return torch.cat(xs), torch.cat(ys), names


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` (N, C, S, S) in [0, 1] that ``net`` (eval mode) classifies as ``labels`` (N,)."""
    was_training = net.training
    net.eval()
    correct = sum(int((net.logits(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, images.shape[0], batch_size))
    net.train(was_training)
    return correct / max(images.shape[0], 1)


def train_feature_net(
    images_by_class: Mapping[str, torch.Tensor],
    out: str | Path,
    *,
    epochs: int = 20,
    seed: int = 0,
    held_out: Mapping[str, torch.Tensor] | None = None,
    widths: Sequence[int] = (16, 32, 64, 128),
    batch_size: int = 16,
    lr: float = 3e-3,
    scale: tuple[float, float] = (0.75, 1.0),
    flip: bool = True,
    jitter: float = 0.1,
    trained_on: str = "",
) -> dict:
    """Train a :class:`FeatureNet` to tell the classes apart and save it as a feature-net checkpoint.

    Every draw (initialisation, batch order, augmentation) comes from ``seed``, so the same call
    gives the same weights and the same file bytes on the same torch build (training runs on one
    thread for that; the thread count is restored after); the global RNG state is left as it was.

    Args:
        images_by_class: class name -> (N_k, C, S, S) images, float in [0, 1] or uint8; every
            class the same shape. The class order is the label order.
        out: checkpoint path (written atomically).
        epochs: passes over the training images (AdamW, cosine decay to 0).
        seed: seed of everything random.
        held_out: class name -> images not trained on, scored after training; their classes
            must be among ``images_by_class``.
        widths: channels of the conv blocks; the embedding has ``widths[-1]`` dimensions.
        batch_size, lr: optimisation.
        scale, flip, jitter: augmentation (:func:`augment`).
        trained_on: what the images are, for the checkpoint's meta.

    Returns:
        the checkpoint's meta: {"classes", "trained_on", "train_images" (per class),
        "train_accuracy", "held_out_images", "held_out_accuracy" (None without ``held_out``),
        "epochs", "seed", "steps", "augment", "torch", "label"} plus "seconds" (training time, not
        saved in the file).
    """
    x, y, classes = _stack(images_by_class, "feature-net training images")
    if x.shape[2] != x.shape[3]:
        raise DataError(f"feature-net training images must be square, got {x.shape[2]}x{x.shape[3]}")
    hx = hy = None
    if held_out:
        hx, hy, _ = _stack(held_out, "held-out images", classes)
        if hx.shape[1:] != x.shape[1:]:
            raise DataError(f"held-out images are {tuple(hx.shape[1:])}, the training images {tuple(x.shape[1:])}")
    start = time.perf_counter()
    threads = torch.get_num_threads()
    # One thread: a multi-threaded conv sums in another order, so the weights (and the file's bytes,
    # which name the extractor in caches) would depend on the machine's core count.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = FeatureNet(x.shape[1], widths, len(classes), x.shape[2])
        step = _fit(net, x, y, torch.Generator().manual_seed(seed), epochs, batch_size, lr, scale, flip, jitter)
    finally:
        torch.set_num_threads(threads)
    net.eval()
    meta = {
        "classes": classes, "trained_on": trained_on,
        "train_images": {c: int((y == k).sum()) for k, c in enumerate(classes)},
        "train_accuracy": accuracy(net, x, y),
        "held_out_images": None if hx is None else {c: int((hy == classes.index(c)).sum()) for c in held_out},
        "held_out_accuracy": None if hx is None else accuracy(net, hx, hy),
        "epochs": int(epochs), "seed": int(seed), "steps": step,
        "augment": {"crop_scale": list(scale), "flip": bool(flip), "jitter": float(jitter)},
        "torch": str(torch.__version__), "label": LABEL,
    }
    # The time is returned, not saved: the same seed then writes the same bytes (and the same
    # extractor id, which keys the real-feature cache).
    save_feature_net(net, out, meta)
    seconds = time.perf_counter() - start
    held = "n/a" if hx is None else f"{100 * meta['held_out_accuracy']:.1f}%"
    log.info("trained feature net %s on %d images of %d classes in %.1fs: held-out accuracy %s", out, x.shape[0],
             len(classes), seconds, held)
    return {**meta, "seconds": round(seconds, 2)}


def _fit(net: FeatureNet, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, epochs: int, batch_size: int,
         lr: float, scale, flip, jitter) -> int:
    """Cross-entropy training of ``net`` on augmented (x, y) batches; returns the optimiser steps taken."""
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    total = max(epochs * math.ceil(x.shape[0] / batch_size), 1)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            if idx.numel() < 2:  # BatchNorm cannot train on one image
                continue
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))  # cosine decay to 0
            loss = F.cross_entropy(net.logits(augment(x[idx], gen, scale, flip, jitter)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return step
