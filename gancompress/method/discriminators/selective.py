"""GCC's selective activation discriminator (METHOD 2).

A copy of the teacher discriminator's architecture whose mask points (every conv block but the
final logit layer) multiply their output channel c by ``m_c = 1[alpha_c > tau]``. The backward
pass is straight-through: alpha_c receives the gradient it would get if ``m_c = alpha_c``, so a
switched-off channel can switch back on.
"""
from __future__ import annotations

import torch
from torch import nn

from ...nets.layers import CONV_TYPES


def straight_through_mask(alpha: torch.Tensor, tau: float) -> torch.Tensor:
    """Forward: ``(alpha > tau)`` as 0/1; backward: identity to alpha. Shape of ``alpha``."""
    hard = (alpha > tau).to(alpha.dtype)
    return hard + alpha - alpha.detach()


def _out_channels(block: nn.Module, net: nn.Module) -> int:
    """Channels of the mask point ``block``'s output: its last conv's, or, for a point holding no
    conv (an activation such as SAGAN's LeakyReLU), the last conv registered before it in ``net``
    (registration order is forward order in the Sequential blocks discriminators are made of)."""
    convs = [m for m in block.modules() if isinstance(m, CONV_TYPES)]
    if not convs:
        for m in net.modules():
            if m is block:
                break
            if isinstance(m, CONV_TYPES):
                convs.append(m)
    if not convs:
        raise ValueError(f"mask point {type(block).__name__} holds no convolution and none precedes it")
    return convs[-1].out_channels


class SelectiveDiscriminator(nn.Module):
    """Wraps a discriminator with per-channel retention factors at its mask points.

    Args:
        net: the discriminator (a fresh copy of the teacher's architecture).
        mask_points: modules of ``net`` whose outputs are masked (N, C, H, W).
        tau: threshold; ``m_c = 1`` where ``alpha_c > tau``.
        alpha_init: every factor's initial value (GCC: 1, every channel on).

    The retention factors are kept out of ``net.parameters()`` so the weight optimiser never
    sees them; :meth:`alpha_parameters` gives them to their own optimiser.
    """

    def __init__(self, net: nn.Module, mask_points: list[nn.Module], tau: float, alpha_init: float = 1.0):
        super().__init__()
        self.net = net
        self.tau = float(tau)
        self.alphas = nn.ParameterList([nn.Parameter(torch.full((_out_channels(p, net),), float(alpha_init)))
                                        for p in mask_points])
        self._points = list(mask_points)
        for i, point in enumerate(self._points):
            point.register_forward_hook(self._make_hook(i))

    def _make_hook(self, i: int):
        def hook(_module, _inputs, output):
            mask = straight_through_mask(self.alphas[i], self.tau).to(output.dtype)
            return output * mask.view(1, -1, *([1] * (output.dim() - 2)))
        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def alpha_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    @torch.no_grad()
    def clip_alphas(self) -> None:
        for a in self.alphas:
            a.clamp_(0.0, 1.0)

    @torch.no_grad()
    def active_fraction(self) -> torch.Tensor:
        """Fraction of active channels per mask point, shape (P,), on the alphas' device."""
        return torch.stack([(a > self.tau).float().mean() for a in self.alphas])

    @torch.no_grad()
    def alpha_means(self) -> torch.Tensor:
        """Mean retention factor per mask point, shape (P,): how far the factors have moved
        before any crosses tau."""
        return torch.stack([a.mean() for a in self.alphas])
