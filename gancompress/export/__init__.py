"""The student leaves the run folder: generator files, TorchScript, ONNX and a portable state dict."""
from __future__ import annotations

from .generator import export_torchscript, load_generator, save_generator

__all__ = ["export_torchscript", "load_generator", "save_generator"]
