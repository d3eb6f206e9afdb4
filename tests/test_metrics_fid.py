"""FID / KID through torch-fidelity's code, with tiny extractors instead of the Inception weights."""

import hashlib
import io
import os

import pytest
import torch

from gancompress.errors import CheckpointError, MissingFileError
from gancompress.metrics import extractors as fid_module
from gancompress.metrics.extractors import INCEPTION_FILENAME, InceptionExtractor, TorchScriptExtractor
from gancompress.metrics.feature_cache import cached_real_features, compute_features, file_list_digest
from gancompress.metrics.fid import fid_from_features, kid_from_features


def test_fid_zero_on_itself_and_grows_with_mean_shift():
    torch.manual_seed(0)
    f = torch.randn(300, 4, dtype=torch.float64)
    assert abs(fid_from_features(f, f)) < 1e-6
    previous = 0.0
    for s in (0.25, 0.5, 1.0, 2.0):
        fid = fid_from_features(f, f + s)
        # equal covariances: FID is the squared mean distance, 4 dims * s**2
        assert fid == pytest.approx(4 * s**2, rel=1e-6)
        assert fid > previous
        previous = fid


def test_kid_near_zero_for_same_distribution_and_grows_with_shift():
    torch.manual_seed(0)
    f1, f2 = torch.randn(200, 8), torch.randn(200, 8)
    same, _ = kid_from_features(f1, f2, subsets=10, subset_size=100)
    kids = [kid_from_features(f1, f2 + s, subsets=10, subset_size=100)[0] for s in (0.5, 1.0, 2.0)]
    # the unbiased MMD^2 estimate is noisy (about 0.1 here) but centred on 0 for equal distributions
    assert abs(same) < 0.25
    assert kids[0] > 0.5
    assert kids[0] < kids[1] < kids[2]
    # a subset larger than the sets is lowered to their size instead of failing
    mean, std = kid_from_features(f1[:20], f2[:20], subsets=3, subset_size=1000)
    assert mean == mean and std >= 0


class _TinyExtractor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_torchscript_extractor_features_and_cache(tmp_path):
    path = tmp_path / "feat.ts"
    torch.jit.save(torch.jit.script(_TinyExtractor().eval()), str(path))
    ext = TorchScriptExtractor(path, "cpu", trusted=True)
    torch.manual_seed(1)
    real = [torch.rand(8, 3, 16, 16) for _ in range(3)]
    feats = compute_features(iter(real), ext)
    assert feats.shape == (24, 6)
    assert torch.allclose(compute_features([(real[0] * 255).round().to(torch.uint8)], ext), feats[:8], atol=1e-2)

    calls = []

    def images():
        calls.append(1)
        return iter(real)

    a = cached_real_features(tmp_path / "cache", "toy/real", images, ext)
    b = cached_real_features(tmp_path / "cache", "toy/real", images, ext)
    assert len(calls) == 1 and torch.equal(a, b) and torch.equal(a, feats)
    (cache_file,) = (tmp_path / "cache").glob("*.pt")
    assert torch.load(cache_file, weights_only=True)["extractor"] == ext.id

    darker = compute_features((x * 0.5 for x in real), ext)
    assert fid_from_features(feats, feats) < 1e-6 < fid_from_features(feats, darker)


def test_missing_inception_weights_names_file_and_url(tmp_path):
    with pytest.raises(MissingFileError) as e:
        InceptionExtractor(tmp_path / INCEPTION_FILENAME)
    assert INCEPTION_FILENAME in str(e.value) and "https://" in str(e.value)
    with pytest.raises(MissingFileError, match=INCEPTION_FILENAME):
        InceptionExtractor(tmp_path)  # a folder without the file


def test_inception_weights_with_wrong_hash_are_refused(tmp_path):
    bad = tmp_path / INCEPTION_FILENAME
    bad.write_bytes(b"not the inception weights")
    with pytest.raises(CheckpointError, match="SHA-256"):
        InceptionExtractor(bad)


def test_torchscript_extractor_needs_the_recipe_to_trust_it(tmp_path):
    path = tmp_path / "feat.ts"
    torch.jit.save(torch.jit.script(_TinyExtractor().eval()), str(path))
    with pytest.raises(CheckpointError) as e:
        TorchScriptExtractor(path, "cpu")
    assert "eval.trust_torchscript: true" in str(e.value) and "\n" not in str(e.value)


def test_file_list_digest_follows_the_files_and_the_transform(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(3)]
    for f in files:
        f.write_bytes(b"x")
    base = file_list_digest(files, "resize 32")
    assert file_list_digest(list(reversed(files)), "resize 32") == base  # the sorted list names the set
    assert file_list_digest(files, "resize 64") != base
    assert file_list_digest(files[:2], "resize 32") != base
    st = files[1].stat()
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_list_digest(files, "resize 32") != base


def _tampered_inception(tmp_path, monkeypatch, payload) -> str:
    """A weights file with the expected hash prefix (patched to its own) holding ``payload``."""
    path = tmp_path / INCEPTION_FILENAME
    torch.save(payload, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(fid_module, "INCEPTION_SHA256_PREFIX", digest[:8])
    return digest


def test_inception_file_that_would_run_code_is_refused_with_the_blocked_global(tmp_path, monkeypatch):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    _tampered_inception(tmp_path, monkeypatch, {"fc.weight": Payload()})
    with pytest.raises(CheckpointError) as e:
        InceptionExtractor(tmp_path / INCEPTION_FILENAME)
    message = str(e.value)
    assert "GLOBAL os.makedirs" in message, message
    assert "\n" not in message and not marker.exists()


def test_torch_fidelity_gets_the_bytes_that_were_verified(tmp_path, monkeypatch):
    state = {"w": torch.arange(4.0)}
    digest = _tampered_inception(tmp_path, monkeypatch, state)
    received = {}

    class FakeInception(torch.nn.Module):
        def __init__(self, name, features, feature_extractor_weights_path=None):
            super().__init__()
            received["source"] = feature_extractor_weights_path

    import torch_fidelity.feature_extractor_inceptionv3 as tfi
    monkeypatch.setattr(tfi, "FeatureExtractorInceptionV3", FakeInception)
    ext = InceptionExtractor(tmp_path / INCEPTION_FILENAME)
    source = received["source"]
    assert isinstance(source, io.BytesIO)  # not the path: the file is not read a second time
    assert hashlib.sha256(source.getvalue()).hexdigest() == digest
    assert ext.id.endswith(digest[:16]) and ext.describe()["sha256"] == digest[:12]
