"""DRN-D-105 (the published Cityscapes segmenter): key layout, forward pass, loading and refusals.

The expected state-dict layout and the reference forward pass below are written from the
published architecture (fyu/drn's DRN-D-105 + DRNSeg head), independently of gancompress.metrics.drn.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gancompress.errors import CheckpointError, MissingFileError
from gancompress.metrics.drn import DRN_D_105_URL, DRNSeg
from gancompress.metrics.miou import evaluate_miou
from gancompress.metrics.segmenter import load_segmenter

# (kind, layers, width, stride, dilation) of base.0 .. base.8
SPEC = [("stem", 1, 16, 1, 1), ("plain", 1, 16, 1, 1), ("plain", 1, 32, 2, 1),
        ("res", 3, 64, 2, 1), ("res", 4, 128, 2, 1), ("res", 23, 256, 1, 2), ("res", 3, 512, 1, 4),
        ("plain", 1, 512, 1, 2), ("plain", 1, 512, 1, 1)]
CLASSES = 19


def spec_shapes() -> OrderedDict:
    """Key -> shape of drn-d-105_ms_cityscapes.pth (no num_batches_tracked: a pre-0.4 file)."""
    shapes = OrderedDict()

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)

    cin = 3
    for i, (kind, n, w, _, _) in enumerate(SPEC):
        p = f"base.{i}"
        if kind == "stem":
            shapes[f"{p}.0.weight"] = (w, cin, 7, 7)
            bn(f"{p}.1", w)
            cin = w
        elif kind == "plain":
            for j in range(n):
                shapes[f"{p}.{3 * j}.weight"] = (w, cin, 3, 3)
                bn(f"{p}.{3 * j + 1}", w)
                cin = w
        else:
            for j in range(n):
                q = f"{p}.{j}"
                shapes[f"{q}.conv1.weight"] = (w, cin, 1, 1)
                bn(f"{q}.bn1", w)
                shapes[f"{q}.conv2.weight"] = (w, w, 3, 3)
                bn(f"{q}.bn2", w)
                shapes[f"{q}.conv3.weight"] = (4 * w, w, 1, 1)
                bn(f"{q}.bn3", 4 * w)
                if j == 0:
                    shapes[f"{q}.downsample.0.weight"] = (4 * w, cin, 1, 1)
                    bn(f"{q}.downsample.1", 4 * w)
                cin = 4 * w
    shapes["seg.weight"] = (CLASSES, 512, 1, 1)
    shapes["seg.bias"] = (CLASSES,)
    shapes["up.weight"] = (CLASSES, 1, 16, 16)
    return shapes


def random_state(seed=0) -> OrderedDict:
    """Random weights in the published layout (He-normal convs, non-trivial BN statistics)."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in spec_shapes().items():
        if key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1:
            state[key] = torch.randn(shape, generator=g) * 0.1
        else:
            fan = shape[0] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan)
    return state


def reference_forward(sd, x):
    """DRN-D-105 + DRNSeg written from the spec with functional ops: (N, 3, H, W) -> logits."""
    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], False, 0.0, 1e-5)

    for i, (kind, n, _, stride, dil) in enumerate(SPEC):
        p = f"base.{i}"
        if kind == "stem":
            x = F.relu(bn(F.conv2d(x, sd[f"{p}.0.weight"], padding=3), f"{p}.1"))
        elif kind == "plain":
            for j in range(n):
                x = F.conv2d(x, sd[f"{p}.{3 * j}.weight"], stride=stride if j == 0 else 1, padding=dil, dilation=dil)
                x = F.relu(bn(x, f"{p}.{3 * j + 1}"))
        else:
            for j in range(n):
                q, s = f"{p}.{j}", stride if j == 0 else 1
                out = F.relu(bn(F.conv2d(x, sd[f"{q}.conv1.weight"]), f"{q}.bn1"))
                out = F.relu(bn(F.conv2d(out, sd[f"{q}.conv2.weight"], stride=s, padding=dil, dilation=dil),
                                f"{q}.bn2"))
                out = bn(F.conv2d(out, sd[f"{q}.conv3.weight"]), f"{q}.bn3")
                short = bn(F.conv2d(x, sd[f"{q}.downsample.0.weight"], stride=s), f"{q}.downsample.1") \
                    if j == 0 else x
                x = F.relu(out + short)
    x = F.conv2d(x, sd["seg.weight"], sd["seg.bias"])
    return F.conv_transpose2d(x, sd["up.weight"], stride=8, padding=4, groups=CLASSES)


def small_state() -> OrderedDict:
    """The layout with one-element storages (expanded views): tiny files for the refusal tests."""
    return OrderedDict((k, torch.zeros(1).expand(shape)) for k, shape in spec_shapes().items())


@pytest.fixture(scope="module")
def drn_file(tmp_path_factory):
    state = random_state()
    path = tmp_path_factory.mktemp("drn") / "drn-d-105_ms_cityscapes.pth"
    torch.save(state, path)
    return path, state


def test_architecture_has_exactly_the_published_layout():
    with torch.device("meta"):
        net = DRNSeg()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == dict(spec_shapes())
    assert len(ours) == 543


def test_random_drn_loads_matches_the_reference_forward_and_scores(drn_file):
    torch.set_num_threads(1)
    path, state = drn_file
    seg = load_segmenter(path, "cpu")
    assert seg.kind == "drn-d-105" and seg.num_classes == CLASSES and seg.quantize == "truncate"
    assert len(seg.sha256) == 64 and seg.describe()["sha256"] == seg.sha256[:12]

    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (1, 3, 64, 64), generator=g).float() / 255  # 8-bit levels: truncation keeps them
    mean = torch.tensor([0.29010095242892997, 0.32808144844279574, 0.28696394422942517]).view(1, 3, 1, 1)
    std = torch.tensor([0.1829540508368939, 0.18656561047509476, 0.18447508988480435]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference_forward(state, (image - mean) / std)
    logits = seg.logits(image)
    assert logits.shape == (1, CLASSES, 64, 64)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))

    labels = torch.randint(0, CLASSES, (1, 64, 64), generator=g)
    labels[0, :8] = 255
    out = evaluate_miou(seg, [(image, labels)])
    assert 0.0 <= out["miou"] <= 100.0 and out["num_images"] == 1
    # the same figure by hand: numpy confusion of the argmax, ignore 255, nan-mean over present classes
    pred = expected.argmax(1).numpy().ravel()
    lab = labels.numpy().ravel()
    keep = lab != 255
    hist = np.bincount(CLASSES * lab[keep] + pred[keep], minlength=CLASSES ** 2).reshape(CLASSES, CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    assert out["miou"] == pytest.approx(100 * np.nanmean(iou), abs=1e-9)


def test_wrapped_and_prefixed_state_dict_loads(tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in small_state().items()}, "epoch": 3}, path)
    seg = load_segmenter(path)
    assert seg.kind == "drn-d-105"
    assert float(seg.net.seg.weight.detach().abs().sum()) == 0.0  # the file's values, not an init


def _refusal(path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_segmenter(path)
    message = str(e.value)
    assert "\n" not in message and "eval.segmenter" in message
    return message


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    state = small_state()
    del state["base.5.7.conv2.weight"]
    torch.save(state, tmp_path / "missing.pth")
    assert "key 'base.5.7.conv2.weight' is missing" in _refusal(tmp_path / "missing.pth")

    state = small_state()
    state["seg.weight"] = torch.zeros(1).expand(21, 512, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    message = _refusal(tmp_path / "shape.pth")
    assert "key 'seg.weight' has shape (21, 512, 1, 1)" in message and "(19, 512, 1, 1)" in message

    state = small_state()
    state["fc.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "extra.pth")
    assert "key 'fc.weight' is unexpected" in _refusal(tmp_path / "extra.pth")


def test_missing_file_says_where_the_weights_come_from(tmp_path):
    with pytest.raises(MissingFileError) as e:
        load_segmenter(tmp_path / "drn-d-105_ms_cityscapes.pth")
    message = str(e.value)
    assert str(tmp_path / "drn-d-105_ms_cityscapes.pth") in message
    assert DRN_D_105_URL in message and "eval.segmenter" in message and "\n" not in message


def test_code_running_pickle_is_refused_with_the_blocked_global(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"base.0.0.weight": Payload()}, tmp_path / "evil.pth")
    message = _refusal(tmp_path / "evil.pth")
    assert "GLOBAL io.open" in message, message  # pickle records builtins.open as io.open
    assert not marker.exists()
