"""gancompress export RUN_DIR --int8: the tolerance verdict, the written and the refused paths."""
from __future__ import annotations

import json

import pytest
import torch

from gancompress.errors import GanCompressError
from gancompress.metrics.keys import headline_key, worsening
from gancompress.run import int8 as int8_mod
from gancompress.run.int8 import check_tolerance, export_int8

pytest.importorskip("onnxruntime")


def test_worsening_follows_each_metrics_direction():
    assert worsening("miou", 50.0, 49.0) == pytest.approx(0.02)  # lower mIoU is worse
    assert worsening("miou", 50.0, 51.0) == pytest.approx(-0.02)
    assert worsening("fid", 40.0, 42.0) == pytest.approx(0.05)  # higher FID is worse
    assert worsening("psnr", 0.0, -0.5) == pytest.approx(0.5)  # absolute at a zero reference
    assert headline_key({"ssim": 0.8, "psnr": 24.0}) == "psnr"
    assert headline_key({"kid_std": 0.1}) is None


def test_verdict_accepts_within_and_refuses_beyond_the_tolerance():
    ok = check_tolerance({"fp32": {"miou": 50.0, "psnr": 20.0}, "int8": {"miou": 49.5, "psnr": 10.0}}, 0.02)
    assert ok["key"] == "miou" and ok["accepted"] and ok["worse_by"] == pytest.approx(0.01)
    bad = check_tolerance({"fp32": {"fid": 40.0}, "int8": {"fid": 41.0}}, 0.02)
    assert bad["key"] == "fid" and not bad["accepted"] and bad["worse_by"] == pytest.approx(0.025)
    none = check_tolerance({"fp32": {}, "int8": {}}, 0.02)
    assert none["key"] is None and not none["accepted"]


@pytest.fixture
def run_folder(tmp_path, tiny_recipe):
    """A finished run's files as export --int8 reads them: recipe.yaml, teacher/ and student/."""
    import yaml

    from gancompress.config import recipe_to_dict
    from gancompress.export.generator import save_generator
    from gancompress.families import get_family
    from gancompress.files.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.recipe.write_text(yaml.safe_dump(recipe_to_dict(tiny_recipe)))
    family = get_family(tiny_recipe.family)(tiny_recipe)
    torch.manual_seed(0)
    for role, ngf in (("teacher", 8), ("student", 4)):
        save_generator(run.generator(role, "G"), family.build_generator("G", ngf), tiny_recipe, "G", ngf)
    return run


def test_an_int8_student_within_tolerance_is_written_with_its_figures(run_folder):
    record = export_int8(run_folder, tolerance=1.0)
    entry = record["generators"]["G"]
    assert entry["verdict"]["key"] == "psnr"  # no segmenter or Inception in the tiny recipe
    assert set(entry["metrics"]) == {"fp32", "int8"} and entry["metrics"]["int8"]["psnr"] > 0
    out = run_folder.root / "export" / "generator.int8.onnx"
    assert entry["file"] == str(out) and out.stat().st_size > 0
    import onnx

    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ, not the fp32 file copied
    # ONNX Runtime has no int8 ConvTranspose: the U-Net's decoder is quantized as ordinary convs
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops
    rows = {(r["model"], r["precision"]) for r in entry["latency"]}
    assert rows == {(m, p) for m in ("teacher", "student") for p in ("fp32", "int8")}
    assert set(entry["int8_vs_fp32"]) == {"teacher_b1", "student_b1"}
    on_disk = json.loads((run_folder.root / "export" / "int8.json").read_text())
    assert on_disk["generators"]["G"]["verdict"] == entry["verdict"]


def test_a_worse_int8_student_is_refused_in_one_line_and_not_written(run_folder, monkeypatch):
    stale = run_folder.root / "export" / "generator.int8.onnx"
    stale.parent.mkdir()
    stale.write_bytes(b"an earlier export's file")

    def fake_eval(family, generators, device, cache_dir=None):
        return {"metrics": {"G": {"fp32": {"psnr": 20.0}, "int8": {"psnr": 19.0}}}, "protocol": {}}

    monkeypatch.setattr(int8_mod, "evaluate_generators", fake_eval)
    with pytest.raises(GanCompressError) as err:
        export_int8(run_folder, tolerance=0.02)
    message = str(err.value)
    assert "\n" not in message and "psnr 19" in message and "5.0% worse" in message and "2.0%" in message
    assert not stale.exists()  # no file left that the verdict did not pass
    record = json.loads((run_folder.root / "export" / "int8.json").read_text())
    assert record["generators"]["G"]["verdict"]["accepted"] is False and record["generators"]["G"]["file"] is None


def test_the_command_refuses_a_generator_file_and_a_bad_tolerance(run_folder, capsys):
    from gancompress.cli import main

    assert main(["export", str(run_folder.generator("student", "G")), "--int8"]) != 0
    assert "not a folder" in capsys.readouterr().err
    assert main(["export", str(run_folder.root), "--int8", "--int8-tolerance", "3"]) != 0
    assert "--int8-tolerance" in capsys.readouterr().err
    assert main(["export", str(run_folder.root / "nowhere"), "--int8"]) != 0
