"""The student leaves the run folder: self-describing generator files and TorchScript
(:mod:`.generator`), ONNX (:mod:`.onnx_file`), and a plain state dict with the JSON record and the
torch-only loader that rebuilds it (:mod:`.portable`, :mod:`.portable_loader`).

May import: errors, config, system, files, nets, data, metrics, demo, method, families, pretrained.
"""
from __future__ import annotations

from .generator import export_torchscript, load_generator, save_generator

__all__ = ["export_torchscript", "load_generator", "save_generator"]
