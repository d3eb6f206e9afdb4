"""An int8 student: ONNX Runtime static quantization of the exported ONNX generator.

Weights are quantized per output channel to int8 and activations per tensor to uint8, in the QDQ
format (QuantizeLinear/DequantizeLinear pairs around each quantized op, which ONNX Runtime and
OpenVINO both fuse into int8 kernels). Unsigned activations are ONNX Runtime's fast path on x86
(its U8S8 kernels); signed ones ran the demo-scale U-Net 0.6-0.8x as fast as fp32 on a 2-core
x86 machine, unsigned ones 0.8-1.0x (CHANGELOG.md, 2026-12). ONNX Runtime has no int8
``ConvTranspose``, so the file that is quantized is exported from a copy of the generator whose
transposed convolutions are rewritten as ordinary ones (:mod:`.subpixel`, the same function).
The activation ranges are calibrated (min/max) on a strided sample of the training inputs:
``export.int8_calibration`` of them, evenly spread over the split, so every part of the data is
seen and the result is the same on every run.
"""
from __future__ import annotations

import importlib
import logging
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import GanCompressError
from ..files.atomic import atomic_write

log = logging.getLogger(__name__)


def _quantization():
    try:
        return importlib.import_module("onnxruntime.quantization")
    except ImportError:
        raise GanCompressError("int8 export needs the 'onnxruntime' package: pip install gancompress[onnx]") from None


def calibration_inputs(family, name: str, count: int, synthetic: bool = False) -> list[torch.Tensor]:
    """``count`` (1, C, H, W) inputs of generator ``name``: a strided sample of the training split
    (evaluation-time preprocessing, no random crops or flips), or random batches with ``synthetic``."""
    if synthetic:
        torch.manual_seed(0)
        return [family.generator_inputs(family.synthetic_batch(1, torch.device("cpu")))[name] for _ in range(count)]
    data = family.dataset(family.recipe.data.train_split, train=False)
    n = len(data)
    if n == 0:
        raise GanCompressError(f"int8 calibration: no training images in {family.recipe.data.root}")
    picks = sorted({int(i * n / min(count, n)) for i in range(min(count, n))})
    collate = torch.utils.data.default_collate
    return [family.generator_inputs(collate([data[i]]))[name] for i in picks]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of inputs."""

    def __init__(self, input_name: str, inputs: list[torch.Tensor]):
        self._feeds = iter([{input_name: x.detach().float().cpu().numpy()} for x in inputs])

    def get_next(self):
        return next(self._feeds, None)

    def rewind(self):  # pragma: no cover - not called by quantize_static's MinMax path
        pass


def quantize_int8(fp32_path, out_path, inputs: list[torch.Tensor]) -> Path:
    """Quantize an fp32 ONNX generator (from :func:`.onnx_file.export_onnx`) to int8 QDQ
    (int8 weights per output channel, uint8 activations per tensor).

    Args:
        fp32_path: the fp32 ``.onnx`` file (input named 'input').
        out_path: the int8 file, written atomically.
        inputs: (1, C, H, W) calibration inputs.

    Returns:
        ``out_path`` as a Path.
    """
    q = _quantization()
    if not inputs:
        raise GanCompressError("int8 export: no calibration inputs; raise export.int8_calibration")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "int8.onnx"
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference and constant folding first, as onnxruntime recommends before quantizing
            q.quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as e:  # noqa: BLE001 - pre-processing is an optimisation only
            log.info("quantization pre-processing skipped (%s)", str(e).splitlines()[0] if str(e) else e)
            source = Path(fp32_path)
        q.quantize_static(str(source), str(staged), _Reader("input", inputs), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
        data = staged.read_bytes()
    return atomic_write(out_path, lambda f: f.write(data))


class OnnxGenerator(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, as a module: ``(N, C, H, W) -> (N, C', H', W')``
    on the input's device, so the metrics that time or score torch generators take it as one."""

    def __init__(self, path, threads: int | None = None):
        super().__init__()
        ort = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})
        return torch.from_numpy(out).to(x.device)


class OnnxFiles:
    """``(role, model, precision) -> path`` of each model's ONNX file, written once into a
    temporary folder (int8: quantized from the fp32 export of the model with its transposed
    convolutions rewritten as ordinary ones, calibrated on ``calibration()``'s inputs, asked for
    once). A context manager: the folder goes when it closes.

    Args:
        example: (1, C, H, W) input the models are exported at (the batch axis stays free).
        opset: the ONNX opset.
        calibration: () -> list of (1, C, H, W) inputs, called at the first int8 file.
    """

    def __init__(self, example: torch.Tensor, opset: int, calibration=None):
        self.example, self.opset, self.calibration = example, opset, calibration
        self._files: dict = {}
        self._inputs: list | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="gancompress-onnx-")

    def __enter__(self) -> "OnnxFiles":
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def __call__(self, role: str, model: nn.Module, precision: str) -> Path:
        from .onnx_file import export_onnx
        from .subpixel import without_transposed_convs

        folder = Path(self._tmp.name)
        if (role, "fp32") not in self._files:
            self._files[(role, "fp32")] = export_onnx(model, self.example, folder / f"{role}_fp32.onnx",
                                                      opset=self.opset)
        if (role, precision) not in self._files:
            if self.calibration is None:
                raise GanCompressError("int8 latency needs calibration inputs, and none were given")
            if self._inputs is None:
                self._inputs = self.calibration()
            rewritten, count = without_transposed_convs(model)
            source = self._files[(role, "fp32")]
            if count:  # ONNX Runtime quantizes Conv, not ConvTranspose: quantize the rewritten net
                source = export_onnx(rewritten, self.example, folder / f"{role}_conv_fp32.onnx",
                                     opset=self.opset)
            self._files[(role, precision)] = quantize_int8(source, folder / f"{role}_{precision}.onnx",
                                                           self._inputs)
        return self._files[(role, precision)]
