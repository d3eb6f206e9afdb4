"""Real-vs-generated classifiers and the classifier-guided generator loss (METHOD 6).

Following the GAN-classifier paper, a classifier C is trained on balanced batches of real images
and samples of frozen generators (BCE, decision threshold 0.5); a later generator adds
``phi * L_guide`` to its loss, where ``L_guide`` sums ``L_fool(C(G(x)))`` over every earlier
classifier ('fool-all') or uses the latest round's only ('memoryless'). ``L_fool`` is the BCE
of calling G's samples real, ``softplus(-logit)``. The paper's JPEG encoding of the classifier's
inputs is not applied here.

Classifiers are files written by ``gancompress train-detector`` (:func:`save_classifier`); they load
with ``weights_only=True`` and come back frozen (:func:`load_classifier`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, MissingFileError, RecipeError
from ..files.checkpoint import atomic_save, safe_load
from ..nets.layers import frozen_call

log = logging.getLogger(__name__)

CLASSIFIER_FORMAT = "gancompress-classifier"
GUIDANCE_MODES = ("fool-all", "memoryless")


class RealFakeClassifier(nn.Module):
    """A small CNN telling real images from generated ones.

    ``n_blocks`` stride-2 4x4 convs with LeakyReLU 0.2 (widths width, 2*width, ... capped at
    8*width), global average pooling and a linear layer to one logit. No normalisation layer, so
    a sample's logit does not depend on the rest of its batch. Global pooling lets it judge any
    image size.

    Args:
        in_channels: image channels.
        width: channels of the first conv.
        n_blocks: number of stride-2 conv blocks.

    Shapes: (N, in_channels, H, W) in [-1, 1] -> (N,) logits; a logit > 0 means "real".
    """

    def __init__(self, in_channels: int = 3, width: int = 32, n_blocks: int = 3):
        super().__init__()
        if min(in_channels, width, n_blocks) < 1:
            raise ValueError(f"in_channels, width and n_blocks must be >= 1, got {in_channels}, {width}, {n_blocks}")
        self.config = {"in_channels": int(in_channels), "width": int(width), "n_blocks": int(n_blocks)}
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(n_blocks):
            c_out = width * min(2 ** i, 8)
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def fool_loss(logits: torch.Tensor) -> torch.Tensor:
    """BCE of calling generated samples real: ``softplus(-logits).mean()``, a scalar.

    Args:
        logits: (N,) classifier logits of generated images.
    """
    return F.softplus(-logits).mean()


def classifier_guidance(classifiers: list[nn.Module], images: torch.Tensor, mode: str = "fool-all") -> torch.Tensor:
    """The generator's classifier term ``sum_c L_fool(C(images))`` (the caller weighs it by phi).

    The classifiers' parameters are applied detached, so they receive no gradient whatever their
    ``requires_grad``; the gradient flows to ``images`` (and so to the generator).

    Args:
        classifiers: real-vs-generated classifiers, oldest round first, each
            (N, C, H, W) -> (N,) logits (e.g. from :func:`load_classifier`).
        images: generated images (N, C, H, W) in [-1, 1].
        mode: 'fool-all' sums over every classifier; 'memoryless' uses only the last one.

    Returns:
        A scalar tensor.
    """
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"unknown classifier guidance mode {mode!r} (valid: {', '.join(GUIDANCE_MODES)})")
    if not classifiers:
        raise ValueError("classifier guidance needs at least one classifier")
    used = classifiers[-1:] if mode == "memoryless" else classifiers
    return sum(fool_loss(frozen_call(c, images)) for c in used)


@dataclass
class TrainedClassifier:
    """What :func:`train_classifier` returns.

    Attributes:
        model: the classifier, frozen and in eval mode.
        accuracy: held-out accuracy at logit 0 (probability 0.5), over as many real as
            generated images.
        eval_images: held-out images scored (real plus generated).
        train_images: training images per epoch (real plus generated).
    """

    model: RealFakeClassifier
    accuracy: float
    eval_images: int
    train_images: int


def _balanced(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(real.shape[0], fake.shape[0])
    return real[:n], fake[:n]


@torch.no_grad()
def classifier_accuracy(model: nn.Module, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
                        device: str | torch.device = "cpu") -> tuple[float, int]:
    """Accuracy at logit 0 over balanced (real, generated) batches; returns (accuracy, images).

    Args:
        model: (N, C, H, W) -> (N,) logits.
        pairs: (real, generated) image batches, each (N_i, C, H, W) in [-1, 1]; the larger of the
            two is cut to the smaller's size.
        device: where to run.
    """
    correct, total = 0, 0
    for real, fake in pairs:
        real, fake = _balanced(real.to(device), fake.to(device))
        correct += int((model(real) > 0).sum()) + int((model(fake) <= 0).sum())
        total += 2 * real.shape[0]
    if total == 0:
        raise ValueError("no held-out images to measure the classifier's accuracy on")
    return correct / total, total


def train_classifier(train_pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     eval_pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], *, epochs: int = 5,
                     lr: float = 2e-4, in_channels: int = 3, width: int = 32, n_blocks: int = 3,
                     device: str | torch.device = "cpu", seed: int = 0) -> TrainedClassifier:
    """Train a :class:`RealFakeClassifier` on balanced real vs generated batches (BCE).

    Args:
        train_pairs: (real, generated) image batches, each (N_i, C, H, W) in [-1, 1]; iterated
            once per epoch, so it must be re-iterable (a list, a DataLoader-backed object), not a
            generator. Each batch is cut to as many generated as real images.
        eval_pairs: held-out (real, generated) batches, iterated once for the accuracy.
        epochs: passes over ``train_pairs``.
        lr: Adam learning rate (betas 0.5, 0.999).
        in_channels, width, n_blocks: the classifier's constructor arguments.
        device: where to train.
        seed: seeds the classifier's initialisation (the global RNG is left as it was).

    Returns:
        A :class:`TrainedClassifier` whose model is frozen and in eval mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RealFakeClassifier(in_channels, width, n_blocks)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    seen = 0
    for epoch in range(epochs):
        seen, loss_sum, steps = 0, 0.0, 0
        for real, fake in train_pairs:
            real, fake = _balanced(real.to(device), fake.to(device).detach())
            # Labels: 1 for real, 0 for generated; equal counts make this the balanced BCE.
            loss = 0.5 * (F.softplus(-model(real)).mean() + F.softplus(model(fake)).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += 2 * real.shape[0]
            loss_sum += loss.item()
            steps += 1
        if steps == 0:
            raise ValueError(f"epoch {epoch + 1} had no training batches (is train_pairs a one-shot generator?)")
        log.info("classifier epoch %d/%d: BCE %.4f over %d images", epoch + 1, epochs, loss_sum / steps, seen)
    model.eval().requires_grad_(False)
    accuracy, count = classifier_accuracy(model, eval_pairs, device)
    log.info("classifier held-out accuracy %.4f on %d images", accuracy, count)
    return TrainedClassifier(model, accuracy, count, seen)


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value, where: str) -> None:
    """Raise TypeError unless ``value`` is plain data that ``weights_only`` loading accepts."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be strings, got {type(k).__name__}")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(f"{where}: {type(value).__name__} is not plain data (use str, numbers, lists, dicts)")


def save_classifier(path: str | Path, model: RealFakeClassifier, meta: dict) -> Path:
    """Write a self-describing classifier file atomically.

    The file holds ``{"format", "config" (constructor arguments), "state_dict", "meta"}``.

    Args:
        path: file to write (folders are created).
        model: the classifier.
        meta: plain data describing what it was trained on (family, generator file, role,
            accuracy, image counts, ...); a Path or tensor in it raises TypeError, since
            ``weights_only`` loading would refuse the file.

    Returns:
        ``path``.
    """
    _check_plain(meta, "meta")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save({"format": CLASSIFIER_FORMAT, "config": dict(model.config), "state_dict": state,
                        "meta": meta}, path)


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[RealFakeClassifier, dict]:
    """Read a file written by :func:`save_classifier` (``weights_only``: no code runs).

    Args:
        path: the classifier file.
        device: where to put the model.

    Returns:
        (classifier frozen and in eval mode on ``device``, its ``meta`` dict).

    Raises:
        MissingFileError: the file does not exist.
        CheckpointError: the file is unreadable or not a gancompress classifier.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: classifier file not found; classifiers are made by "
                               "gancompress train-detector RUN_DIR (see classifier.paths)")
    ckpt = safe_load(path, map_location="cpu")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CLASSIFIER_FORMAT:
        raise CheckpointError(f"{path}: not a gancompress classifier file (expected one written by "
                              "gancompress train-detector)")
    try:
        # The constructor's random init is overwritten at once; drawing it from a forked RNG keeps
        # loading a classifier from shifting the caller's random stream (stage 3's dropout masks).
        with torch.random.fork_rng(devices=[]):
            model = RealFakeClassifier(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: classifier weights do not fit its recorded configuration "
                              f"({str(exc).splitlines()[0][:160]})") from None
    return model.to(device).eval().requires_grad_(False), dict(ckpt.get("meta") or {})


def load_classifiers(paths: tuple[str, ...] | list[str], names: tuple[str, ...],
                     device: torch.device) -> dict[str, list[nn.Module]]:
    """The frozen classifiers of ``classifier.paths`` by the generator they judge, oldest first.

    A classifier file records the generator it was trained on (``gancompress train-detector``);
    one that records none judges every generator of ``names``.
    """
    out: dict[str, list[nn.Module]] = {}
    for path in paths:
        model, meta = load_classifier(path, device)
        judged = meta.get("generator")
        if judged is not None and judged not in names:
            raise RecipeError(f"classifier.paths: {path} judges generator {judged!r}, which this family does not "
                              f"have ({', '.join(names)}); train one with gancompress train-detector on this run")
        for n in ([judged] if judged is not None else names):
            out.setdefault(n, []).append(model)
    return out
