"""The metric registry: values and protocol records of a whole family evaluation, the real-feature
cache, comparability, and unknown names."""
from __future__ import annotations

import dataclasses
import hashlib
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gancompress.demo.makers import DEMO_PALETTE
from gancompress.errors import CheckpointError, RecipeError
from gancompress.families import get_family
from gancompress.metrics.evaldata import Baseline, EvalBatch, EvalData, Reference
from gancompress.metrics.extractors import TorchScriptExtractor
from gancompress.metrics.feature_cache import compute_features
from gancompress.metrics.fid import fid_from_features
from gancompress.metrics.image import psnr_ssim_y, to_unit
from gancompress.metrics.miou import evaluate_miou
from gancompress.metrics.palette import Palette
from gancompress.metrics.registry import METRICS, MetricContext, evaluate_generators, protocol_markdown
from gancompress.metrics.segmenter import Segmenter


def _with_eval(recipe, **settings):
    """The recipe with eval settings added (trust_torchscript is not an EvalConfig field yet)."""
    return dataclasses.replace(recipe, eval=SimpleNamespace(**{**dataclasses.asdict(recipe.eval), **settings}))


class _ColourSegmenter(nn.Module):
    """Logits = minus the distance of each pixel to each palette colour: labels its own label map exactly."""

    def __init__(self, palette):
        super().__init__()
        self.register_buffer("colours", palette.float().view(1, -1, 3, 1, 1) / 255)

    def forward(self, x):
        return -(x[:, None] - self.colours).abs().sum(2)


@pytest.fixture(scope="module")
def extractor_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("evaluators") / "features.ts"
    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.jit.save(torch.jit.script(extractor), str(path))
    return path


@pytest.fixture
def pix2pix(tiny_recipe, extractor_file, monkeypatch):
    """The tiny pix2pix family with a trusted TorchScript extractor and an own (kind 'smp') segmenter
    that segments by colour (the smp network itself is tested in test_metrics_miou)."""
    recipe = _with_eval(tiny_recipe, segmenter="own-segmenter.pt", fid_extractor=str(extractor_file),
                        trust_torchscript=True)
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, eval_batch_size=2))
    classes = len(DEMO_PALETTE)
    palette = Palette("demo", torch.tensor(DEMO_PALETTE), torch.arange(classes), None)
    segmenter = Segmenter(_ColourSegmenter(palette.colours), "cpu", num_classes=classes, palette=palette,
                          source="own-segmenter.pt", kind="smp", sha256="ab" * 32)
    monkeypatch.setattr(MetricContext, "segmenter", lambda self: segmenter)
    family = get_family("pix2pix")(recipe)
    gens = {}
    for seed, role in enumerate(("teacher", "student")):
        torch.manual_seed(seed)
        gens[role] = {"G": family.build_generator("G", 8).eval()}
    return family, gens, segmenter


def test_pix2pix_values_match_direct_computations_and_records_say_why_not_comparable(pix2pix, tmp_path):
    family, gens, seg = pix2pix
    result = evaluate_generators(family, gens, "cpu", tmp_path / "cache")
    values, records = result["metrics"]["G"], result["protocol"]["G"]
    assert set(values) == {"teacher", "student", "real"}
    assert set(values["student"]) == {"psnr", "ssim", "miou", "fid", "kid_mean", "kid_std", "fid_images"}
    assert set(values["real"]) == {"miou"}  # the real photo is only the segmenter's ceiling

    data = family.dataset("val", train=False)
    items = [data[i] for i in range(len(data))]
    a = torch.stack([it["A"] for it in items])
    b = to_unit(torch.stack([it["B"] for it in items]))
    with torch.no_grad():
        out = to_unit(gens["student"]["G"](a))
    direct = psnr_ssim_y(out, b, border=0)
    assert values["student"]["psnr"] == pytest.approx(direct["psnr"], rel=1e-9)
    assert values["student"]["ssim"] == pytest.approx(direct["ssim"], rel=1e-9)

    colours = [((x.permute(1, 2, 0) + 1) * 127.5).round().long() for x in a]
    assert values["student"]["miou"] == pytest.approx(evaluate_miou(seg, [(out, colours)])["miou"])
    assert evaluate_miou(seg, [(to_unit(a), colours)])["miou"] == pytest.approx(100.0)  # the segmenter works
    ext = TorchScriptExtractor(family.recipe.eval.fid_extractor, trusted=True)
    fid = fid_from_features(compute_features([out], ext), compute_features([b], ext))
    assert values["student"]["fid"] == pytest.approx(fid, rel=1e-6)
    assert values["student"]["fid_images"] == len(data) == 4

    miou = records["miou"]
    assert miou["evaluator"] == {"name": "own segmentation_models_pytorch segmenter (gancompress train-segmenter)",
                                 "kind": "smp", "file": "own-segmenter.pt", "sha256": "ab" * 6}
    assert not miou["comparable"] and "own segmenter: not comparable with published mIoU" in miou["why_not"]
    assert miou["protocol"]["images"] == 4 and miou["protocol"]["resolution"] == [32, 32]
    assert miou["protocol"]["label_resolution"] == [[32, 32]]
    assert miou["reference"].startswith("GCC Table 2")
    fid_record = records["fid_kid"]
    assert fid_record["evaluator"]["sha256"] == hashlib.sha256(ext.path.read_bytes()).hexdigest()[:12]
    assert not fid_record["comparable"] and "not the standard Inception" in fid_record["why_not"]
    assert "4 evaluation images, the published protocol uses 500" in fid_record["why_not"]
    assert fid_record["protocol"]["kid"] == {"subsets": 100, "subset_size": 4,
                                             "kernel": "polynomial, degree 3, gamma 1/D, coef0 1"}
    assert records["psnr_ssim"]["reference"] is None and records["psnr_ssim"]["protocol"]["border_crop"] == 0
    lines = protocol_markdown(result["protocol"])
    assert len(lines) == 3 and all("not comparable" in line for line in lines)


def test_recipe_key_decides_whether_a_torchscript_segmenter_loads(tiny_recipe, tmp_path):
    path = tmp_path / "seg.ts"
    torch.jit.save(torch.jit.script(nn.Conv2d(3, 2, 1)), str(path))
    refused = MetricContext(get_family("pix2pix")(_with_eval(tiny_recipe, segmenter=str(path))), {}, "cpu", None)
    with pytest.raises(CheckpointError, match="eval.trust_torchscript: true"):
        refused.segmenter()
    trusted = _with_eval(tiny_recipe, segmenter=str(path), trust_torchscript=True)
    assert MetricContext(get_family("pix2pix")(trusted), {}, "cpu", None).segmenter().kind == "torchscript"


def test_real_features_are_computed_once_per_set_and_recomputed_when_a_file_changes(pix2pix, tmp_path, monkeypatch):
    family, gens, _ = pix2pix
    calls = []
    original = TorchScriptExtractor.__call__
    monkeypatch.setattr(TorchScriptExtractor, "__call__", lambda self, x: calls.append(len(x)) or original(self, x))

    def run():
        calls.clear()
        result = evaluate_generators(family, gens, "cpu", tmp_path / "cache", metrics=("fid_kid",))
        return result["metrics"]["G"], len(calls)

    first, n_first = run()
    second, n_second = run()
    real_batches = 4 // family.recipe.data.eval_batch_size
    assert n_first - n_second == real_batches and n_second == 2 * real_batches  # teacher + student only
    assert first == second
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    touched = family.dataset("val", train=False).files[0]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, n_third = run()
    assert n_third == n_first


def test_missing_evaluators_skip_their_metrics_with_the_reason(tiny_recipe):
    family = get_family("pix2pix")(tiny_recipe)
    torch.manual_seed(0)
    gen = family.build_generator("G", 8).eval()
    result = evaluate_generators(family, {"student": {"G": gen}}, "cpu")
    assert set(result["metrics"]["G"]) == {"student"}
    assert set(result["metrics"]["G"]["student"]) == {"psnr", "ssim"}
    records = result["protocol"]["G"]
    assert "eval.segmenter is not set" in records["miou"]["skipped"]
    assert "eval.inception_weights" in records["fid_kid"]["skipped"]
    assert family.evaluate({"student": {"G": gen}}, torch.device("cpu")) == result["metrics"]  # the thin call


def test_unknown_metric_lists_the_valid_ones(tiny_recipe):
    family = get_family("pix2pix")(tiny_recipe)
    with pytest.raises(RecipeError) as e:
        evaluate_generators(family, {}, "cpu", metrics=("lpips",))
    assert "'lpips'" in str(e.value) and all(name in str(e.value) for name in METRICS)


class _StubFamily:
    """Evaluates an identity 'generator' on n images against themselves (PSNR infinite)."""

    name = "stub"
    generator_names = ("G",)
    eval_metrics = ("psnr_ssim",)

    def __init__(self, n: int, reference: Reference):
        self.n, self.reference = n, reference
        self.recipe = SimpleNamespace(eval=SimpleNamespace(segmenter="", fid_extractor="", inception_weights=""))

    def eval_data(self, name):
        g = torch.Generator().manual_seed(0)
        images = [torch.rand(1, 3, 24, 24, generator=g) for _ in range(self.n)]

        def batches():
            for x in images:
                yield EvalBatch(inputs=x * 2 - 1, target=x)

        dark = Baseline(metrics=("psnr_ssim",), output=lambda b: b.target * 0.5)
        return EvalData(split="toy", count=self.n, batches=batches, resolution=(24, 24), baselines={"dark": dark},
                        psnr_border=2, references={"psnr_ssim": self.reference})


def test_comparability_follows_the_published_image_count():
    reference = Reference("toy table", images=3, resolution=(24, 24))
    gens = {"student": {"G": nn.Identity()}}
    ok = evaluate_generators(_StubFamily(3, reference), gens, "cpu")
    record = ok["protocol"]["G"]["psnr_ssim"]
    assert record["comparable"] and record["why_not"] == "" and record["reference"] == "toy table"
    assert ok["metrics"]["G"]["student"]["psnr"] == float("inf")
    assert ok["metrics"]["G"]["dark"]["psnr"] < 20  # a baseline role, scored like a generator
    short = evaluate_generators(_StubFamily(2, reference), gens, "cpu")["protocol"]["G"]["psnr_ssim"]
    assert not short["comparable"] and short["why_not"] == "2 evaluation images, the published protocol uses 3"
    blocked = Reference("toy table", images=3, blocker="known difference")
    record = evaluate_generators(_StubFamily(3, blocked), gens, "cpu")["protocol"]["G"]["psnr_ssim"]
    assert not record["comparable"] and record["why_not"] == "known difference"


class _LabelledStub(_StubFamily):
    """One 8x8 image with a label map of the given size, scored by mIoU."""

    eval_metrics = ("miou",)

    def __init__(self, label_size, reference):
        super().__init__(1, reference)
        self.label_size = label_size

    def eval_data(self, name):
        label = torch.full(self.label_size, 255, dtype=torch.long)
        label[:64, :64] = 3

        def batches():
            yield EvalBatch(inputs=torch.zeros(1, 3, 8, 8), load_labels=lambda: [label])

        return EvalData(split="toy", count=1, batches=batches, resolution=(8, 8),
                        references={"miou": self.reference})


def test_drn_miou_is_comparable_only_at_the_published_label_resolution(monkeypatch):
    torch.manual_seed(0)
    drn_like = Segmenter(nn.Conv2d(3, 19, 1), "cpu", num_classes=19, kind="drn-d-105", sha256="cd" * 32,
                         source="drn-d-105_ms_cityscapes.pth", quantize="truncate")
    monkeypatch.setattr(MetricContext, "segmenter", lambda self: drn_like)
    reference = Reference("toy table", images=1, resolution=(8, 8))
    gens = {"student": {"G": nn.Identity()}}
    record = evaluate_generators(_LabelledStub((1024, 2048), reference), gens, "cpu")["protocol"]["G"]["miou"]
    assert record["comparable"] and record["why_not"] == ""
    assert record["protocol"]["normalisation"]["mean"][0] == pytest.approx(0.290101, abs=1e-6)
    record = evaluate_generators(_LabelledStub((256, 512), reference), gens, "cpu")["protocol"]["G"]["miou"]
    assert not record["comparable"]
    assert record["why_not"] == "labels at 256x512, the published protocol scores at 1024x2048"
