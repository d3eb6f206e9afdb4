"""PSNR / SSIM on the Y channel and the colour conversions behind them."""

import math

import pytest
import torch

from gancompress.metrics.image import psnr_ssim_y, quantize_8bit, rgb_to_y, to_unit


def test_rgb_to_y_of_white_black_and_grey():
    white = torch.ones(1, 3, 2, 2)
    black = torch.zeros(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 2, 2), 235 / 255), atol=1e-6)
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 2, 2), 16 / 255), atol=1e-6)
    grey = torch.full((2, 3, 4, 5), 0.5)
    assert rgb_to_y(grey).shape == (2, 1, 4, 5)
    assert torch.allclose(rgb_to_y(grey), torch.full((2, 1, 4, 5), (16 + 0.5 * 219) / 255), atol=1e-6)


def test_to_unit_maps_and_clamps():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 2.0])
    assert torch.equal(to_unit(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_psnr_of_known_mse_on_y():
    # Same uniform shift of Y everywhere: MSE on Y is exactly delta**2.
    torch.manual_seed(0)
    target = torch.rand(2, 1, 24, 24, dtype=torch.float64) * 0.5 + 0.25
    delta = 0.05
    pred = target + delta
    out = psnr_ssim_y(pred, target, border=2, quantize=False)
    assert out["psnr"] == pytest.approx(10 * math.log10(1 / delta**2), abs=1e-6)


def test_psnr_is_per_image_average_and_border_is_cropped():
    target = torch.full((2, 1, 20, 20), 0.5, dtype=torch.float64)
    pred = target.clone()
    pred[0] += 0.1  # image 0: MSE 0.01 -> 20 dB
    pred[1] += 0.01  # image 1: MSE 1e-4 -> 40 dB
    pred[:, :, :2, :] = 0.0  # damage only the 2-pixel border
    out = psnr_ssim_y(pred, target, border=2, quantize=False)
    assert out["psnr"] == pytest.approx((20.0 + 40.0) / 2, abs=1e-6)


def test_ssim_is_one_for_identical_and_drops_with_noise():
    torch.manual_seed(0)
    img = torch.rand(2, 3, 32, 32)
    same = psnr_ssim_y(img, img.clone(), border=4)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isinf(same["psnr"])
    light = psnr_ssim_y((img + 0.02 * torch.randn_like(img)).clamp(0, 1), img, border=4)
    heavy = psnr_ssim_y((img + 0.2 * torch.randn_like(img)).clamp(0, 1), img, border=4)
    assert 1.0 > light["ssim"] > heavy["ssim"]
    assert light["psnr"] > heavy["psnr"]


def test_quantize_is_idempotent_on_8bit_images():
    levels = torch.randint(0, 256, (1, 3, 16, 16)).float() / 255
    assert torch.equal(quantize_8bit(levels), levels)


def test_too_small_after_crop_is_an_error():
    img = torch.rand(1, 3, 12, 12)
    with pytest.raises(ValueError, match="SSIM window"):
        psnr_ssim_y(img, img, border=2)
