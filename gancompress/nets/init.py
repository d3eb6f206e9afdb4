"""Weight initialisation shared by the families."""
from __future__ import annotations

from torch import nn

from .layers import CONV_TYPES


def init_normal(model: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix/CycleGAN init: conv and linear weights ~ N(0, gain), norm scales ~ N(1, gain), biases 0."""
    for m in model.modules():
        if isinstance(m, CONV_TYPES + (nn.Linear,)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return model
