"""Bad images that data.on_bad_image: skip did not skip, bombs, and worker tracebacks."""
from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gancompress.data import images
from gancompress.data.aligned import AlignedDataset
from gancompress.data.imagefolder import ImageFolderDataset
from gancompress.data.loader import BatchSource
from gancompress.data.sr import SRDataset
from gancompress.data.unaligned import UnalignedDataset
from gancompress.errors import DataError


def _noise(size=(64, 32), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG with a valid header and checksums around ``idat`` (whatever it holds)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _truncated_png(path: Path) -> None:
    _noise(seed=1).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _truncated_jpeg(path: Path) -> None:
    _noise(seed=2).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _corrupt_png(path: Path) -> None:
    """Bytes in the middle of the pixel data overwritten (a bad disk, a broken copy)."""
    _noise(seed=3).save(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


def _bomb_png(path: Path) -> None:
    """141 bytes claiming 30000 x 30000 pixels (PIL itself raises DecompressionBombError)."""
    path.write_bytes(_png(30000, 30000, zlib.compress(b"\0" * 1000)))


def _big_png(path: Path) -> None:
    """10000 x 10000 pixels: under PIL's own error threshold, over ours."""
    path.write_bytes(_png(10000, 10000, zlib.compress(b"\0" * 1000)))


def _checksummed_garbage_png(path: Path) -> None:
    """Right checksums around compressed data that does not inflate: only decoding finds it."""
    path.write_bytes(_png(64, 32, bytes(range(256)) * 4))


BAD = {
    "trunc.png": (_truncated_png, "cannot decode image"),
    "trunc.jpg": (_truncated_jpeg, "cannot decode image"),
    "corrupt.png": (_corrupt_png, "cannot decode image"),
    "bomb.png": (_bomb_png, r"900000000 pixels is over the limit of 8192x8192"),
    "big.png": (_big_png, r"10000x10000 pixels is over the limit"),
}


def _split(root: Path, split: str, bad: str | None = None, n_good: int = 3) -> Path:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        _noise(seed=10 + i).save(folder / f"good{i}.png")
    if bad is not None:
        BAD[bad][0](folder / bad)
    return folder


@pytest.mark.parametrize("bad", sorted(BAD))
def test_bad_files_fail_the_build_or_are_skipped(tmp_path, bad):
    _split(tmp_path, "train", bad)
    # 'error': the dataset refuses to be built, naming the file, before any training step.
    with pytest.raises(DataError, match=BAD[bad][1]) as info:
        AlignedDataset(tmp_path, "train", load_size=32, crop_size=32)
    message = str(info.value)
    assert bad in message and "\n" not in message and "on_bad_image: skip" in message
    # 'skip': the file is left out, and every item loads.
    data = AlignedDataset(tmp_path, "train", load_size=32, crop_size=32, on_bad_image="skip")
    assert [p.name for p in data.files] == ["good0.png", "good1.png", "good2.png"]
    assert all(data[(i, i)]["A"].shape == (3, 32, 32) for i in range(len(data)))


@pytest.mark.parametrize("make", [
    lambda root, bad: ImageFolderDataset(root / "train", 16, on_bad_image="skip"),
    lambda root, bad: SRDataset(root, "train", scale=2, hr_crop=16, on_bad_image="skip"),
    lambda root, bad: UnalignedDataset(root, "train", 16, 16, on_bad_image="skip"),
], ids=["imagefolder", "sr", "unaligned"])
def test_every_dataset_screens_the_whole_file(tmp_path, make):
    _split(tmp_path, "train", "corrupt.png")
    _split(tmp_path, "trainA", "trunc.jpg")
    _split(tmp_path, "trainB", "bomb.png")
    data = make(tmp_path, "corrupt.png")
    files = getattr(data, "files", None) or data.files_a + data.files_b
    assert all(p.name.startswith("good") for p in files)


def test_accepts_cityscapes_and_4k_frames(tmp_path):
    assert images.MAX_PIXELS >= 3840 * 2160
    path = tmp_path / "frankfurt_000000_000294_leftImg8bit.png"
    Image.new("RGB", (2048, 1024), (90, 120, 60)).save(path)
    assert images.check_image(path) == ("RGB", (2048, 1024))
    assert images.load_rgb(path).size == (2048, 1024)


def test_a_file_changed_after_screening_is_screened_again(tmp_path):
    path = tmp_path / "a.png"
    _noise().save(path)
    assert images.check_image(path)[0] == "RGB"
    _truncated_png(path)
    os.utime(path, ns=(0, 1))  # even with an old mtime, the size differs
    with pytest.raises(DataError, match="a.png: cannot decode image"):
        images.check_image(path)


def test_checksummed_garbage_is_skipped_at_load_time_and_counted(tmp_path, caplog):
    _split(tmp_path, "train", n_good=2)
    _checksummed_garbage_png(tmp_path / "train" / "good0x.png")  # sorts between good0 and good1
    data = AlignedDataset(tmp_path, "train", load_size=32, crop_size=32, on_bad_image="skip")
    assert len(data) == 3  # the screening cannot see it without decoding
    with caplog.at_level(logging.WARNING, logger="gancompress.data.images"):
        items = [data[(1, 7)], data[(1, 8)]]
    assert [int(item["index"]) for item in items] == [2, 2]  # the next image that decodes, each time
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "good0x.png: cannot decode image" in warnings[0] and "1 skipped" in warnings[0]
    strict = AlignedDataset(tmp_path, "train", load_size=32, crop_size=32)
    with pytest.raises(DataError, match="good0x.png: cannot decode image"):
        strict[(1, 7)]


def test_worker_errors_are_one_line(tmp_path):
    _split(tmp_path, "train", n_good=3)
    _checksummed_garbage_png(tmp_path / "train" / "good0x.png")
    data = AlignedDataset(tmp_path, "train", load_size=32, crop_size=32)
    raw_source = BatchSource(data, batch_size=4, seed=0, num_workers=1, shuffle=False)
    with pytest.raises(DataError) as raw:
        list(iter(raw_source.loader))  # torch's own re-raise: the worker's whole traceback
    assert "Traceback" in str(raw.value)
    source = BatchSource(data, batch_size=4, seed=0, num_workers=1, shuffle=False)
    with pytest.raises(DataError) as info:
        list(source.epoch(0))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(str(tmp_path / "train" / "good0x.png") + ": cannot decode image")
    lenient = AlignedDataset(tmp_path, "train", load_size=32, crop_size=32, on_bad_image="skip")
    batches = list(BatchSource(lenient, batch_size=2, seed=0, num_workers=1).epoch(0))
    assert len(batches) == 2 and batches[0]["A"].shape == (2, 3, 32, 32)
