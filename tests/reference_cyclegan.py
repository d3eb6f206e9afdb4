"""Reference nets: pytorch-CycleGAN-and-pix2pix's layouts, rebuilt for tests.

They rebuild pix2pix's UnetGenerator / ResnetGenerator / NLayerDiscriminator module trees from
their documented layout (nested UnetSkipConnectionBlock, Sequential indices, in-place
activations, dropout positions, conv bias only with InstanceNorm), so a state dict they write has
the keys and shapes of the real code's files (latest_net_G.pth, latest_net_D.pth, ...).
"""
from __future__ import annotations

import torch
from torch import nn


def ref_norm(kind: str):
    if kind == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    if kind == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if kind == "instance_old":  # the 2018 code: InstanceNorm tracked (unused) running statistics
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=True)
    raise ValueError(kind)


class RefSkipBlock(nn.Module):
    def __init__(self, outer, inner, in_nc=None, sub=None, outermost=False, innermost=False,
                 norm="batch", dropout=False):
        super().__init__()
        self.outermost = outermost
        bias = norm != "batch"
        make = ref_norm(norm)
        in_nc = outer if in_nc is None else in_nc
        down_conv = nn.Conv2d(in_nc, inner, 4, 2, 1, bias=bias)
        if outermost:
            layers = [down_conv, sub, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2, True), down_conv,
                      nn.ReLU(True), nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias), make(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down_conv, make(inner), sub,
                      nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=bias), make(outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        # the in-place LeakyReLU has already changed x when it is concatenated, as in pix2pix
        return torch.cat([x, self.model(x)], 1)


class RefUnet(nn.Module):
    def __init__(self, in_nc, out_nc, num_downs, ngf, norm="batch", dropout=False):
        super().__init__()
        block = RefSkipBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = RefSkipBlock(ngf * 8, ngf * 8, sub=block, norm=norm, dropout=dropout)
        block = RefSkipBlock(ngf * 4, ngf * 8, sub=block, norm=norm)
        block = RefSkipBlock(ngf * 2, ngf * 4, sub=block, norm=norm)
        block = RefSkipBlock(ngf, ngf * 2, sub=block, norm=norm)
        self.model = RefSkipBlock(out_nc, ngf, in_nc=in_nc, sub=block, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)


class RefResnetBlock(nn.Module):
    def __init__(self, dim, norm, dropout, bias):
        super().__init__()
        make = ref_norm(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make(dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias), make(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class RefResnet(nn.Module):
    def __init__(self, in_nc, out_nc, ngf, n_blocks, norm="instance", dropout=False):
        super().__init__()
        bias = norm != "batch"
        make = ref_norm(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7, bias=bias), make(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2 ** i
            layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=bias), make(ngf * m * 2), nn.ReLU(True)]
        layers += [RefResnetBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
        for i in range(2):
            m = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1, bias=bias),
                       make(ngf * m // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class RefNLayerD(nn.Module):
    def __init__(self, in_nc, ndf, n_layers, norm):
        super().__init__()
        bias = norm != "batch"
        make = ref_norm(norm)
        layers = [nn.Conv2d(in_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=bias), make(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias), make(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def randomise(net: nn.Module, seed: int) -> nn.Module:
    """Random weights, biases and running statistics, so that every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return net
