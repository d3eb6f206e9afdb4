"""Reading image folders safely, and seeded augmentation.

Every dataset item is addressed by ``(index, seed)``: the seed drives that item's random crop and
flip, so a batch is the same whether it is loaded now, after a resume, or by another worker.

Bad images are handled twice:

1. When a dataset is built, :func:`screen_images` checks every file: the header (format, mode,
   size, at most :data:`MAX_PIXELS` pixels) and the integrity of the whole file, cheaply: a PNG's
   chunk checksums and end chunk are verified without decompressing it (this catches truncated
   and corrupted PNGs), a JPEG must end with its end-of-image marker (a truncated JPEG does not;
   one that does not is decoded fully to decide), and other formats are decoded. Results are
   remembered per process by (path, size, mtime), so a dataset built again (every stage, the
   pre-flight check, the sample grid) costs nothing. Decoding every image instead would cost
   ~4 ms per 512x256 PNG, ~12 s for Cityscapes' 2975 pairs and minutes for CelebA or COCO, on
   every build; the checks above read each file once at disk speed (~0.5 ms for that PNG).
2. When an item is loaded, :class:`ImageSource` decodes the file; a file that still fails (a PNG
   whose checksums are right but whose compressed data is not, a file changed since) raises a
   one-line DataError with ``data.on_bad_image: error`` and is replaced by the next file that
   decodes with ``skip`` (a warning names it once and counts them). The replacement is the same
   on every run, so resuming stays exact.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

#: Most pixels an image may have: 8192 x 8192 (64 Mpx) takes 2048x1024 Cityscapes photos, 4K and
#: 8K frames and 50-Mpx camera photos, and stops decompression bombs (a few KiB of PNG claiming
#: 30000x30000 pixels) before a byte of pixel data is decoded.
MAX_PIXELS = 8192 * 8192

SKIP_HINT = "set data.on_bad_image: skip"

# (path, size, mtime_ns) -> (mode, (w, h)) of files that passed the screening in this process.
_SCREENED: dict[tuple[str, int, int], tuple[str, tuple[int, int]]] = {}
_SCREENED_LIMIT = 1_000_000


def list_images(folder: Path, what: str) -> list[Path]:
    """Image files of ``folder`` (sorted); DataError if it is missing or holds none.

    Args:
        folder: the folder.
        what: how the message names the folder's role, e.g. "the training split of data.root".
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found ({what})")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in {what}")
    return files


def _reason(exc: BaseException) -> str:
    """PIL's complaint on one line (it can quote binary data)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= 160 else text[:157] + "..."


def _too_large(path: Path, pixels: str, hint: str) -> DataError:
    side = int(MAX_PIXELS ** 0.5)
    return DataError(f"{path}: image of {pixels} pixels is over the limit of {side}x{side} "
                     f"({MAX_PIXELS // 2 ** 20} Mpx; a decompression bomb?); downscale or remove it, or {hint}")


def open_image(path: Path, hint: str = SKIP_HINT) -> Image.Image:
    """``Image.open`` with a bound on the pixel count; only the header is read.

    Args:
        path: the image file.
        hint: the alternative fix the message offers after "remove it, or".

    Raises:
        DataError: not an image PIL reads (naming the file), or over :data:`MAX_PIXELS`.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns past 89 Mpx and raises past 179 Mpx; the bound here is lower and says more.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(path, claimed.group(1) if claimed else "too many", hint) from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (UnidentifiedImageError: not an image format PIL reads); "
                        f"remove it or {hint}") from None
    except Exception as exc:  # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {_reason(exc)}); remove it or "
                        f"{hint}") from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise _too_large(path, f"{width}x{height}", hint)
    return im


def _ends_with_jpeg_eoi(path: Path) -> bool:
    """Whether the file ends with a JPEG end-of-image marker (FF D9), ignoring zero padding."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 1024))
        tail = f.read()
    return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def check_image(path: Path) -> tuple[str, tuple[int, int]]:
    """Screen one file: header, pixel bound and integrity (see the module docstring).

    Args:
        path: the image file.

    Returns:
        ``(mode, (width, height))`` as PIL reports them.

    Raises:
        DataError: one line naming the file: unreadable header, too many pixels, truncated or
            corrupted data.
    """
    try:
        info = path.stat()
        key = (str(path), info.st_size, info.st_mtime_ns)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror}); remove it or {SKIP_HINT}") from None
    if key in _SCREENED:
        return _SCREENED[key]
    with open_image(path) as im:
        mode, size, fmt = im.mode, im.size, im.format
        try:
            if fmt == "PNG":
                im.verify()  # every chunk's CRC and the IEND chunk, without inflating the pixels
            elif fmt != "JPEG" or not _ends_with_jpeg_eoi(path):
                im.load()
        except Exception as exc:  # truncated or corrupted: PIL raises OSError, SyntaxError, ...
            raise DataError(f"{path}: cannot decode image ({_reason(exc)}); remove or replace it, or "
                            f"{SKIP_HINT}") from None
    if len(_SCREENED) < _SCREENED_LIMIT:
        _SCREENED[key] = (mode, size)
    return mode, size


def screen_images(files: list[Path], on_bad: str, check=None, require_rgb: bool = True) -> list[Path]:
    """Keep the files that pass :func:`check_image` (and ``check(path, size)``), in order.

    Args:
        files: image files.
        on_bad: 'error': the first bad file raises its DataError; 'skip': bad files are dropped
            and counted in one warning.
        check: optional extra test raising DataError, e.g. an aligned image's even width.
        require_rgb: refuse images whose mode is not RGB (grayscale, RGBA, palette, CMYK).

    Raises:
        DataError: a bad file with 'error', or no file left.
    """
    good, bad = [], []
    for path in files:
        try:
            mode, size = check_image(path)
            if require_rgb and mode != "RGB":
                raise DataError(f"{path}: image mode {mode} in an RGB dataset; convert it to RGB or {SKIP_HINT}")
            if check is not None:
                check(path, size)
        except DataError as exc:
            if on_bad == "error":
                raise
            bad.append((path, exc))
            continue
        good.append(path)
    if bad:
        log.warning("skipped %d bad image(s) (data.on_bad_image: skip), first: %s", len(bad), bad[0][1])
    if not good:
        raise DataError(f"{files[0].parent}: every image was unreadable" + (" or not RGB" if require_rgb else ""))
    return good


def decode_image(path: Path, hint: str = SKIP_HINT) -> Image.Image:
    """Decode an image fully (any mode), within :data:`MAX_PIXELS`; DataError names the file.

    ``hint`` is the alternative fix the message offers (see :func:`open_image`).
    """
    im = open_image(path, hint)
    try:
        im.load()
        return im.copy()
    except Exception as exc:  # PIL's decoders raise OSError, SyntaxError, ValueError, MemoryError, ...
        raise DataError(f"{path}: cannot decode image ({_reason(exc)}); remove or replace it, or "
                        f"{hint}") from None
    finally:
        im.close()


def load_rgb(path: Path, convert: bool = False, hint: str = SKIP_HINT) -> Image.Image:
    """Decode an image fully as RGB; DataError names the file if it is truncated or corrupt.

    Args:
        path: the image file.
        convert: convert other modes to RGB (grayscale becomes three equal channels); without it
            a mode other than RGB is a DataError.
        hint: the alternative fix messages offer (see :func:`open_image`).
    """
    img = decode_image(path, hint)
    if img.mode == "RGB":
        return img
    if convert:
        return img.convert("RGB")
    raise DataError(f"{path}: image mode {img.mode} in an RGB dataset; convert it to RGB or {hint}")


class ImageSource:
    """Decodes ``files[index]`` for dataset items, following ``data.on_bad_image`` at load time.

    Args:
        files: the screened files.
        on_bad: 'error' (a file that fails to decode raises its one-line DataError) or 'skip'
            (the next file that decodes is used instead, wrapping around; each bad file is named
            once in a warning with a running count, and not tried again).
        convert: convert non-RGB images to RGB (see :func:`load_rgb`).
    """

    def __init__(self, files: list[Path], on_bad: str = "error", convert: bool = False):
        self.files, self.on_bad, self.convert = list(files), on_bad, convert
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[int, Image.Image]:
        """``(i, image)``: ``i`` is ``index`` or, after skipping bad files, the index used."""
        n = len(self.files)
        for k in range(n):
            i = (index + k) % n
            if i in self.bad:
                continue
            try:
                return i, load_rgb(self.files[i], self.convert)
            except DataError as exc:
                if self.on_bad != "skip":
                    raise
                self.bad.add(i)
                log.warning("%s; using the next image instead (data.on_bad_image: skip; %d skipped at load time "
                            "so far)", exc, len(self.bad))
        raise DataError(f"{self.files[0].parent}: no image of the split decodes; replace the files or check "
                        "data.root")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    t = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return t * 2.0 - 1.0


class Augment:
    """Resize to ``load_size``, random crop ``crop_size``, random horizontal flip, from a seed.

    The same seed gives the same crop and flip, so paired images (A and B) stay aligned.
    """

    def __init__(self, load_size: int, crop_size: int, flip: bool, train: bool):
        self.load_size, self.crop_size, self.flip, self.train = load_size, crop_size, flip, train

    def __call__(self, images: list[Image.Image], seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        size = self.load_size
        if self.train:
            span = max(0, size - self.crop_size)
            top = int(torch.randint(0, span + 1, (1,), generator=gen))
            left = int(torch.randint(0, span + 1, (1,), generator=gen))
            flip = self.flip and bool(torch.rand((), generator=gen) < 0.5)
        else:
            top = left = max(0, size - self.crop_size) // 2
            flip = False
        out = []
        for img in images:
            img = TF.resize(img, [size, size], interpolation=TF.InterpolationMode.BICUBIC)
            img = TF.crop(img, top, left, self.crop_size, self.crop_size)
            if flip:
                img = TF.horizontal_flip(img)
            out.append(to_tensor(img))
        return out


def item_key(key) -> tuple[int, int]:
    """Accept ``index`` or ``(index, seed)``; plain indices get seed = index (evaluation)."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), int(key)
