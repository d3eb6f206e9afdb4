"""Latency on the deployment runtimes: the registry, the rows' fields, the benchmark command."""
from __future__ import annotations

import json

import pytest
import torch

from gancompress.errors import GanCompressError
from gancompress.metrics.runtimes import RUNTIMES, format_rows, get_runtime, parse_runtimes, runtime_rows

ROW_FIELDS = {"model", "runtime", "precision", "batch", "threads", "median_ms", "iqr_ms"}


def test_unknown_runtime_is_refused_with_the_list():
    with pytest.raises(GanCompressError) as e:
        parse_runtimes("eager,tensorrt")
    msg = str(e.value)
    assert "'tensorrt'" in msg and all(name in msg for name in RUNTIMES) and "\n" not in msg


def test_missing_package_names_the_pip_package(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "openvino":
            raise ImportError("no openvino")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(GanCompressError, match="pip install openvino"):
        get_runtime("openvino")


def test_rows_carry_the_fields_and_speedups():
    torch.manual_seed(0)
    models = {"teacher": torch.nn.Conv2d(3, 8, 3, padding=1).eval(), "student": torch.nn.Conv2d(3, 2, 3, padding=1).eval()}
    rows = runtime_rows(models, lambda b: torch.randn(b, 3, 8, 8), runtimes=("eager", "torchscript"),
                        batches=(1, 2), max_time=0.01, macs={"teacher": 8, "student": 2})
    assert len(rows) == 2 * 2 * 2
    assert all(ROW_FIELDS <= set(r) and r["median_ms"] > 0 and r["iqr_ms"] >= 0 for r in rows)
    students = [r for r in rows if r["model"] == "student"]
    assert all(r["speedup"] > 0 and r["macs_ratio"] == 4 for r in students)
    assert "| eager | fp32 | 2 |" in format_rows(rows)


def test_benchmark_command_writes_rows(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from gancompress.cli import main

    out = tmp_path / "bench.json"
    assert main(["benchmark", "recipes/demo/pix2pix.yaml", "--synthetic", "--runtimes", "eager,onnxruntime",
                 "--batch-sizes", "1,2", "--max-time", "0.01", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {(r["runtime"], r["batch"]) for r in rows} == {(rt, b) for rt in ("eager", "onnxruntime") for b in (1, 2)}
    assert all(ROW_FIELDS <= set(r) for r in rows)
    assert result["macs_ratio"] > 1 and result["resolution"] == [64, 64]
    # the uniform net of nearest MACs is timed in every setting, and compared with the student's
    assert {r["model"] for r in rows} == {"teacher", "student", "uniform"}
    assert abs(result["gmacs"]["uniform"] / result["gmacs"]["student"] - 1) < 0.5
    assert set(result["student_vs_uniform"]) == {f"{rt}_fp32_b{b}" for rt in ("eager", "onnxruntime") for b in (1, 2)}
    med = {(r["model"], r["runtime"], r["batch"]): r["median_ms"] for r in rows}
    assert result["student_vs_uniform"]["onnxruntime_fp32_b2"] == pytest.approx(
        med[("student", "onnxruntime", 2)] / med[("uniform", "onnxruntime", 2)])
    text = capsys.readouterr().out
    assert "| onnxruntime | fp32 | 1 |" in text and "uniform net of nearest MACs" in text
    # the JSON says how to type the run again, and becomes a results page of its own in docs/results/
    assert result["format"] == "gancompress-runtimes/1" and result["commit"] and result["machine"]["cpu_count"]
    assert result["command"].startswith("gancompress benchmark recipes/demo/pix2pix.yaml --synthetic --runtimes "
                                        "eager,onnxruntime --precisions fp32 --batch-sizes 1,2")
    from gancompress.manual import results as manual_results

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "bench.json").write_text(out.read_text())
    page = manual_results.pages(tmp_path / "docs")[tmp_path / "docs" / "bench.md"]
    assert "| onnxruntime | fp32 | 2 |" in page and result["command"] in page and "do not edit" in page
    assert "[bench](x/bench.md)" in manual_results.index_part(tmp_path / "docs", "x/")


def test_round_to_is_timed_beside_the_unrounded_student(tmp_path, capsys):
    from gancompress.cli import main

    out = tmp_path / "bench.json"
    assert main(["benchmark", "recipes/demo/pix2pix.yaml", "--set", "prune.budget=50%", "--synthetic", "--runtimes",
                 "eager", "--round-to", "8", "--max-time", "0.01", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {r["model"] for r in result["rows"]} == {"teacher", "student", "uniform", "rounded"}
    med = {r["model"]: r["median_ms"] for r in result["rows"]}
    assert result["round_to"] == 8 and result["rounded_vs_student"]["eager_fp32_b1"] == pytest.approx(
        med["rounded"] / med["student"])
    assert "--round-to 8" in result["command"] and "prune.round_to 8" in capsys.readouterr().out
    # both pruned to the same budget (the search lands each within the loose tolerance)
    assert abs(result["gmacs"]["rounded"] / result["gmacs"]["student"] - 1) < 0.25
    # without --runtimes, or with a student file, it is refused in one line
    assert main(["benchmark", "recipes/demo/pix2pix.yaml", "--synthetic", "--round-to", "8"]) != 0
    assert main(["benchmark", "recipes/demo/pix2pix.yaml", "--synthetic", "--runtimes", "eager", "--round-to", "8",
                 "--student", str(tmp_path / "x.pt")]) != 0
    err = capsys.readouterr().err
    assert "add --runtimes" in err and "without --student" in err
