"""Latency measurement and ONNX export parity on a tiny generator-like net."""

import time

import pytest
import torch
import torch.nn as nn

from gancompress.export.onnx_file import export_onnx, onnx_parity
from gancompress.metrics.latency import latency_table, measure_latency


def _tiny_generator(width=4):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1),
        nn.InstanceNorm2d(width, affine=True),
        nn.ReLU(),
        nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
        nn.Conv2d(width, 12, 3, padding=1),
        nn.PixelShuffle(2),
        nn.Tanh(),
    )


class _Sleeper(nn.Module):
    """Takes a known time per forward pass."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_measure_latency_eager_and_torchscript():
    out = measure_latency(_Sleeper(0.02), torch.zeros(1, 3, 4, 4), device="cpu", warmup=1, iters=5)
    assert out["iters"] == 5
    assert 20.0 <= out["median_ms"] <= out["p90_ms"] < 200.0  # the figure is the forward pass, in ms
    net = _tiny_generator().train()
    x = torch.randn(1, 3, 16, 16)
    for ts in (False, True):
        out = measure_latency(net, x, device="cpu", warmup=1, iters=5, torchscript=ts)
        assert out["iters"] == 5
        assert 0 < out["median_ms"] <= out["p90_ms"]
    assert net.training  # the caller's mode is restored


def test_latency_table_has_speedup():
    models = {"teacher": _tiny_generator(8), "student": _tiny_generator(2)}
    table = latency_table(models, lambda b: torch.randn(b, 3, 16, 16), "cpu", warmup=1, iters=3)
    assert set(table["models"]["teacher"]) == {"eager_b1_fp32", "torchscript_b1_fp32"}
    assert set(table["speedup"]) == {"eager_b1_fp32", "torchscript_b1_fp32"}
    for setting, ratio in table["speedup"].items():
        teacher = table["models"]["teacher"][setting]["median_ms"]
        student = table["models"]["student"][setting]["median_ms"]
        assert student > 0 and ratio == pytest.approx(teacher / student)


def test_onnx_export_parity_and_dynamic_batch(tmp_path):
    net = _tiny_generator()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    path = export_onnx(net, torch.randn(1, 3, 16, 16), tmp_path / "g.onnx")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    assert onnx_parity(path, net, torch.randn(3, 3, 16, 16)) < 1e-4
    assert net.training  # export restores the caller's mode


def test_missing_onnxruntime_says_how_to_install(monkeypatch, tmp_path):
    import sys

    from gancompress.errors import GanCompressError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes "import onnxruntime" raise ImportError
    with pytest.raises(GanCompressError, match=r"pip install gancompress\[onnx\]"):
        onnx_parity(tmp_path / "g.onnx", _tiny_generator(), torch.randn(1, 3, 16, 16))
