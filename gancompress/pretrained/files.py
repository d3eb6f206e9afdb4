"""Reading a weights file without running code, and checking its keys and shapes against a net.

Every layout (:mod:`~gancompress.pretrained.layouts`) is read with ``torch.load(weights_only=True)``
(:func:`read_weights_file`); its norm buffers are patched as the layout's own loader does, and its
keys and shapes are compared with those of the net it is meant for (:func:`first_misfit`).

Norms: ``norm='batch'`` has affine BatchNorm with running statistics and convs without bias;
``norm='instance'`` is ``InstanceNorm2d(affine=False)`` and convs with bias. Old files (torch
< 0.4, or the 2018 code with ``track_running_stats=True``) carry InstanceNorm running statistics;
pytorch-CycleGAN-and-pix2pix's loader drops them (``__patch_instance_norm_state_dict``) and so do
we. BatchNorm files from torch < 0.4.1 lack ``num_batches_tracked``; it is set to 0, as torch
does for such files.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError, MissingFileError

# the buffers of a norm layer's running statistics
_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def read_weights_file(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; one-line errors.

    Raises:
        MissingFileError: no such file.
        CheckpointError: the file needs code to load (a pickled module or class: the message
            names the global it asks for) or is not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects that need code to rebuild ({_unpickling_reason(exc)}), "
            "and loading it could run that code; where you trust the file, re-save its weights alone with "
            "torch.save(net.state_dict(), path)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch file ({first})") from None


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file asks for."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "global" in line.split(":")[0]:
            line = line.removeprefix("WeightsUnpickler error:").strip()
            # keep the sentence naming the global, not torch's allow-list advice after it
            return line.split(". Please use")[0].rstrip(".")
    return lines[-1][:200] if lines else type(exc).__name__


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_of(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The tensors of a plain state dict, with a DataParallel ``module.`` prefix stripped."""
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__
        if isinstance(obj, dict):
            keys = ", ".join(repr(k) for k in list(obj)[:4])
            what = f"a dict with non-tensor entries (keys {keys}{', ...' if len(obj) > 4 else ''})"
        raise CheckpointError(f"{path}: not a generator state dict nor a gancompress generator file (it holds "
                              f"{what}); save the generator with torch.save(net.state_dict(), path)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}, ("stripped the DataParallel prefix 'module.'",)
    return state, ()


def norm_kind_at(state: dict, norm: str, conv: str) -> str:
    """The norm kind whose keys sit at module ``norm`` after conv ``conv`` (file naming)."""
    if f"{norm}.weight" in state:
        return "batch" if f"{norm}.running_mean" in state else "instance_affine"
    if f"{conv}.bias" in state:
        return "instance"
    return "none"


def need_key(state: dict, key: str, path: Path, what: str) -> torch.Tensor:
    """``state[key]``; a one-line CheckpointError naming the file when every ``what`` has the key."""
    if key not in state:
        raise CheckpointError(f"{path}: key '{key}' is missing, which every {what} has; "
                              "the file is damaged or holds another architecture")
    return state[key]


def patch_norm_buffers(state: dict, norm: str, expected: dict) -> tuple[dict, tuple[str, ...]]:
    """Drop InstanceNorm running statistics, add a missing BatchNorm ``num_batches_tracked``."""
    notes = []
    if norm in ("instance", "instance_affine"):
        dropped = [k for k in state if k.rsplit(".", 1)[-1] in _RUNNING and k not in expected]
        if dropped:
            state = {k: v for k, v in state.items() if k not in dropped}
            notes.append(f"dropped {len(dropped)} InstanceNorm running-statistics buffers, as "
                         "pytorch-CycleGAN-and-pix2pix does (instance statistics are used)")
    if norm == "batch":
        added = [k for k in expected if k.endswith(".num_batches_tracked") and k not in state
                 and f"{k.rsplit('.', 1)[0]}.running_mean" in state]
        if added:
            state = dict(state)
            for k in added:
                state[k] = torch.tensor(0, dtype=torch.long)
            notes.append(f"set num_batches_tracked to 0 in {len(added)} BatchNorm layers (a file from torch < 0.4.1)")
    return state, tuple(notes)


def first_misfit(state: dict[str, torch.Tensor], expected: dict[str, tuple[str, tuple]]) -> str | None:
    """The first key (file naming) that does not fit, in words; None if every key and shape fits.

    ``expected`` maps file keys to (our key, shape). Keys are checked in the file's order, then
    the expected keys the file lacks in our order.
    """
    for key, tensor in state.items():
        if key not in expected:
            return f"key '{key}' {tuple(tensor.shape)} is unexpected"
        ours, shape = expected[key]
        if tuple(tensor.shape) != shape:
            alias = "" if ours == key else f" (our '{ours}')"
            return f"key '{key}'{alias} has shape {tuple(tensor.shape)} where {shape} is expected"
    for key, (ours, shape) in expected.items():
        if key not in state:
            alias = "" if ours == key else f" (our '{ours}')"
            return f"key '{key}'{alias} {shape} is missing"
    return None
