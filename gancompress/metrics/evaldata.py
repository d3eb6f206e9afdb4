"""What a family evaluates a generator on: the plain descriptions the metric registry reads.

A family says which metrics it reports (``Family.eval_metrics``) and, per generator, an
:class:`EvalData`: the batches (generator input, paired target, label maps), the real image set
FID compares with, baselines scored without a generator (bicubic upscaling, the untranslated
input, the real photo), the PSNR border, and the published figure each metric could be set
against (:class:`Reference`). Metrics never read datasets themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch


@dataclass
class EvalBatch:
    """One batch of evaluation items.

    Attributes:
        inputs: the generator's input, (N, ...) as the generator takes it (images in [-1, 1],
            latent codes, low-resolution images).
        target: (N, 3, H, W) ground truth in [0, 1] for paired metrics (PSNR/SSIM), or None.
        load_labels: returns the N label maps for mIoU, each (H, W) class ids or (H, W, 3)
            colours (converted with the segmenter's palette); None when there are none. Called
            only by metrics that read :attr:`labels` (full-resolution label files are large).
    """

    inputs: torch.Tensor
    target: torch.Tensor | None = None
    load_labels: Callable[[], Sequence[torch.Tensor]] | None = None

    @cached_property
    def labels(self) -> list[torch.Tensor] | None:
        """The label maps (loaded on first use), or None."""
        return None if self.load_labels is None else list(self.load_labels())


@dataclass(frozen=True)
class ImageSet:
    """A fixed set of real images: the reference set of FID/KID, or a baseline's images.

    Attributes:
        name: names the set in records, e.g. "val B" or "testA".
        files: the image files behind it, in the order ``images`` yields them.
        transform: how a file becomes an image (crop, resize), part of the feature-cache key.
        images: called with no argument, yields (N, 3, H, W) batches in [0, 1].
    """

    name: str
    files: tuple[Path, ...]
    transform: str
    images: Callable[[], Iterable[torch.Tensor]]

    def __len__(self) -> int:
        return len(self.files)


@dataclass(frozen=True)
class Baseline:
    """A role scored without a generator, and the metrics it is scored with.

    Attributes:
        metrics: names of the metrics that score it (e.g. ("psnr_ssim",) for bicubic).
        output: maps a batch to the role's (N, 3, H, W) images in [0, 1], or None.
        images: the same images as a fixed set, so FID can reuse cached features, or None.
    """

    metrics: tuple[str, ...]
    output: Callable[[EvalBatch], torch.Tensor] | None = None
    images: ImageSet | None = None


@dataclass(frozen=True)
class Reference:
    """The published figure a metric could be compared with, and the conditions of that figure.

    Attributes:
        table: names the published table and setting, e.g. "GCC Table 2 / GAN Compression:
            pix2pix Cityscapes mIoU (DRN-D-105)".
        images: the number of evaluation images of the published protocol (None: not fixed).
        resolution: (H, W) of the generated images in the published protocol (None: any).
        blocker: a known difference that makes this run's figure not comparable, or "".
        note: a caveat that does not make it incomparable (a small implementation difference).
    """

    table: str
    images: int | None = None
    resolution: tuple[int, int] | None = None
    blocker: str = ""
    note: str = ""


@dataclass(frozen=True)
class EvalData:
    """Everything the metrics need to evaluate one generator.

    Attributes:
        split: names the evaluation data in records, e.g. "val" or "testA -> testB".
        count: number of evaluation items ``batches`` yields in total.
        batches: called with no argument, yields :class:`EvalBatch` in a fixed order (every call
            the same items, so teacher and student see the same inputs).
        resolution: (H, W) of the generated images, or None when it varies (whole SR images).
        reals: the real images FID/KID compare with, or None when the family has none.
        baselines: role name -> :class:`Baseline`.
        psnr_border: pixels cropped from each side before PSNR/SSIM (the SR scale).
        references: metric name -> :class:`Reference` (absent: no published figure to compare with).
    """

    split: str
    count: int
    batches: Callable[[], Iterable[EvalBatch]]
    resolution: tuple[int, int] | None = None
    reals: ImageSet | None = None
    baselines: Mapping[str, Baseline] = field(default_factory=dict)
    psnr_border: int = 0
    references: Mapping[str, Reference] = field(default_factory=dict)
