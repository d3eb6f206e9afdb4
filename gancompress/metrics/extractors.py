"""The feature extractors FID and KID are computed with, fully offline.

torch-fidelity normally downloads its Inception weights; here the file must be given locally
(``eval.inception_weights``) and is checked before use: it must exist, its SHA-256 must start
with the 8 hex digits embedded in its name (``6726825d``, torch.hub's convention) and it must
unpickle with ``weights_only=True``. The bytes that were hashed and checked are the bytes
torch-fidelity's network is built from (the file is not read a second time).

Features are computed once per image set with an *extractor*: :class:`InceptionExtractor`
(pool3, 2048-d, torch-fidelity's resizing and normalisation), :class:`FeatureNetExtractor` (a
small net of :mod:`gancompress.metrics.features` trained on a demo's own images, weights into our
architecture, so it needs no trust; its figures are labelled not comparable with published FID)
or :class:`TorchScriptExtractor` (a user's model mapping images to vectors, loaded only with
``eval.trust_torchscript: true`` because loading TorchScript runs code). FID and KID of the
features: :mod:`.fid`; the real images' features, cached per image set and extractor:
:mod:`.feature_cache`.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from ..errors import CheckpointError, MissingFileError
from .weights import TRUST_KEY, is_torchscript_archive, load_tensors, sha256_of, trust_torchscript

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)


def _inception_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / INCEPTION_FILENAME
    if not path.is_file():
        raise MissingFileError(
            f"{INCEPTION_FILENAME} not found at {path}: download it from {INCEPTION_URL} "
            f"(the file torch-fidelity uses) and set eval.inception_weights in the recipe to its path"
        )
    return path


def _check_inception_digest(path: Path, digest: str) -> None:
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise CheckpointError(
            f"Inception weights {path} have SHA-256 {digest[:16]}..., not the expected {INCEPTION_SHA256_PREFIX}...: "
            f"the file is corrupt or a different model; download it again from {INCEPTION_URL}"
        )


def check_inception_weights(path) -> Path:
    """Verify the local Inception weights torch-fidelity uses (existence and SHA-256 prefix).

    Args:
        path: the ``.pth`` file, or a folder holding ``pt_inception-2015-12-05-6726825d.pth``.

    Returns:
        the verified file path.
    """
    path = _inception_path(path)
    _check_inception_digest(path, sha256_of(path))
    return path


def read_inception_weights(path) -> tuple[Path, bytes, str]:
    """Read the Inception weights once and verify those bytes.

    The bytes must hash to the expected SHA-256 prefix and unpickle with ``weights_only=True``
    (so a tampered file with a matching prefix that would run code is refused, with the whole
    reason). Build the network from the returned bytes, not from the path.

    Returns:
        (path, the file's bytes, hex SHA-256).
    """
    path = _inception_path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    _check_inception_digest(path, digest)
    load_tensors(data, f"Inception weights {path}", f"download them again from {INCEPTION_URL}")
    return path, data, digest


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) images as uint8, the input torch-fidelity's Inception expects.

    Float images in [0, 1] are rounded as saving them to PNG would (``x * 255 + 0.5``, clamped),
    so scores match those computed from image files; uint8 passes through.
    """
    if images.dtype == torch.uint8:
        return images
    return (images.float() * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)


class InceptionExtractor:
    """torch-fidelity's Inception-V3 (TF-2015 weights), pool3 features.

    Images are bilinearly resized to 299x299 exactly as TF1 does (torch-fidelity's
    ``interpolate_bilinear_2d_like_tensorflow1x``) and normalised inside the network.

    Args:
        weights_path: local ``pt_inception-2015-12-05-6726825d.pth`` (or its folder).
        device: device to run on.

    Call: ``extractor(images)`` with images (N, 3, H, W) uint8 or float in [0, 1] -> (N, 2048)
    float32 on CPU. ``id`` names the extractor and its weights (cache keys).
    """

    dim = 2048

    def __init__(self, weights_path, device="cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path, data, digest = read_inception_weights(weights_path)
        self.device = torch.device(device)
        # torch-fidelity unpickles its weights argument with weights_only=False. It gets the very
        # bytes that were hashed and unpickled with weights_only=True above, as a stream: a
        # pickle that passed that check references only tensor-rebuilding globals, and the file
        # cannot change between the check and the load.
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=io.BytesIO(data)
        ).to(self.device)
        self.path, self.sha256 = path, digest
        self.id = f"inception-v3-compat-pool3-{digest[:16]}"

    def describe(self) -> dict:
        """The evaluator part of a protocol record."""
        return {"name": "Inception-V3 pool3 (TF 2015-12-05 weights, torch-fidelity)", "kind": "inception",
                "file": str(self.path), "sha256": self.sha256[:12]}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (feats,) = self.model(images_to_uint8(images).to(self.device))
        return feats.float().cpu()


class TorchScriptExtractor:
    """A user's feature extractor saved as TorchScript, loaded only when the recipe trusts it.

    Loading TorchScript runs code from the file (a scripted module's ``__setstate__``), so the
    recipe must say ``eval.trust_torchscript: true``; the file's content never decides that.
    The module must map (N, 3, H, W) float images in [0, 1] to (N, D) features; uint8 inputs are
    divided by 255 first.

    Args:
        path: TorchScript file.
        device: device to run on.
        trusted: the recipe's ``eval.trust_torchscript``.
    """

    def __init__(self, path, device="cpu", *, trusted: bool = False):
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"feature extractor {path} not found: save a TorchScript module with "
                                   f"torch.jit.save and set eval.fid_extractor to it, or use eval.inception_weights")
        if not trusted:
            raise CheckpointError(
                f"eval.fid_extractor {path} is a TorchScript model, and loading TorchScript runs code from the file: "
                f"set {TRUST_KEY}: true in the recipe if you trust it, or use eval.inception_weights instead"
            )
        self.device = torch.device(device)
        self.model = torch.jit.load(str(path), map_location=self.device).eval()
        self.path, self.sha256 = path, sha256_of(path)
        # The content hash, not the path, names the extractor, so a replaced file invalidates caches.
        self.id = f"torchscript-{self.sha256[:16]}"

    def describe(self) -> dict:
        """The evaluator part of a protocol record."""
        return {"name": "user TorchScript feature extractor (trusted by eval.trust_torchscript)",
                "kind": "torchscript", "file": str(self.path), "sha256": self.sha256[:12]}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        feats = self.model(x.to(self.device))
        if feats.dim() != 2:
            feats = feats.flatten(1)
        return feats.float().cpu()


class FeatureNetExtractor:
    """A :class:`~gancompress.metrics.features.FeatureNet` checkpoint: weights into our architecture.

    The file is read once with ``weights_only=True`` (it runs no code, so no trust is needed);
    its SHA-256 and the weights come from the same bytes. Images are rounded to 8 bits (as saving
    them would) and resized to the net's input side (bilinear, antialiased) when they differ.

    Args:
        path: a ``gancompress-feature-net`` checkpoint.
        device: device to run on.
        data: the file's bytes when the caller has read them already.

    Call: ``extractor(images)`` with images (N, 3, H, W) uint8 or float in [0, 1] -> (N, D)
    float32 on CPU. ``id`` names the extractor and its weights (cache keys).
    """

    def __init__(self, path, device="cpu", *, data: bytes | None = None):
        from .features import feature_net_from_checkpoint

        path = Path(path)
        if data is None:
            if not path.is_file():
                raise MissingFileError(f"feature net {path} not found: make the demo data again "
                                       f"(gancompress make-demo-data) or set eval.fid_extractor to its path")
            data = path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        blob = load_tensors(data, f"feature net {path}", "make it again with gancompress make-demo-data")
        self.device = torch.device(device)
        self.model = feature_net_from_checkpoint(blob, f"feature net {path}").to(self.device)
        meta = blob.get("meta")
        self.meta = dict(meta) if isinstance(meta, dict) else {}
        self.path, self.dim, self.input_size = path, self.model.dim, self.model.arch["input_size"]
        self.id = f"feature-net-{self.sha256[:16]}"

    @property
    def preprocessing(self) -> str:
        """How images become the net's input, for protocol records."""
        s = self.input_size
        return f"images rounded to 8 bits, resized to {s}x{s} (bilinear, antialiased) when another size"

    def describe(self) -> dict:
        """The evaluator part of a protocol record."""
        from .features import FEATURE_NET_KIND, LABEL

        widths = self.model.arch["widths"]
        held = self.meta.get("held_out_accuracy")
        return {"name": f"{LABEL} ({len(widths)} conv blocks, {self.dim}-d, {self.input_size}x{self.input_size} input)",
                "kind": FEATURE_NET_KIND, "file": str(self.path), "sha256": self.sha256[:12],
                "trained_on": str(self.meta.get("trained_on", "")), "classes": list(self.meta.get("classes", [])),
                "held_out_accuracy": held if isinstance(held, float) else None}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from .features import resize_to

        x = images_to_uint8(images).float() / 255.0
        return self.model(resize_to(x, self.input_size).to(self.device)).float().cpu()


def check_fid_extractor(path, *, trusted: bool = False) -> str:
    """Check ``eval.fid_extractor`` before a run starts, without running any code from it.

    A feature-net checkpoint is read and rebuilt in full (cheap); a TorchScript archive is only
    checked against ``trusted`` (loading it would run its code).

    Returns:
        the evaluator kind, "demo-features" or "torchscript".

    Raises:
        the errors of :func:`load_fid_extractor`.
    """
    path = Path(path)
    if path.is_file() and is_torchscript_archive(path):
        if not trusted:
            TorchScriptExtractor(path, trusted=False)  # raises the one-line refusal
        return "torchscript"
    return load_fid_extractor(path, "cpu", trusted=trusted).describe()["kind"]


def load_fid_extractor(path, device="cpu", *, trusted: bool = False):
    """The extractor ``eval.fid_extractor`` names: a feature net, or a TorchScript model when trusted.

    What the file is, is decided without running it: a TorchScript archive is recognised by the
    names inside its zip (never by loading it) and goes to :class:`TorchScriptExtractor`, which
    refuses it unless ``trusted``; any other file is read with ``weights_only=True`` and must be a
    feature-net checkpoint by its ``format`` key.

    Args:
        path: the file.
        device: device to run on.
        trusted: the recipe's ``eval.trust_torchscript``.

    Raises:
        MissingFileError: no such file.
        CheckpointError: TorchScript without trust, a file that would run code, or a weights file
            that is not a feature-net checkpoint.
    """
    from .features import FEATURE_NET_FORMAT, is_feature_net

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"eval.fid_extractor {path} not found: make it with gancompress make-demo-data (a "
                               f"demo's features.pt), or save a TorchScript module with torch.jit.save and set "
                               f"{TRUST_KEY}: true")
    if is_torchscript_archive(path):
        return TorchScriptExtractor(path, device, trusted=trusted)
    fix = (f"set eval.fid_extractor to a {FEATURE_NET_FORMAT!r} checkpoint (a demo's features.pt) or to a "
           f"TorchScript module with {TRUST_KEY}: true")
    data = path.read_bytes()
    blob = load_tensors(data, f"eval.fid_extractor {path}", fix)
    if not is_feature_net(blob):
        found = blob.get("format") if isinstance(blob, dict) else None
        raise CheckpointError(f"eval.fid_extractor {path} is not a feature-net checkpoint (format {found!r}, expected "
                              f"{FEATURE_NET_FORMAT!r}) nor a TorchScript model; {fix}")
    return FeatureNetExtractor(path, device, data=data)


def extractor_from_eval(eval_cfg, device):
    """The FID feature extractor a recipe's ``eval`` section names, or None when it names none.

    ``eval.fid_extractor`` (a feature-net checkpoint, or a TorchScript model loaded only with
    ``eval.trust_torchscript: true``; :func:`load_fid_extractor`) wins over ``eval.inception_weights``.
    """
    if eval_cfg.fid_extractor:
        return load_fid_extractor(eval_cfg.fid_extractor, device, trusted=trust_torchscript(eval_cfg))
    if eval_cfg.inception_weights:
        return InceptionExtractor(eval_cfg.inception_weights, device)
    return None
