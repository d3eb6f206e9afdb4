"""Transposed convolutions rewritten as ordinary ones, for runtimes that quantize only ``Conv``.

ONNX Runtime's CPU provider has no int8 kernel for ``ConvTranspose``: a quantized U-Net keeps its
whole decoder (about half its MACs, all at the higher resolutions) in fp32, with a
dequantize/quantize pair around every layer, and ends up slower than the fp32 file. A stride-``s``
transposed convolution is ``s * s`` interleaved ordinary convolutions over its input (one per
output phase), so it can be written as one ``Conv`` with ``s * s`` times the output channels on the
padded input, a slice per phase and a depth-to-space shuffle. The result is the same function, with
the same MACs where the kernel is a multiple of the stride (pix2pix's and SAGAN's 4x4, stride 2), and
every multiply-add in a ``Conv`` that the int8 kernels run.

For an output index ``o = s * i + a`` (phase ``a``) the transposed convolution adds
``x[i - d] * w[a + p + s * d]`` over every ``d`` with a kernel index inside ``[0, K)``; phase ``a``
therefore reads the input offsets ``e = -d`` in a window of its own. All phases share one kernel of
``T`` taps (the largest window), each phase's window placed by the slice it takes from the
convolution's output; taps a phase lacks hold zeros.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _phase_offsets(kernel: int, stride: int, padding: int) -> list[list[int]]:
    """Per output phase, the input offsets ``e`` it reads (``x[i + e]``), ascending."""
    out = []
    for a in range(stride):
        out.append(sorted(-d for d in range(-kernel, kernel + 1) if 0 <= a + padding + stride * d < kernel))
    return out


class SubpixelConvTranspose2d(nn.Module):
    """A ``ConvTranspose2d`` (groups 1, dilation 1) as pad, one ``Conv2d``, per-phase slices and a
    pixel shuffle: the same outputs, every MAC in an ordinary convolution.

    Args:
        source: the transposed convolution to copy (its weight and bias are read once).

    Shapes: as ``source``: (N, C_in, H, W) -> (N, C_out, H_out, W_out), where each ``H_out`` is a
    multiple of the stride (what :func:`convertible` checks).
    """

    def __init__(self, source: nn.ConvTranspose2d):
        super().__init__()
        (kh, kw), (sh, sw), (ph, pw) = source.kernel_size, source.stride, source.padding
        self.stride, self.out_channels = (sh, sw), source.out_channels
        # per axis: each phase's output count is the input's plus this many
        extra = [(k - 2 * p + op) // s - 1 for k, p, op, s in
                 zip(source.kernel_size, source.padding, source.output_padding, source.stride)]
        self.extra = tuple(extra)
        windows = [_phase_offsets(kh, sh, ph), _phase_offsets(kw, sw, pw)]
        # one kernel of T taps per axis; phase a's window starts at its lowest offset
        self.starts = tuple(tuple(w[0] for w in axis) for axis in windows)
        taps = [max(w[-1] - w[0] + 1 for w in axis) for axis in windows]
        before = [max(0, -min(st)) for st in self.starts]
        after = [max(0, m + max(st) + t - 1) for m, st, t in zip(extra, self.starts, taps)]
        self.before = tuple(before)
        self.pad = (before[1], after[1], before[0], after[0])  # F.pad order: left, right, top, bottom
        weight = source.weight.detach()  # (C_in, C_out, kh, kw)
        c_in, c_out = weight.shape[0], weight.shape[1]
        th, tw = taps
        w = torch.zeros(sh * sw, c_out, c_in, th, tw, dtype=weight.dtype)
        for a in range(sh):
            for b in range(sw):
                for ty in range(th):
                    for tx in range(tw):
                        ky = a + ph - sh * (self.starts[0][a] + ty)
                        kx = b + pw - sw * (self.starts[1][b] + tx)
                        if 0 <= ky < kh and 0 <= kx < kw:
                            w[a * sw + b, :, :, ty, tx] = weight[:, :, ky, kx].t()
        self.conv = nn.Conv2d(c_in, sh * sw * c_out, (th, tw), bias=source.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(w.reshape(sh * sw * c_out, c_in, th, tw))
            if source.bias is not None:
                self.conv.bias.copy_(source.bias.detach().repeat(sh * sw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (sh, sw), c = self.stride, self.out_channels
        n, _, h, w = x.shape
        hh, ww = h + self.extra[0], w + self.extra[1]
        y = self.conv(F.pad(x, self.pad))
        phases = []
        for a in range(sh):
            for b in range(sw):
                g = a * sw + b
                r0, c0 = self.starts[0][a] + self.before[0], self.starts[1][b] + self.before[1]
                phases.append(y[:, g * c:(g + 1) * c, r0:r0 + hh, c0:c0 + ww])
        # (N, C_out, s*s, H', W') -> (N, C_out * s*s, H', W'), the channel order pixel_shuffle reads
        stacked = torch.stack(phases, dim=2).reshape(n, c * sh * sw, hh, ww)
        if sh == sw:
            return F.pixel_shuffle(stacked, sh)
        out = stacked.reshape(n, c, sh, sw, hh, ww).permute(0, 1, 4, 2, 5, 3)
        return out.reshape(n, c, hh * sh, ww * sw)


def convertible(module: nn.Module) -> bool:
    """Whether :class:`SubpixelConvTranspose2d` can stand in for ``module``: a 2-d transposed
    convolution with groups 1, dilation 1, zero padding mode and an output a multiple of the stride
    for every input size (``K - 2p + output_padding`` divisible by the stride)."""
    if not isinstance(module, nn.ConvTranspose2d):
        return False
    if module.groups != 1 or tuple(module.dilation) != (1, 1) or module.padding_mode != "zeros":
        return False
    if isinstance(module.padding, str):
        return False
    return all((k - 2 * p + op) % s == 0 for k, p, op, s in
               zip(module.kernel_size, module.padding, module.output_padding, module.stride))


def without_transposed_convs(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with every convertible ``ConvTranspose2d`` replaced by its
    :class:`SubpixelConvTranspose2d` (``model`` itself is untouched).

    Returns:
        (the copy, how many layers were replaced).
    """
    out = copy.deepcopy(model)
    count = 0
    for module in list(out.modules()):
        for child_name, child in list(module.named_children()):
            if convertible(child):
                setattr(module, child_name, SubpixelConvTranspose2d(child))
                count += 1
    return out, count
