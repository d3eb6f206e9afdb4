"""Losses as pure tensor functions.

GAN losses take discriminator logits; each returns a scalar. ``d_real``/``d_fake`` are the two
halves of the discriminator's loss, ``g_adv`` the generator's adversarial loss; GCC's gap
(METHOD 2) is ``|g_adv(f) - d_fake(f)|`` on the same fake logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_LOSSES = ("hinge", "lsgan", "vanilla")


def d_real(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on real logits (any shape) -> scalar."""
    if kind == "hinge":
        return F.relu(1.0 - logits).mean()
    if kind == "lsgan":
        return ((logits - 1.0) ** 2).mean()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    raise ValueError(f"unknown GAN loss {kind!r} (valid: {', '.join(GAN_LOSSES)})")


def d_fake(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on fake logits (any shape) -> scalar."""
    if kind == "hinge":
        return F.relu(1.0 + logits).mean()
    if kind == "lsgan":
        return (logits ** 2).mean()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    raise ValueError(f"unknown GAN loss {kind!r} (valid: {', '.join(GAN_LOSSES)})")


def g_adv(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss on the discriminator's logits of its fakes -> scalar."""
    if kind == "hinge":
        return -logits.mean()
    if kind == "lsgan":
        return ((logits - 1.0) ** 2).mean()
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    raise ValueError(f"unknown GAN loss {kind!r} (valid: {', '.join(GAN_LOSSES)})")


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root of the mean squared error: METHOD 3's ``dist``. Shapes must match."""
    return torch.sqrt(F.mse_loss(a.float(), b.float()) + 1e-12)


def gram(f: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``f f^T / (C*H*W)`` over the flattened spatial axis.

    Args:
        f: features (N, C, H, W).

    Returns:
        (N, C, C).
    """
    n, c, h, w = f.shape
    # In fp32 even under autocast: in bf16 the rounding of the product is as large as the
    # student-teacher difference the texture term measures (and gamma_t is 1e4).
    with torch.autocast(device_type=f.device.type, enabled=False):
        flat = f.float().reshape(n, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def content_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of rmse(student_i, teacher_i); teacher features must already be detached."""
    return sum(rmse(s, t) for s, t in zip(student, teacher))


def texture_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of rmse(Gram(student_i), Gram(teacher_i))."""
    return sum(rmse(gram(s), gram(t)) for s, t in zip(student, teacher))
