"""VGG19 features for SRGAN's content loss, from torchvision's weights file on local disk.

SRGAN's "VGG54" loss compares the feature maps phi_{5,4}: the output of the 4th convolution's
ReLU before the 5th max-pool, i.e. torchvision's ``vgg19().features[:36]`` (layer name
``relu5_4``). Layers are named ``conv<block>_<k>``, ``relu<block>_<k>`` and ``pool<block>``,
counted from 1 the way the SRGAN paper and the VGG paper count them; the names are derived from
torchvision's own VGG19 configuration, so they always match the module that is built.

The weights are torchvision's ``vgg19-dcbb9e9d.pth`` (ImageNet), read from the path in
``eval.vgg19_weights``; nothing is downloaded. Only the feature layers up to the chosen one are
built and loaded (the 120M-parameter classifier is never allocated). Inputs in [-1, 1] are mapped
to [0, 1] and normalised with the ImageNet mean and standard deviation the weights were trained
with.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import MissingFileError

WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg19_config() -> list:
    """torchvision's VGG19 ('E') layer configuration: widths and 'M' for max-pool."""
    from torchvision.models.vgg import cfgs

    return list(cfgs["E"])


def vgg19_layer_names() -> list[str]:
    """Names of the modules of ``torchvision.models.vgg19().features``, in order.

    ``make_layers`` emits Conv2d + ReLU for every width and MaxPool2d for every 'M', so the
    names follow the configuration: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ...
    """
    names, block, k = [], 1, 0
    for entry in _vgg19_config():
        if entry == "M":
            names.append(f"pool{block}")
            block, k = block + 1, 0
        else:
            k += 1
            names += [f"conv{block}_{k}", f"relu{block}_{k}"]
    return names


def missing_weights_error(path: str) -> MissingFileError:
    """The one-line error for an absent VGG19 weights file (``path`` may be empty: not set)."""
    where = f"{path}: file not found" if path else "eval.vgg19_weights is not set"
    return MissingFileError(
        f"{where}: the VGG19 content loss needs torchvision's {WEIGHTS_FILE} (download it from "
        f"{WEIGHTS_URL}, the file torchvision itself downloads) and set eval.vgg19_weights to its path, "
        "or set model.content_loss: mse")


class VGGFeatures(nn.Module):
    """Frozen VGG19 features up to ``layer`` (inclusive), for images in [-1, 1].

    Args:
        weights: path of torchvision's ``vgg19-dcbb9e9d.pth``.
        layer: last layer kept, a name from :func:`vgg19_layer_names` (SRGAN's VGG54 is
            'relu5_4', features index 35).

    Shapes: (N, 3, H, W) in [-1, 1] -> (N, C, H / 2**p, W / 2**p) where p is the number of
    max-pools before ``layer`` (512 channels at H/16 for 'relu5_4').

    Raises:
        MissingFileError: the weights file is absent or does not hold VGG19's feature weights.
        ValueError: ``layer`` is not a VGG19 layer name.
    """

    def __init__(self, weights: str | Path, layer: str = "relu5_4"):
        super().__init__()
        from torchvision.models.vgg import make_layers

        names = vgg19_layer_names()
        if layer not in names:
            raise ValueError(f"unknown VGG19 layer {layer!r} (valid: {', '.join(names)})")
        path = Path(weights) if str(weights) else None
        if path is None or not path.is_file():
            raise missing_weights_error(str(weights))
        features = make_layers(_vgg19_config())[: names.index(layer) + 1]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: say which file, not a stack trace
            raise MissingFileError(f"{path}: cannot read it as torchvision's {WEIGHTS_FILE} ({exc.__class__.__name__}); "
                                   f"download it again from {WEIGHTS_URL}") from None
        if not isinstance(state, dict):
            state = {}
        wanted = {k: state.get(f"features.{k}") for k in features.state_dict()}
        absent = [k for k, v in wanted.items() if v is None]
        if absent:
            raise MissingFileError(f"{path}: not torchvision's {WEIGHTS_FILE} (no 'features.{absent[0]}'); "
                                   f"download it from {WEIGHTS_URL}")
        try:
            features.load_state_dict(wanted)
        except RuntimeError as exc:
            raise MissingFileError(f"{path}: its tensors do not fit VGG19 ({str(exc).splitlines()[-1].strip()}); "
                                   f"download {WEIGHTS_FILE} from {WEIGHTS_URL}") from None
        self.features = features.eval()
        self.layer = layer
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> "VGGFeatures":
        """Stays in eval mode: the feature extractor is fixed."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1.0) * 0.5 - self.mean) / self.std
        return self.features(x)
