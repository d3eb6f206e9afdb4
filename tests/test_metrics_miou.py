"""Confusion-matrix mIoU, segmenter loading (smp checkpoint, trusted TorchScript) and the training tool."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gancompress.errors import CheckpointError, DataError, MissingFileError
from gancompress.metrics.miou import confusion_matrix, evaluate_miou, miou_from_confusion
from gancompress.metrics.palette import cityscapes_palette, colour_to_ids
from gancompress.metrics.segmenter import load_segmenter


def test_perfect_prediction_is_100():
    label = torch.randint(0, 4, (2, 8, 8))
    out = miou_from_confusion(confusion_matrix(label.clone(), label, num_classes=4))
    assert out["miou"] == pytest.approx(100.0)
    assert out["pixel_acc"] == pytest.approx(100.0)


def test_known_confusion_matrix():
    # rows = true class, columns = predicted class; class 3 never occurs and is left out.
    cm = torch.tensor([[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    out = miou_from_confusion(cm)
    iou0 = 5 / (6 + 7 - 5)  # inter / (row + column - inter)
    iou1 = 3 / (6 + 4 - 3)
    iou2 = 0 / (0 + 1 - 0)  # predicted once, never true
    assert out["miou"] == pytest.approx(100 * (iou0 + iou1 + iou2) / 3)
    assert out["valid_classes"] == [0, 1, 2]
    assert out["per_class"][3] is None
    assert out["per_class"][0] == pytest.approx(100 * iou0)


def test_ignore_index_pixels_are_ignored():
    label = torch.tensor([[0, 1, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 0]])
    cm = confusion_matrix(pred, label, num_classes=2)
    assert cm.sum() == 2
    assert miou_from_confusion(cm)["miou"] == pytest.approx(100.0)


def test_label_out_of_range_is_a_data_error():
    with pytest.raises(DataError, match="num_classes"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), num_classes=2)


def test_cityscapes_colours_map_to_train_ids():
    pal = cityscapes_palette()
    lab = torch.tensor(
        [[[128, 64, 128], [119, 11, 32], [81, 0, 81], [131, 62, 132], [40, 200, 250]]], dtype=torch.uint8
    )
    # road, bicycle, ground (void), JPEG-noisy road, a colour far from every class
    assert colour_to_ids(lab, pal).tolist() == [[0, 18, 255, 0, 255]]


class _RedChannelSegmenter(torch.nn.Module):
    """Class = floor(R * 4): one-hot logits, so predictions are exactly known."""

    def forward(self, x):
        idx = (x[:, 0] * 4).long().clamp(0, 3)
        return F.one_hot(idx, 4).permute(0, 3, 1, 2).float()


def test_torchscript_segmenter_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "seg.ts"
    torch.jit.save(torch.jit.script(_RedChannelSegmenter()), str(path))
    with pytest.raises(CheckpointError) as e:
        load_segmenter(path, "cpu")
    assert "eval.trust_torchscript: true" in str(e.value) and "\n" not in str(e.value)


def test_trusted_torchscript_segmenter_loads_predicts_and_scores_100(tmp_path):
    path = tmp_path / "seg.ts"
    torch.jit.save(torch.jit.script(_RedChannelSegmenter()), str(path))
    seg = load_segmenter(path, "cpu", trust_torchscript=True)
    assert seg.kind == "torchscript"
    label_small = torch.randint(0, 4, (2, 8, 8))
    images = torch.rand(2, 3, 8, 8)
    images[:, 0] = (label_small.float() + 0.5) / 4
    assert torch.equal(seg.predict(images), label_small)
    # labels at twice the image resolution: bilinear logits upsampling keeps every block's class
    labels = label_small.repeat_interleave(2, 1).repeat_interleave(2, 2)
    labels[0, 0, 0] = 255
    out = evaluate_miou(seg, [(images, labels)], num_classes=4)
    assert out["miou"] == pytest.approx(100.0)
    assert out["num_images"] == 2


def test_missing_and_foreign_segmenter_files(tmp_path):
    with pytest.raises(MissingFileError, match="gancompress train-segmenter"):
        load_segmenter(tmp_path / "nope.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="gancompress-segmenter.*DRN-D-105.*'base.0.0.weight' is missing"):
        load_segmenter(foreign)


def _write_aligned_folder(root, n=4, h=32, w=32):
    """n aligned label|photo images; 3 label colours, photo = label colour + noise."""
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]], dtype=np.uint8)
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(n):
        ids = np.zeros((h, w), dtype=np.int64)
        ids[:, w // 3 :] = 1
        ids[h // 2 :, 2 * w // 3 :] = 2
        label = colours[np.roll(ids, i * 3, axis=1)]
        photo = np.clip(label.astype(np.int16) + rng.integers(-20, 20, label.shape), 0, 255).astype(np.uint8)
        Image.fromarray(np.concatenate([label, photo], axis=1)).save(root / f"{i:03d}.png")
    return colours


def test_train_segmenter_checkpoint_round_trip(tmp_path):
    from gancompress.metrics.segmenter_train import read_aligned, train_segmenter

    torch.manual_seed(0)
    root = tmp_path / "train"
    colours = _write_aligned_folder(root)
    out = tmp_path / "seg" / "segmenter.pt"
    result = train_segmenter(root, out, palette="auto", size=32, epochs=1, batch_size=2, lr=1e-3, seed=0)
    assert result["steps"] == 2 and result["num_classes"] == 3
    assert np.isfinite(result["final_loss"]) and 0.0 <= result["pixel_acc"] <= 100.0
    assert out.is_file() and not list(out.parent.glob("*.tmp"))

    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "gancompress-segmenter" and ckpt["input_size"] == [32, 32]
    seg = load_segmenter(out, "cpu")
    assert sorted(map(tuple, seg.palette.colours.tolist())) == sorted(map(tuple, colours.tolist()))

    def batches():
        for p in sorted(root.glob("*.png")):
            label_rgb, photo = read_aligned(p)
            yield photo[None], seg.labels_from_colour(label_rgb)[None]

    out_m = evaluate_miou(seg, batches(), num_classes=3)
    assert 0.0 <= out_m["miou"] <= 100.0
    assert out_m["num_images"] == 4
