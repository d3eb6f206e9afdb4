"""The segmenter's training data is read by the shared image helpers: every suffix the datasets
take (.tif too), the pixel-count limit, and one-line errors that name the file."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gancompress.data import images
from gancompress.errors import DataError
from gancompress.metrics.segmenter_train import list_aligned_images, read_aligned


def _aligned(path, width=16, height=8):
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, width // 2:] = 200
    Image.fromarray(arr).save(path)
    return path


def test_tif_images_are_training_images(tmp_path):
    _aligned(tmp_path / "a.tif")
    _aligned(tmp_path / "b.png")
    assert [p.name for p in list_aligned_images(tmp_path)] == ["a.tif", "b.png"]
    label, photo = read_aligned(tmp_path / "a.tif")
    assert label.shape == (8, 8, 3) and photo.shape == (3, 8, 8)
    assert float(photo.max()) == pytest.approx(200 / 255)


def test_an_image_over_the_pixel_limit_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    path = _aligned(tmp_path / "big.png", 16, 8)  # 128 pixels
    with pytest.raises(DataError) as err:
        read_aligned(path)
    assert str(err.value).startswith(f"{path}: image of 16x8 pixels is over the limit")
    assert "\n" not in str(err.value)


def test_a_corrupt_image_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(DataError) as err:
        read_aligned(path)
    assert str(err.value).startswith(f"{path}: ")
    assert "replace it with a readable A|B image" in str(err.value)


def test_an_empty_folder_names_the_layout(tmp_path):
    with pytest.raises(DataError, match="no image files .* pix2pix aligned A\\|B images"):
        list_aligned_images(tmp_path)
