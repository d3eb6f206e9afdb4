"""Export a generator to ONNX and check it against eager PyTorch with onnxruntime.

The export uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).
On torch 2.14 the default exporter is the dynamo one, which needs the extra ``onnxscript``
package and fails with ``ModuleNotFoundError`` without it; the TorchScript exporter needs only
``onnx``, supports ``dynamic_axes`` for a free batch dimension, and exports the ops our
generators use (Conv, ConvTranspose, BatchNorm, InstanceNorm, PixelShuffle -> DepthToSpace)
with onnxruntime parity around 1e-6. Folding spectral norm into plain weights is the caller's job.
"""

from __future__ import annotations

import importlib
import io
import logging
import warnings
from pathlib import Path

import torch

from ..errors import GanCompressError
from ..files.atomic import atomic_write

log = logging.getLogger(__name__)


def _require(module: str):
    """Import an optional dependency or raise a GanCompressError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise GanCompressError(f"ONNX export needs the '{module}' package: pip install gancompress[onnx]") from e


def onnx_available() -> bool:
    """Whether onnx and onnxruntime can be imported (the ``onnx`` extra)."""
    try:
        importlib.import_module("onnx")
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True


def export_onnx(model: torch.nn.Module, example_input: torch.Tensor, path, opset: int = 17) -> Path:
    """Export a single-input, single-output model to ONNX with a dynamic batch axis.

    The graph is checked with ``onnx.checker`` in memory, then written atomically
    (:func:`gancompress.files.atomic.atomic_write`), so an interrupted export never leaves a broken file.

    Args:
        model: network in the form to deploy (spectral norm already folded); exported in eval
            mode, its training flag is restored afterwards.
        example_input: (N, C, H, W) example; H and W are fixed in the graph, N is not.
        path: output ``.onnx`` file.
        opset: ONNX opset version.

    Returns:
        ``path`` as a Path.
    """
    onnx = _require("onnx")
    path = Path(path)
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The legacy exporter is chosen on purpose (see the module docstring).
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            # strided Slices (subpixel.py's phases) are left unfolded: the graph is still right
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            torch.onnx.export(
                model,
                (example_input,),
                buffer,
                opset_version=opset,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                dynamo=False,
            )
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_model_from_string(data))
    atomic_write(path, lambda f: f.write(data))
    log.info("exported ONNX opset %d to %s", opset, path)
    return path


def onnx_parity(path, model: torch.nn.Module, example_input: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime (CPU) and eager PyTorch outputs.

    Args:
        path: ONNX file from :func:`export_onnx`.
        model: the eager model it was exported from (run in eval mode on its own device).
        example_input: (N, C, H, W) input; any batch size.

    Returns:
        ``max |onnx(x) - model(x)|`` as a float.
    """
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example_input.detach().float().cpu()
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
            eager = model(x.to(device)).float().cpu()
    finally:
        model.train(was_training)
    if tuple(eager.shape) != tuple(onnx_out.shape):
        raise GanCompressError(
            f"ONNX output shape {tuple(onnx_out.shape)} differs from eager {tuple(eager.shape)} for {path}: "
            f"re-export with an example input of the deployment resolution"
        )
    return float((torch.from_numpy(onnx_out) - eager).abs().max())
