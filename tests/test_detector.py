"""Real-vs-generated classifiers, the classifier-guided loss and tools/train_detector.py (METHOD 6)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gancompress.errors import CheckpointError, MissingFileError
from gancompress.method.classifier import (
    RealFakeClassifier,
    classifier_guidance,
    fool_loss,
    load_classifier,
    save_classifier,
    train_classifier,
)

ROOT = Path(__file__).resolve().parents[1]


def _smooth(n: int, gen: torch.Generator) -> torch.Tensor:
    """'Real' images: smooth colour fields (bilinear upsampling of 4x4 noise), (n, 3, 32, 32)."""
    coarse = torch.randn(n, 3, 4, 4, generator=gen)
    return 0.8 * torch.tanh(2 * F.interpolate(coarse, size=32, mode="bilinear", align_corners=False))


def _noise(n: int, gen: torch.Generator) -> torch.Tensor:
    """'Generated' images: uniform pixel noise in [-1, 1], (n, 3, 32, 32)."""
    return torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1


@pytest.fixture(scope="module")
def trained():
    gen = torch.Generator().manual_seed(0)
    train = [(_smooth(16, gen), _noise(16, gen)) for _ in range(12)]
    held = [(_smooth(16, gen), _noise(16, gen)) for _ in range(4)]
    return train_classifier(train, held, epochs=2, lr=1e-3, width=8, n_blocks=3)


def test_classifier_learns_the_toy_split(trained):
    assert trained.accuracy > 0.9
    assert trained.eval_images == 128 and trained.train_images == 384
    model = trained.model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    gen = torch.Generator().manual_seed(7)
    assert model(_smooth(5, gen)).shape == (5,)


def test_training_uses_balanced_batches_and_rejects_one_shot_iterables():
    gen = torch.Generator().manual_seed(1)
    unbalanced = [(_smooth(10, gen), _noise(4, gen))]
    result = train_classifier(unbalanced, unbalanced, epochs=1, width=4, n_blocks=1)
    assert result.train_images == 8 and result.eval_images == 8
    one_shot = ((_smooth(2, gen), _noise(2, gen)) for _ in range(2))
    with pytest.raises(ValueError, match="epoch 2 had no training batches"):
        train_classifier(one_shot, unbalanced, epochs=2, width=4, n_blocks=1)


def test_guidance_makes_a_toy_generator_fool_the_frozen_classifier(trained):
    classifier = copy.deepcopy(trained.model).requires_grad_(True)  # guidance must not rely on freezing
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(8, 3 * 32 * 32), nn.Unflatten(1, (3, 32, 32)), nn.Tanh())
    z = torch.randn(16, 8)
    opt = torch.optim.Adam(generator.parameters(), lr=1e-2)

    def p_real() -> float:
        with torch.no_grad():
            return torch.sigmoid(classifier(generator(z))).mean().item()

    start = p_real()
    for _ in range(10):
        loss = classifier_guidance([classifier], generator(z), "fool-all")
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in classifier.parameters())
        assert all(p.grad is not None for p in generator.parameters())
        opt.step()
    assert start < 0.5 < p_real()
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())


def test_memoryless_uses_only_the_last_classifier(trained):
    torch.manual_seed(3)
    older, latest = RealFakeClassifier(width=4, n_blocks=2), trained.model
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        first, last = fool_loss(older(images)), fool_loss(latest(images))
        assert torch.allclose(classifier_guidance([older, latest], images, "memoryless"), last)
        assert torch.allclose(classifier_guidance([older, latest], images, "fool-all"), first + last)
    assert torch.allclose(fool_loss(torch.tensor([0.0, 2.0])),
                          F.binary_cross_entropy_with_logits(torch.tensor([0.0, 2.0]), torch.ones(2)))
    with pytest.raises(ValueError, match="valid: fool-all, memoryless"):
        classifier_guidance([latest], images, "newest")
    with pytest.raises(ValueError, match="at least one"):
        classifier_guidance([], images)


def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "detectors" / "teacher_G.pt"
    meta = {"family": "toy", "accuracy": trained.accuracy, "splits": ["train", "val"]}
    save_classifier(path, trained.model, meta)
    loaded, loaded_meta = load_classifier(path)
    assert loaded_meta == meta and loaded.config == trained.model.config
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(images), trained.model(images))
    with pytest.raises(TypeError, match=r"meta\.where: PosixPath"):
        save_classifier(tmp_path / "x.pt", trained.model, {"where": tmp_path})


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(MissingFileError, match="nope.pt.*gancompress train-detector"):
        load_classifier(missing)
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else", "state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a gancompress classifier"):
        load_classifier(foreign)


# --- gancompress train-detector ----------------------------------------------------------------

def _detect(*argv: str) -> int:
    from gancompress.cli import main
    return main(["train-detector", *argv])


@pytest.fixture
def run_dir(tmp_path, tiny_recipe):
    """A run folder holding the tiny pix2pix recipe and an (untrained) teacher generator."""
    from gancompress.config.sections import dump_recipe
    from gancompress.export.generator import save_generator
    from gancompress.families import get_family

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(dump_recipe(tiny_recipe))
    family = get_family(tiny_recipe.family)(tiny_recipe)
    torch.manual_seed(0)
    save_generator(run / "teacher" / "generator_G.pt", family.build_generator("G", 8), tiny_recipe, "G", 8)
    return run


def test_tool_trains_and_saves_a_loadable_classifier(run_dir, capsys):
    assert _detect(str(run_dir), "--epochs", "2", "--batch-size", "4", "--device", "cpu") == 0
    out = run_dir / "detectors" / "teacher_G.pt"
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(f"{out}: held-out accuracy ")
    model, meta = load_classifier(out)
    assert meta["family"] == "pix2pix" and meta["role"] == "teacher" and meta["generator"] == "G"
    assert meta["eval_images"] == 8  # the 4 validation items, as real and as generated
    assert f"{meta['accuracy']:.4f}" in printed[0]
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2,)


def test_tool_user_errors_are_one_line_and_exit_2(run_dir, tmp_path, capsys):
    assert _detect(str(tmp_path / "absent")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gancompress: error: {tmp_path / 'absent'}: run folder not found "
                   "(pass a folder made by gancompress compress)"]
    assert _detect(str(run_dir), "--role", "student") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gancompress: error: ")
    assert str(run_dir / "student" / "generator_G.pt") in err[0]


def test_loading_a_classifier_leaves_the_global_rng_alone(tmp_path):
    path = save_classifier(tmp_path / "c.pt", RealFakeClassifier(3, width=4), {})
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_classifier(path)
    assert torch.equal(torch.rand(3), expected)
