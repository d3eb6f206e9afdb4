"""Pixel-level image quality: PSNR and SSIM on the Y channel, as super-resolution papers report them.

The protocol follows BasicSR / the MATLAB scripts used in the SR literature: convert RGB to the
BT.601 luma ``Y`` (MATLAB ``rgb2ycbcr``), crop ``border`` pixels on each side, compute PSNR and
SSIM for every image separately and average the per-image values over the set.
"""

from __future__ import annotations

import torch

#: BT.601 luma coefficients for R, G, B in [0, 1] giving Y in [0, 255] (MATLAB ``rgb2ycbcr``).
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0
#: SSIM window of the reference implementation (Wang et al. 2004): 11x11 Gaussian, sigma 1.5.
SSIM_WINDOW = 11


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map a generator output from [-1, 1] to [0, 1].

    Args:
        x: tensor of any shape with values nominally in [-1, 1] (a tanh output).

    Returns:
        ``(x + 1) / 2`` clamped to [0, 1], same shape and dtype.
    """
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB images, as MATLAB's ``rgb2ycbcr`` computes it.

    Args:
        img: (N, 3, H, W) RGB in [0, 1].

    Returns:
        (N, 1, H, W) Y in [16/255, 235/255], i.e. ``(16 + 65.481 R + 128.553 G + 24.966 B) / 255``.
    """
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects (N, 3, H, W) RGB images, got shape {tuple(img.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
    return ((img * w).sum(dim=1, keepdim=True) + _Y_OFFSET) / 255.0


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to 8-bit levels, exactly as saving them to PNG and reading them back would.

    Args:
        img: tensor in [0, 1], any shape.

    Returns:
        ``round(img * 255) / 255`` (clamped), same shape; idempotent on already 8-bit images.
    """
    return torch.round(img.clamp(0.0, 1.0) * 255.0) / 255.0


def _prepare_y(img: torch.Tensor, border: int, quantize: bool) -> torch.Tensor:
    """Convert (N, 3 or 1, H, W) images to the cropped float64 Y channel (N, 1, H - 2b, W - 2b)."""
    img = img.detach().to(torch.float64)
    if quantize:
        img = quantize_8bit(img)
    y = rgb_to_y(img) if img.shape[1] == 3 else img
    if border > 0:
        y = y[..., border:-border, border:-border]
    return y


def psnr_ssim_y(pred: torch.Tensor, target: torch.Tensor, border: int, *, quantize: bool = True) -> dict:
    """PSNR (dB) and SSIM on the Y channel, per image, averaged over the batch.

    PSNR uses ``kornia.metrics.psnr`` with a peak of 1.0; SSIM uses ``kornia.metrics.ssim`` with an
    11x11 Gaussian window, data range 1 and ``padding='valid'`` (only windows fully inside the
    cropped image count, as in the reference implementation and BasicSR). An image identical to
    its target has infinite PSNR, so the average is then ``inf``.

    Args:
        pred: (N, 3, H, W) RGB in [0, 1], or (N, 1, H, W) already-Y images.
        target: same shape as ``pred``.
        border: pixels cropped from each side before measuring (usually the SR scale factor).
        quantize: round both inputs to 8-bit levels first, as when results are saved to PNG
            (the literature protocol); harmless for inputs that are already 8-bit.

    Returns:
        ``{"psnr": float, "ssim": float}``, each the mean of the per-image values.
    """
    import kornia

    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.dim() != 4 or pred.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 3, H, W) RGB or (N, 1, H, W) Y images, got {tuple(pred.shape)}")
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    p = _prepare_y(pred, border, quantize)
    t = _prepare_y(target, border, quantize)
    if min(p.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"images of {tuple(pred.shape[-2:])} pixels minus a border of {border} are smaller than the "
            f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window: use larger images or a smaller border"
        )
    psnrs = [float(kornia.metrics.psnr(p[i], t[i], 1.0)) for i in range(p.shape[0])]
    ssim_map = kornia.metrics.ssim(p, t, SSIM_WINDOW, max_val=1.0, padding="valid")
    ssims = ssim_map.flatten(1).mean(dim=1)
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": float(ssims.mean())}
