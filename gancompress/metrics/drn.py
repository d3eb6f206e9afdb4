"""DRN-D-105 with the DRNSeg head: the Cityscapes segmenter that published pix2pix mIoU is measured with.

GAN Compression (Li et al. 2020), GCC and OMGD score pix2pix on Cityscapes with the dilated
residual network DRN-D-105 of Yu et al. (CVPR 2017, github.com/fyu/drn) trained on Cityscapes'
19 classes, from the file ``drn-d-105_ms_cityscapes.pth`` (:data:`DRN_D_105_URL`). This module
defines that network so the file loads as weights (``torch.load(weights_only=True)``) into an
architecture of ours, and describes their evaluation protocol (:func:`drn_protocol`).

Architecture ("D" variant, 105 layers):

* stage 0: 7x7 conv (3 -> 16), BN, ReLU;
* stages 1-2: plain 3x3 conv + BN + ReLU layers (16, then 32 with stride 2);
* stages 3-6: bottleneck residual blocks (1x1, 3x3, 1x1 with 4x expansion; a 1x1 conv + BN
  shortcut where the shape changes) with 3, 4, 23 and 3 blocks of widths 64, 128, 256, 512;
  stages 3-4 have stride 2, stages 5-6 keep the resolution and dilate their 3x3 convs by 2 and 4;
* stages 7-8: plain 3x3 conv + BN + ReLU layers without residuals (512 channels, dilation 2
  then 1), which remove the gridding artefacts of the dilations;
* head (DRNSeg): ``seg``, a 1x1 conv to the 19 classes at 1/8 resolution, and ``up``, a
  depthwise 16x16 transposed conv of stride 8 with fixed bilinear weights back to full size.

State-dict layout (the contract with the published file): ``base.<stage>.`` then, for plain
stages, ``0.weight`` (conv) and ``1.{weight,bias,running_mean,running_var}`` (BN); for residual
stages ``<block>.conv{1,2,3}.weight``, ``<block>.bn{1,2,3}.*`` and, in each stage's first block,
``<block>.downsample.0.weight`` / ``downsample.1.*``; then ``seg.weight`` (19, 512, 1, 1),
``seg.bias`` (19,) and ``up.weight`` (19, 1, 16, 16). The published file predates PyTorch 0.4 and
has no ``num_batches_tracked`` entries.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Where the published weights come from (fyu/drn's README; GAN Compression's README points there).
DRN_D_105_URL = "http://go.yf.io/drn-cityscapes-models"
DRN_D_105_FILENAME = "drn-d-105_ms_cityscapes.pth"

#: Blocks (residual stages) or convs (plain stages) per stage 1..8 of DRN-D-105.
DRN_D_105_LAYERS = (1, 1, 3, 4, 23, 3, 1, 1)
#: Output width of stages 1..8 (residual stages: the bottleneck width, expanded 4x at the output).
DRN_D_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
CITYSCAPES_CLASSES = 19

#: Normalisation of the Cityscapes training photos (fyu/drn's info.json, used by GAN Compression).
CITYSCAPES_MEAN = (0.29010095242892997, 0.32808144844279574, 0.28696394422942517)
CITYSCAPES_STD = (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)
#: Resolution of the Cityscapes gtFine label maps the published protocol scores against (H, W).
CITYSCAPES_LABEL_SIZE = (1024, 2048)
#: Number of Cityscapes validation images, the published evaluation set.
CITYSCAPES_VAL_IMAGES = 500


class Bottleneck(nn.Module):
    """ResNet bottleneck block with a dilated 3x3 conv.

    Args:
        in_channels: input channels.
        planes: bottleneck width; the block outputs ``4 * planes`` channels.
        stride: stride of the 3x3 conv (and of the shortcut).
        dilation: dilation (and padding) of the 3x3 conv.

    Input (N, in_channels, H, W) -> (N, 4 * planes, H / stride, W / stride).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _plain_stage(in_channels: int, channels: int, convs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``convs`` times (3x3 conv, BN, ReLU); only the first conv strides."""
    modules: list[nn.Module] = []
    for i in range(convs):
        modules += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=stride if i == 0 else 1,
                              padding=dilation, dilation=dilation, bias=False),
                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


def _residual_stage(in_channels: int, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``blocks`` bottlenecks; the first changes width and stride."""
    modules = [Bottleneck(in_channels, planes, stride, dilation)]
    modules += [Bottleneck(planes * Bottleneck.expansion, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*modules)


def drn_d_base(layers: tuple[int, ...] = DRN_D_105_LAYERS,
               channels: tuple[int, ...] = DRN_D_CHANNELS) -> nn.Sequential:
    """The DRN-D trunk without its classifier: 9 stages, output stride 8.

    Args:
        layers: per stage 1..8, convs (stages 1, 2, 7, 8) or bottleneck blocks (3-6); all > 0.
        channels: per stage 1..8, output width (bottleneck width for stages 3-6).

    Input (N, 3, H, W) -> (N, channels[7], H / 8, W / 8).
    """
    if len(layers) != 8 or len(channels) != 8 or min(layers) < 1:
        raise ValueError(f"DRN-D needs 8 stages with at least one layer each, got layers {layers}")
    wide = [c * Bottleneck.expansion for c in channels]
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(3, channels[0], 7, padding=3, bias=False), nn.BatchNorm2d(channels[0]),
                      nn.ReLU(inplace=True)),
        _plain_stage(channels[0], channels[0], layers[0]),
        _plain_stage(channels[0], channels[1], layers[1], stride=2),
        _residual_stage(channels[1], channels[2], layers[2], stride=2),
        _residual_stage(wide[2], channels[3], layers[3], stride=2),
        _residual_stage(wide[3], channels[4], layers[4], dilation=2),
        _residual_stage(wide[4], channels[5], layers[5], dilation=4),
        _plain_stage(wide[5], channels[6], layers[6], dilation=2),
        _plain_stage(channels[6], channels[7], layers[7]),
    )


def bilinear_kernel(size: int) -> torch.Tensor:
    """(size, size) bilinear interpolation filter of an upsampling transposed conv (FCN's filler).

    For stride ``s`` and kernel ``2s`` it interpolates linearly between input samples.
    """
    factor = math.ceil(size / 2)
    centre = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    ramp = 1.0 - (torch.arange(size, dtype=torch.float64, device="cpu") / factor - centre).abs()
    return torch.outer(ramp, ramp).float()


class DRNSeg(nn.Module):
    """DRN trunk + 1x1 class conv + fixed bilinear x8 upsampling (fyu/drn's DRNSeg head).

    Args:
        num_classes: output classes (19 for Cityscapes).
        layers, channels: the trunk (default DRN-D-105), see :func:`drn_d_base`.

    Call: (N, 3, H, W) normalised images (H, W multiples of 8) -> (N, num_classes, H, W) logits.
    (fyu/drn returns their log-softmax; the argmax, and so every prediction, is the same.)
    """

    def __init__(self, num_classes: int = CITYSCAPES_CLASSES, layers: tuple[int, ...] = DRN_D_105_LAYERS,
                 channels: tuple[int, ...] = DRN_D_CHANNELS):
        super().__init__()
        self.base = drn_d_base(layers, channels)
        self.seg = nn.Conv2d(channels[-1], num_classes, 1, bias=True)
        self.up = nn.ConvTranspose2d(num_classes, num_classes, 16, stride=8, padding=4, groups=num_classes,
                                     bias=False)
        if not self.up.weight.is_meta:  # a meta-device instance gets all its weights from a file
            with torch.no_grad():
                self.up.weight.copy_(bilinear_kernel(16).expand_as(self.up.weight))
        self.up.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.seg(self.base(x)))


def drn_protocol() -> dict:
    """GAN Compression's Cityscapes mIoU protocol (``metric/mIoU_score.py`` of mit-han-lab/gan-compression).

    The generated 256x256 image is quantised to 8 bits by truncation (their ``tensor2im``),
    scaled to [0, 1], normalised with :data:`CITYSCAPES_MEAN` / :data:`CITYSCAPES_STD` and
    segmented at 256x256; the per-class scores are bilinearly resized to the 2048x1024 gtFine
    trainId map (they use PIL's BILINEAR per channel; torch's bilinear with
    ``align_corners=False`` is used here, equal away from the image border), argmax-ed, and one
    19x19 confusion matrix over the 500 val images (label 255 ignored) gives the per-class IoU,
    averaged over classes that occur.
    """
    return {
        "segment_at": "generated resolution (256x256 in the published protocol)",
        "quantisation": "8-bit by truncation, as GAN Compression's tensor2im",
        "normalisation": {"mean": list(CITYSCAPES_MEAN), "std": list(CITYSCAPES_STD)},
        "upsampling": "bilinear scores to the label resolution (torch, align_corners=False), then argmax",
        "label_resolution_published": list(CITYSCAPES_LABEL_SIZE),
        "classes": CITYSCAPES_CLASSES,
        "ignore_index": 255,
        "confusion": "one matrix over the whole set; mean IoU over classes labelled or predicted",
    }
