"""Rebuild a generator exported by ``gancompress export --state-dict`` with torch alone.

This file is shipped next to the weights (``<name>.pth``, tensors only) and their architecture
record (``<name>.json``); it needs only torch, not gancompress. Use it as

    from portable_loader import load
    net = load("student.json")          # an nn.Module in eval mode
    image = net(x)                      # x: (N, C, H, W) in [-1, 1] -> (N, C', H, W) in [-1, 1]

or ``python portable_loader.py student.json`` to check that the files load and run.

The record names the net's class and constructor arguments and, for every convolution and norm
layer, its widths (pruning makes them uneven). The class is built at full width, each listed
layer is replaced by one of the recorded widths, and the weights are loaded strictly. The
classes below reproduce gancompress's generators module for module, so the state-dict keys
match.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

FORMAT = "gancompress-portable-generator"
VERSION = 1


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "instance_affine":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r} (valid: batch, instance, instance_affine, none)")


class UnetGenerator(nn.Module):
    """pix2pix's U-Net as flat lists of blocks: ``downs[i]`` and ``ups[j]``, concatenation skips."""

    def __init__(self, input_nc=3, output_nc=3, num_downs=8, ngf=64, norm="batch", dropout=True):
        super().__init__()
        widths = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        bias = norm != "batch"
        downs = []
        for i, out_ch in enumerate(widths):
            layers = [nn.LeakyReLU(0.2)] if i > 0 else []
            layers.append(nn.Conv2d(input_nc if i == 0 else widths[i - 1], out_ch, 4, 2, 1, bias=bias))
            if 0 < i < num_downs - 1:
                layers.append(_norm(norm, out_ch))
            downs.append(nn.Sequential(*layers))
        self.downs = nn.ModuleList(downs)
        ups = []
        for j in range(num_downs):
            level = num_downs - 1 - j
            in_ch = widths[level] if j == 0 else widths[level] * 2
            layers = [nn.ReLU()]
            if level == 0:
                layers += [nn.ConvTranspose2d(in_ch, output_nc, 4, 2, 1), nn.Tanh()]
            else:
                layers += [nn.ConvTranspose2d(in_ch, widths[level - 1], 4, 2, 1, bias=bias),
                           _norm(norm, widths[level - 1])]
                if dropout and 0 < j < num_downs - 4:
                    layers.append(nn.Dropout(0.5))
            ups.append(nn.Sequential(*layers))
        self.ups = nn.ModuleList(ups)

    def forward(self, x):
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        h = self.ups[0](skips[-1])
        for j in range(1, len(self.ups)):
            h = self.ups[j](torch.cat([skips[-1 - j], h], 1))
        return h


class SeparableConv2d(nn.Module):
    """Depthwise conv, norm, pointwise 1x1 conv."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, norm="instance", bias=True):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=bias),
            _norm(norm, in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=bias))

    def forward(self, x):
        return self.conv(x)


class ResnetBlock(nn.Module):
    """``x + norm(conv(relu(norm(conv(x)))))`` with reflection padding."""

    def __init__(self, dim, norm="instance", dropout=False, separable=False):
        super().__init__()
        bias = norm != "batch"

        def conv():
            if separable:
                return SeparableConv2d(dim, dim, 3, norm=norm, bias=bias)
            return nn.Conv2d(dim, dim, 3, bias=bias)

        layers = [nn.ReflectionPad2d(1), conv(), _norm(norm, dim), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), conv(), _norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator (``model`` Sequential, as pytorch-CycleGAN-and-pix2pix)."""

    separable = False

    def __init__(self, input_nc=3, output_nc=3, ngf=64, n_blocks=9, norm="instance", dropout=False):
        super().__init__()
        bias = norm != "batch"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias), _norm(norm, ngf), nn.ReLU()]
        for i in range(2):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), _norm(norm, 2 * c), nn.ReLU()]
        layers += [ResnetBlock(4 * ngf, norm, dropout, self.separable) for _ in range(n_blocks)]
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                       _norm(norm, c // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class MobileResnetGenerator(ResnetGenerator):
    """The ResNet generator with depthwise-separable residual convs."""

    separable = True


CLASSES = {c.__name__: c for c in (UnetGenerator, ResnetGenerator, MobileResnetGenerator)}


def _resized(module: nn.Module, spec: dict) -> nn.Module:
    """A fresh layer like ``module`` with the widths of ``spec`` (weights are loaded afterwards)."""
    kind = type(module).__name__
    if kind != spec["type"]:
        raise ValueError(f"the record says {spec['type']} where the class builds {kind}")
    if isinstance(module, nn.ConvTranspose2d):
        return nn.ConvTranspose2d(spec["in"], spec["out"], module.kernel_size, module.stride, module.padding,
                                  module.output_padding, spec["groups"], module.bias is not None, module.dilation)
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(spec["in"], spec["out"], module.kernel_size, module.stride, module.padding,
                         module.dilation, spec["groups"], module.bias is not None, module.padding_mode)
    if isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)):
        return type(module)(spec["num_features"], module.eps, module.momentum, module.affine,
                            module.track_running_stats)
    raise ValueError(f"cannot resize a {kind}")


def build(record: dict) -> nn.Module:
    """The net a record describes, at its recorded widths, with uninitialised weights."""
    if record.get("format") != FORMAT or record.get("version") != VERSION:
        raise ValueError(f"not a {FORMAT} record of version {VERSION}")
    if record["class"] not in CLASSES:
        raise ValueError(f"unknown class {record['class']!r} (this loader builds {', '.join(CLASSES)})")
    net = CLASSES[record["class"]](**record["args"])
    for name, spec in record["layers"].items():
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name)
        setattr(parent, child, _resized(getattr(parent, child), spec))
    return net


def load(json_path: str | Path, map_location: str | torch.device = "cpu", check_sha256: bool = True) -> nn.Module:
    """Build the net of ``json_path`` and load the weights file it names (beside it); eval mode."""
    json_path = Path(json_path)
    record = json.loads(json_path.read_text())
    weights = json_path.parent / record["weights"]
    if check_sha256:
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != record["sha256"]:
            raise ValueError(f"{weights}: sha256 {digest} differs from the record's {record['sha256']}")
    net = build(record)
    net.load_state_dict(torch.load(weights, map_location=map_location, weights_only=True))
    return net.to(map_location).eval()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python portable_loader.py <name>.json")
    rec = json.loads(Path(sys.argv[1]).read_text())
    generator = load(sys.argv[1])
    side = rec["input"]["multiple_of"]
    with torch.no_grad():
        out = generator(torch.zeros(1, rec["input"]["channels"], side, side))
    print(f"{rec['class']} ({rec['family']} {rec['generator']}): "
          f"{sum(p.numel() for p in generator.parameters())} parameters, "
          f"{tuple(out.shape)} output for a {side}x{side} input")
