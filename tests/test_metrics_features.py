"""The demo feature net: its checkpoint, loading without trust, what it learns, and the FID/KID
records measured with it."""
from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gancompress.demo import cyclegan as demo_cyclegan
from gancompress.demo import sagan as demo_sagan
from gancompress.errors import CheckpointError
from gancompress.metrics.evaldata import EvalBatch, EvalData, ImageSet, Reference
from gancompress.metrics.extractors import (
    FeatureNetExtractor,
    TorchScriptExtractor,
    check_fid_extractor,
    extractor_from_eval,
    load_fid_extractor,
)
from gancompress.metrics.feature_cache import FEATURE_CACHE_FORMAT
from gancompress.metrics.features import (
    FEATURE_NET_FORMAT,
    NOT_COMPARABLE,
    FeatureNet,
    load_feature_net,
    resize_to,
    save_feature_net,
    train_feature_net,
)
from gancompress.metrics.fid import fid_from_features, kid_from_features
from gancompress.metrics.registry import evaluate_generators, protocol_markdown


def _eval_cfg(path, trust=False):
    return SimpleNamespace(fid_extractor=str(path), trust_torchscript=trust, inception_weights="")


def _tiny_net(seed=0):
    torch.manual_seed(seed)
    net = FeatureNet(widths=(4, 8), num_classes=3, input_size=16)
    with torch.no_grad():  # BatchNorm statistics that differ from the defaults, so loading them matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_checkpoint_round_trips_and_loads_without_trust(tmp_path):
    net = _tiny_net()
    path = save_feature_net(net, tmp_path / "features.pt", {"classes": ["a", "b", "c"], "trained_on": "toy"})
    blob = torch.load(path, weights_only=True)  # plain data: no class is pickled
    assert blob["format"] == FEATURE_NET_FORMAT and blob["arch"]["widths"] == [4, 8]

    loaded, meta = load_feature_net(path)
    assert meta["classes"] == ["a", "b", "c"]
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    ext = extractor_from_eval(_eval_cfg(path), "cpu")  # eval.trust_torchscript is false
    assert isinstance(ext, FeatureNetExtractor) and ext.dim == 8
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    x8 = (x * 255 + 0.5).floor() / 255  # what the extractor sees: images rounded to 8 bits
    with torch.no_grad():
        torch.testing.assert_close(ext(x), net(x8))
        big = torch.rand(2, 3, 40, 40)
        torch.testing.assert_close(ext(big), net(resize_to((big * 255 + 0.5).floor() / 255, 16)))
    assert check_fid_extractor(path) == "demo-features"
    described = ext.describe()
    assert described["kind"] == "demo-features" and "not comparable with published FID" in described["name"]
    assert ext.id == f"feature-net-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"  # keys the feature cache


def test_a_torchscript_extractor_still_needs_trust(tmp_path):
    path = tmp_path / "features.pt"  # the same name as a demo's feature net: the name decides nothing
    torch.jit.save(torch.jit.script(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())), str(path))
    with pytest.raises(CheckpointError) as e:
        extractor_from_eval(_eval_cfg(path), "cpu")
    assert "eval.trust_torchscript: true" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="eval.trust_torchscript: true"):
        check_fid_extractor(path)  # the check before a run refuses it too
    assert check_fid_extractor(path, trusted=True) == "torchscript"
    assert isinstance(extractor_from_eval(_eval_cfg(path, trust=True), "cpu"), TorchScriptExtractor)


def test_files_that_are_not_feature_nets_are_refused_with_one_line(tmp_path):
    net = _tiny_net()
    cache = tmp_path / "cache.pt"  # a real-feature cache file: another format, never taken for a net
    torch.save({"format": FEATURE_CACHE_FORMAT, "features": torch.zeros(2, 8)}, cache)
    plain = tmp_path / "plain.pt"
    torch.save(net.state_dict(), plain)
    for path in (cache, plain):
        with pytest.raises(CheckpointError) as e:
            load_fid_extractor(path, trusted=True)
        assert FEATURE_NET_FORMAT in str(e.value) and "\n" not in str(e.value)

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    hostile = tmp_path / "hostile.pt"
    torch.save({"format": FEATURE_NET_FORMAT, "meta": Payload()}, hostile)
    with pytest.raises(CheckpointError, match="os.makedirs"):
        load_fid_extractor(hostile, trusted=True)
    assert not marker.exists()

    blob = torch.load(save_feature_net(net, tmp_path / "ok.pt", {}), weights_only=True)
    for broken, phrase in (({**blob, "arch": {**blob["arch"], "widths": [4, 10**6]}}, "arch.widths"),
                           ({**blob, "state_dict": {**blob["state_dict"], "head.weight": torch.zeros(3, 9)}},
                            "head.weight"),
                           ({**blob, "version": 99}, "version 99")):
        torch.save(broken, tmp_path / "broken.pt")
        with pytest.raises(CheckpointError, match=phrase):
            load_fid_extractor(tmp_path / "broken.pt")


@pytest.fixture(scope="module")
def textures():
    """Crops of grass and gravel in both demo tints: 24 per class from the textures' training band, 12
    held out from the test band, 32x32 (the CycleGAN demo's classes, fewer of them)."""
    gen = torch.Generator().manual_seed(3)
    pick = ("grass.png", "gravel.png")
    return (demo_cyclegan.feature_classes(32, 24, (0.0, 0.8), gen, textures=pick),
            demo_cyclegan.feature_classes(32, 12, (0.8, 1.0), gen, textures=pick))


@pytest.fixture(scope="module")
def texture_net(textures, tmp_path_factory):
    train, held = textures
    path = tmp_path_factory.mktemp("features") / "features.pt"
    meta = train_feature_net(train, path, epochs=12, seed=0, held_out=held, trained_on="test textures")
    return path, meta


def test_the_texture_net_tells_held_out_textures_and_tints_apart(textures, texture_net):
    _, held = textures
    path, meta = texture_net
    net, saved = load_feature_net(path)
    correct = total = 0
    with torch.no_grad():
        for k, images in enumerate(held.values()):
            correct += int((net.logits(images).argmax(1) == k).sum())
            total += images.shape[0]
    accuracy = correct / total
    assert accuracy >= 0.7, accuracy  # 4 classes: chance is 0.25
    assert saved["held_out_accuracy"] == meta["held_out_accuracy"] == pytest.approx(accuracy)
    assert saved["classes"] == list(held) and meta["seconds"] > 0


def test_training_is_reproducible_from_its_seed_and_leaves_the_global_rng_alone(textures, tmp_path):
    small = {c: x[:6] for c, x in list(textures[0].items())[:2]}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_feature_net(small, tmp_path / "a.pt", epochs=1, seed=7, widths=(4, 8))
    assert torch.equal(torch.rand(3), expected)
    train_feature_net(small, tmp_path / "b.pt", epochs=1, seed=7, widths=(4, 8))
    train_feature_net(small, tmp_path / "c.pt", epochs=1, seed=8, widths=(4, 8))
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "c.pt").read_bytes()


def test_the_face_net_tells_held_out_faces_from_non_faces(tmp_path):
    train, held = demo_sagan.feature_classes(32, seed=0, n_colour=8, n_held_out_colour=8)
    keep = ("LFW face", "LFW non-face")  # the grey classes: face structure, not colour, tells them apart
    images = {c: demo_sagan._tensor(train[c][:50], 32) for c in keep}
    held_images = {c: demo_sagan._tensor(held[c], 32) for c in keep}
    meta = train_feature_net(images, tmp_path / "faces.pt", epochs=8, seed=0, widths=(8, 16, 32, 32))
    net, _ = load_feature_net(tmp_path / "faces.pt")
    with torch.no_grad():
        hits = [(net.logits(x).argmax(1) == k).float() for k, x in enumerate(held_images.values())]
    accuracy = float(torch.cat(hits).mean())
    assert accuracy >= 0.75, accuracy  # 2 classes, 20 held-out images each: chance is 0.5
    assert meta["held_out_accuracy"] is None  # none was given to train_feature_net


def test_fid_and_kid_are_zero_on_a_set_itself_and_grow_with_texture_and_tint(textures, texture_net):
    _, held = textures
    ext = load_fid_extractor(texture_net[0])
    f = {c: ext(x) for c, x in held.items()}
    grass = f["grass.png tinted A"]
    assert abs(fid_from_features(grass, grass)) < 1e-3
    other_texture = fid_from_features(grass, f["gravel.png tinted A"])
    other_tint = fid_from_features(grass, f["grass.png tinted B"])
    assert other_texture > 1.0 and other_tint > 1.0
    half = fid_from_features(grass[:6], grass[6:])  # two halves of one class: closer than another class
    assert half < min(other_texture, other_tint)
    kid_self = kid_from_features(grass, grass, subsets=20, subset_size=12)[0]
    kid_other = kid_from_features(grass, f["gravel.png tinted B"], subsets=20, subset_size=12)[0]
    assert kid_other > abs(kid_self) + 0.1


class _TextureFamily:
    """A family whose generators map held-out grass crops (inputs in [-1, 1]) to images; reals: gravel."""

    name = "toy"
    generator_names = ("AtoB",)
    eval_metrics = ("fid_kid",)

    def __init__(self, extractor, source, target):
        self.recipe = SimpleNamespace(eval=_eval_cfg(extractor))
        self.source, self.target = source, target

    def eval_data(self, name):
        def batches():
            for i in range(0, self.source.shape[0], 8):
                yield EvalBatch(inputs=self.source[i:i + 8] * 2 - 1)

        reals = ImageSet(name="testB", files=(), transform="none", images=lambda: iter([self.target]))
        return EvalData(split="testA -> testB", count=self.source.shape[0], batches=batches, resolution=(32, 32),
                        reals=reals, references={"fid_kid": Reference("toy table", blocker="toy blocker")})


def test_the_protocol_record_says_not_comparable_and_why(textures, texture_net):
    _, held = textures
    family = _TextureFamily(texture_net[0], held["grass.png tinted A"], held["gravel.png tinted B"])

    class Retint(nn.Module):  # a 'generator' that moves grass's colours halfway to gravel's
        def __init__(self, target):
            super().__init__()
            self.shift = target.mean(dim=(0, 2, 3), keepdim=True) * 2 - 1

        def forward(self, x):
            return (x + self.shift) / 2

    gens = {"teacher": {"AtoB": nn.Identity()}, "student": {"AtoB": Retint(family.target)}}
    result = evaluate_generators(family, gens, "cpu")
    values, record = result["metrics"]["AtoB"], result["protocol"]["AtoB"]["fid_kid"]
    assert set(values) == {"teacher", "student"}
    for role in values:
        assert set(values[role]) == {"fid", "kid_mean", "kid_std", "fid_images"}
        assert values[role]["fid_images"] == 12
    assert values["student"]["fid"] < values["teacher"]["fid"]  # closer to gravel's colours
    assert values["student"]["kid_mean"] < values["teacher"]["kid_mean"]

    assert record["evaluator"]["kind"] == "demo-features"
    assert not record["comparable"] and NOT_COMPARABLE in record["why_not"]
    assert "toy blocker" in record["why_not"]
    assert NOT_COMPARABLE == "demo feature net trained on the demo's own images: not comparable with published FID"
    protocol = record["protocol"]
    assert protocol["images"] == 12 and protocol["real_images"] == 12 and protocol["kid"]["subset_size"] == 12
    assert protocol["feature_dim"] == 128 and "32x32" in protocol["preprocessing"]
    assert "KID" in record["note"]  # 12 images in 128 dimensions: FID is flagged as noisy
    (line,) = protocol_markdown(result["protocol"])
    assert "not comparable with published FID" in line and "12 images" in line
