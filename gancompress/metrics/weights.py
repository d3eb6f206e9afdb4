"""Loading evaluator weights without running code from the file.

Evaluators (segmenters, feature extractors) are architectures defined in gancompress whose
weights come from a file. The file is read with ``torch.load(weights_only=True)``; a pickle that
names any other global (a class, a function) is refused with the whole reason, including the
global's name. TorchScript archives run code when loaded (a scripted module's ``__setstate__``
executes arbitrary ops), so they are loaded only when the recipe says the file is trusted
(:data:`TRUST_KEY`); whether to trust a file is never decided from its content.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

#: The recipe key that allows TorchScript evaluator files (``EvalConfig.trust_torchscript``).
TRUST_KEY = "eval.trust_torchscript"


def trust_torchscript(eval_cfg) -> bool:
    """Whether the recipe's ``eval`` section trusts TorchScript evaluator files (default False)."""
    return bool(eval_cfg.trust_torchscript)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def is_torchscript_archive(path: str | Path) -> bool:
    """True when ``path`` is a TorchScript zip archive (it holds code; a ``torch.save`` file does not).

    Used only to say what a refused file is; it never decides that a file may be loaded.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _unpickling_reason(exc: BaseException) -> str:
    """The whole reason torch gives for refusing a pickle, on one line.

    torch's message opens with a generic paragraph; the line naming the blocked global
    ("Trying to load unsupported GLOBAL os.system ...", "Unsupported global: ...") comes later,
    so it is picked out rather than cutting the message at its first line.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines
             if "GLOBAL" in line or ("global" in line.lower() and "unsupported" in line.lower())]
    return " ".join(named or lines) or type(exc).__name__


def load_tensors(source: str | Path | bytes, what: str, fix: str) -> object:
    """``torch.load(source, map_location='cpu', weights_only=True)`` with one-line errors.

    Args:
        source: a file path, or the file's bytes already read (so that what was hashed is what
            is unpickled).
        what: names the file in messages, e.g. "segmenter /data/drn.pth".
        fix: what the user should do, appended to every message.

    Raises:
        CheckpointError: the file holds objects other than tensors and plain data (the message
            gives torch's whole reason, with the blocked global), is a TorchScript archive, or
            cannot be read.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{what}: refused to load: it holds objects other than tensors and plain data, which could run "
            f"code ({_unpickling_reason(exc)}); {fix}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{what}: not a readable weights file ({first}); {fix}") from None


def unwrap_state_dict(obj: object) -> dict:
    """The state dict inside a loaded file: the dict itself or its 'state_dict' / 'model' entry,
    with a 'module.' prefix (``nn.DataParallel``) removed when every key has it."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        return {}
    state = dict(obj)
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def first_mismatch(module: nn.Module, state: Mapping) -> str | None:
    """The first key of ``state`` that does not fit ``module``, as a phrase, or None when all fit.

    Keys are checked in the module's order (missing, not a tensor, mis-shaped with both shapes),
    then the file's extra keys. BatchNorm's ``num_batches_tracked`` may be missing: files saved
    before PyTorch 0.4 (such as the published DRN weights) do not have it.
    """
    expected = module.state_dict()
    for key, ref in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue
            return f"key '{key}' is missing"
        value = state[key]
        if not torch.is_tensor(value):
            return f"key '{key}' holds a {type(value).__name__}, not a tensor"
        if tuple(value.shape) != tuple(ref.shape):
            return f"key '{key}' has shape {tuple(value.shape)}, the architecture expects {tuple(ref.shape)}"
    for key in state:
        if key not in expected:
            return f"key '{key}' is unexpected"
    return None


def load_into(module: nn.Module, state: Mapping) -> nn.Module:
    """Load a state dict that :func:`first_mismatch` accepted into ``module`` (strictly).

    A module built on the meta device (no memory, no initialisation: large evaluators build
    instantly) takes the file's tensors as its parameters; any other module copies them.
    Missing ``num_batches_tracked`` counters are filled with 0 (they do not affect eval mode).
    """
    state = dict(state)
    for key, ref in module.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=ref.dtype)
    on_meta = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict(state, strict=True, assign=on_meta)
    if on_meta:  # a non-persistent buffer would still be a shapeless placeholder
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:
            raise ValueError(f"{type(module).__name__} has tensors no state dict fills ({left[0]}): build it on a "
                             f"real device")
    return module
