"""Portable export: a pruned student rebuilt by the shipped loader script with torch alone."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from gancompress.errors import GanCompressError
from gancompress.export.portable import LOADER_SOURCE, export_state_dict, load_loader_module
from gancompress.method.pruning import apply_plan, score_groups
from gancompress.nets.resnet import MobileResnetGenerator, ResnetGenerator
from gancompress.nets.sagan import SAGANGenerator
from gancompress.nets.unet import UnetGenerator

IMPORTABLE = {"__future__", "hashlib", "json", "sys", "pathlib", "torch"}


def shapes(net: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("norm", ["batch", "instance", "instance_affine"])
@pytest.mark.parametrize("dropout", [False, True])
def test_loader_classes_mirror_ours(norm, dropout):
    """The loader's copies of our generators have the same keys, shapes and module types."""
    loader = load_loader_module(LOADER_SOURCE)
    pairs = [(UnetGenerator(2, 3, 6, 4, norm, dropout), loader.UnetGenerator(2, 3, 6, 4, norm, dropout)),
             (ResnetGenerator(2, 3, 4, 3, norm, dropout), loader.ResnetGenerator(2, 3, 4, 3, norm, dropout)),
             (MobileResnetGenerator(2, 3, 4, 3, norm, dropout), loader.MobileResnetGenerator(2, 3, 4, 3, norm, dropout))]
    for ours, theirs in pairs:
        assert shapes(ours) == shapes(theirs)
        assert [(n, type(m).__name__) for n, m in ours.named_modules()] == \
            [(n, type(m).__name__) for n, m in theirs.named_modules()]


def pruned(net: nn.Module, size: int, seed: int) -> nn.Module:
    """``net`` with 1 to 3 of the lowest-scored channels of each prunable group removed
    (torch-pruning, through gancompress's pruning plan), so that widths are uneven."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():  # uneven norm scales and running statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5)
            if getattr(m, "weight", None) is not None and isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                m.weight.uniform_(0.1, 1.0)
    x = torch.zeros(1, 3, size, size)
    groups = score_groups(net.eval(), x, "slimming")
    plan = {gi: torch.argsort(g.scores)[: min(g.width - 1, 1 + gi % 3)].tolist() for gi, g in enumerate(groups)}
    return apply_plan(net, x, groups, plan).eval()


# run with -S -I: no site-packages but torch's, no PYTHONPATH, no user site, no current folder;
# gancompress is also blocked explicitly, so an import of it anywhere fails
CHILD = textwrap.dedent("""
    import sys
    sys.path.append(sys.argv[1])
    sys.modules["gancompress"] = None
    try:
        import gancompress
    except ImportError:
        pass
    else:
        sys.exit("gancompress is importable")
    import torch
    sys.path.insert(0, sys.argv[2])
    from portable_loader import load
    for stem in sys.argv[3:]:
        net = load(stem + ".json")
        x, y = torch.load(stem + ".io", weights_only=True)
        with torch.no_grad():
            diff = (net(x) - y).abs().max().item()
        print(stem, diff)
        assert diff < 1e-6, diff
    assert not any(name.startswith("gancompress") for name in sys.modules if sys.modules[name] is not None)
""")


@pytest.mark.slow
def test_pruned_students_load_without_gancompress(tmp_path):
    nets = {
        "unet": (pruned(UnetGenerator(3, 3, 5, 8, "batch", True), 32, 0), "pix2pix", "G"),
        "resnet": (pruned(ResnetGenerator(3, 3, 8, 2, "instance_affine"), 32, 1), "cyclegan", "AtoB"),
        "mobile": (pruned(MobileResnetGenerator(3, 3, 8, 2, "batch", True), 32, 2), "cyclegan", "BtoA"),
    }
    out = tmp_path / "export"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    for stem, (net, fam, name) in nets.items():
        widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert len(set(widths)) > 3  # pruning left uneven widths
        result = export_state_dict(net, out / f"{stem}.pth", family=fam, name=name, ngf=8, example=x)
        assert result["max_abs_diff"] < 1e-6
        with torch.no_grad():
            torch.save((x, net(x)), out / f"{stem}.io")
        assert all(isinstance(v, torch.Tensor) for v in torch.load(out / f"{stem}.pth", weights_only=True).values())
        record = json.loads((out / f"{stem}.json").read_text())
        assert (record["family"], record["generator"], record["class"]) == (fam, name, type(net).__name__)
        assert record["args"]["ngf"] == 8
    imports = [line for line in (out / "portable_loader.py").read_text().splitlines()
               if line.startswith(("import ", "from "))]
    assert imports and all(line.split()[1].split(".")[0] in IMPORTABLE for line in imports), imports

    torch_site = str(Path(torch.__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "-S", "-I", "-c", CHILD, torch_site, str(out),
                           *(str(out / stem) for stem in nets)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.splitlines()) == 3


def test_loader_refuses_changed_weights_and_uncovered_nets(tmp_path):
    net = UnetGenerator(3, 3, 5, 4).eval()
    export_state_dict(net, tmp_path / "g.pth", family="pix2pix", name="G")
    loader = load_loader_module(tmp_path / "portable_loader.py")
    torch.save({k: v + 1 for k, v in net.state_dict().items()}, tmp_path / "g.pth")
    with pytest.raises(ValueError, match="sha256"):
        loader.load(tmp_path / "g.json")
    with pytest.raises(GanCompressError, match="SAGANGenerator.*TorchScript or ONNX"):
        export_state_dict(SAGANGenerator(z_dim=8, ngf=4), tmp_path / "s.pth", family="sagan", name="G")


def test_export_command_writes_the_portable_files(tmp_path, tiny_recipe, capsys):
    from gancompress.cli import main
    from gancompress.export.generator import save_generator
    from gancompress.families import get_family

    family = get_family("pix2pix")(tiny_recipe)
    torch.manual_seed(0)
    path = save_generator(tmp_path / "generator_G.pt", family.build_generator("G", 8), tiny_recipe, "G", 8)
    out = tmp_path / "ship" / "g.pth"
    assert main(["export", str(path), "--state-dict", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file() and (out.parent / "portable_loader.py").is_file()
    assert "reloaded without gancompress" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["family"] == "pix2pix" and record["generator"] == "G"
    assert main(["export", str(path)]) == 2  # nothing asked for: one line saying what to pass
    assert "--state-dict" in capsys.readouterr().err
