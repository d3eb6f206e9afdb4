"""A student that loads without gancompress: plain state dict, JSON architecture, a loader script.

:func:`export_state_dict` writes, into one folder,

- ``<stem>.pth``: the generator's state dict (tensors only; ``torch.load(weights_only=True)``);
- ``<stem>.json``: what rebuilds it: family, generator name, class, constructor arguments, and
  the widths of every convolution and norm layer (pruning leaves them uneven);
- ``portable_loader.py``: a torch-only script (:mod:`gancompress.export.portable_loader`, copied as
  text) whose ``load("<stem>.json")`` rebuilds the net and loads the weights.

Covered: the pix2pix U-Net and the ResNet and mobile ResNet generators (pix2pix and cyclegan
families), pruned or not. SAGAN and SRResNet generators are not covered; ship them as TorchScript
or ONNX.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import GanCompressError
from ..files.atomic import atomic_write
from ..files.checkpoint import atomic_save
from ..nets.resnet import MobileResnetGenerator, ResnetGenerator
from ..nets.unet import UnetGenerator

FORMAT = "gancompress-portable-generator"
VERSION = 1
LOADER_NAME = "portable_loader.py"
LOADER_SOURCE = Path(__file__).with_name(LOADER_NAME)

_COVERED = (UnetGenerator, MobileResnetGenerator, ResnetGenerator)


def _norm_kind(model: nn.Module) -> str:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            return "batch"
        if isinstance(m, nn.InstanceNorm2d):
            return "instance_affine" if m.affine else "instance"
    return "none"


def constructor_args(generator: nn.Module, ngf: int | None = None) -> dict:
    """Keyword arguments that build ``generator``'s class at full width (before resizing).

    Args:
        generator: a (pruned) UnetGenerator, ResnetGenerator or MobileResnetGenerator.
        ngf: the width it was built with before pruning; default: its first conv's width.
            Every conv and norm is resized from the record afterwards, so this only documents.
    """
    first = next(m for m in generator.modules() if isinstance(m, nn.Conv2d))
    ngf = int(ngf if ngf is not None else first.out_channels)
    common = {"input_nc": first.in_channels, "ngf": ngf, "norm": _norm_kind(generator),
              "dropout": any(isinstance(m, nn.Dropout) for m in generator.modules())}
    if isinstance(generator, UnetGenerator):
        return {**common, "output_nc": generator.ups[-1][1].out_channels, "num_downs": len(generator.downs)}
    return {**common, "output_nc": generator.output_conv().out_channels,
            "n_blocks": len(generator.residual_blocks())}


def layer_record(generator: nn.Module) -> dict[str, dict]:
    """Widths of every conv and norm layer by module name.

    Convs: ``{"type", "in", "out", "groups"}``; norms: ``{"type", "num_features"}``.
    """
    out = {}
    for name, m in generator.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out[name] = {"type": type(m).__name__, "in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
            out[name] = {"type": type(m).__name__, "num_features": m.num_features}
    return out


def export_state_dict(generator: nn.Module, path: str | Path, *, family: str, name: str, ngf: int | None = None,
                      example: torch.Tensor | None = None, atol: float = 1e-5) -> dict:
    """Write ``generator`` as a portable state dict (see the module docstring).

    Args:
        generator: the student as shipped (apply ``family.for_export`` first); not modified.
        path: the ``.pth`` file to write; the ``.json`` record goes beside it, and
            ``portable_loader.py`` into the same folder.
        family: the family name recorded ('pix2pix', 'cyclegan').
        name: the generator name recorded ('G', 'AtoB', 'BtoA').
        ngf: the width before pruning, recorded in the constructor arguments.
        example: an input (N, C, H, W); when given, the written files are reloaded through the
            shipped loader script and its output compared with ``generator``'s (eval mode).
        atol: largest accepted absolute difference of that check.

    Returns:
        {"weights", "record", "loader": paths as strings, "max_abs_diff": float or None}.

    Raises:
        GanCompressError: the generator's class is not covered.
        RuntimeError: the reloaded generator's output differs from the original's by more than atol.
    """
    if not isinstance(generator, _COVERED):
        raise GanCompressError(
            f"export --state-dict covers UnetGenerator, ResnetGenerator and MobileResnetGenerator, not "
            f"{type(generator).__name__} (family {family}); export it as TorchScript or ONNX instead")
    path = Path(path)
    if path.suffix != ".pth":
        path = path.with_suffix(".pth")
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    atomic_save(state, path)
    args = constructor_args(generator, ngf)
    record = {
        "format": FORMAT, "version": VERSION, "family": family, "generator": name,
        "class": type(generator).__name__, "args": args, "layers": layer_record(generator),
        "weights": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input": {"channels": args["input_nc"],
                  "multiple_of": 2 ** args["num_downs"] if "num_downs" in args else 4,
                  "range": [-1, 1]},
        "output": {"channels": args["output_nc"], "range": [-1, 1]},
        "loader": LOADER_NAME,
        "usage": f"from portable_loader import load; net = load({path.with_suffix('.json').name!r})",
        "torch_version": torch.__version__,
    }
    record_path = path.with_suffix(".json")
    text = _dumps(record)
    atomic_write(record_path, lambda f: f.write(text.encode()))
    loader_path = path.parent / LOADER_NAME
    source = LOADER_SOURCE.read_bytes()
    atomic_write(loader_path, lambda f: f.write(source))
    diff = None
    if example is not None:
        diff = _check_reload(generator, loader_path, record_path, example)
        if diff > atol:
            raise RuntimeError(f"{path}: the generator rebuilt by {LOADER_NAME} differs from the original by "
                               f"{diff:.3g} (> {atol})")
    return {"weights": str(path), "record": str(record_path), "loader": str(loader_path), "max_abs_diff": diff}


def _dumps(record: dict) -> str:
    """JSON with one line per top-level key, and one line per layer under ``layers``."""
    def value(v):
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(x)}" for k, x in v.items()) + "\n }"
        return json.dumps(v)
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in record.items()) + "\n}\n"


def load_loader_module(loader_path: str | Path):
    """Import a shipped ``portable_loader.py`` from its file (not from the package)."""
    spec = importlib.util.spec_from_file_location("_gancompress_portable_loader", loader_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_reload(generator: nn.Module, loader_path: Path, record_path: Path, example: torch.Tensor) -> float:
    rebuilt = load_loader_module(loader_path).load(record_path, map_location=example.device)
    was_training = generator.training
    try:
        generator.eval()
        with torch.no_grad():
            return (rebuilt(example) - generator(example)).abs().max().item()
    finally:
        generator.train(was_training)
