"""Generator files: recognising a file's layout and inferring the architecture settings it implies.

:func:`inspect_generator_file` reads a file (:func:`~gancompress.pretrained.files.read_weights_file`),
recognises its layout (:mod:`~gancompress.pretrained.layouts`), infers the settings its keys and
shapes determine (:class:`GeneratorFileInfo`) and checks every key and shape against the net they
describe; :func:`recipe_mismatches` names the recipe settings that differ from the file's.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..nets.resnet import MobileResnetGenerator, ResnetGenerator
from ..nets.unet import UnetGenerator
from .files import (
    file_sha256,
    first_misfit,
    need_key,
    norm_kind_at,
    patch_norm_buffers,
    read_weights_file,
    state_dict_of,
)
from .layouts import LAYOUT_WORDS, ours_to_file

# the format tag of gancompress.export.generator.save_generator (not imported: export depends on the
# recipe machinery, this module only on nets; tests check that the two agree)
GENERATOR_FORMAT = "gancompress-generator"


@dataclass(frozen=True)
class GeneratorFileInfo:
    """What a generator file is and which architecture settings its keys and shapes determine.

    Attributes:
        path: the file.
        sha256: hex digest of the file's bytes.
        layout: one of :data:`~gancompress.pretrained.layouts.LAYOUTS`.
        netG: 'unet', 'resnet' or 'mobile'; None for other families' nets.
        ngf: width of the outermost layer (for gancompress files, the width before pruning).
        num_downs: U-Net depth (7 for unet_128, 8 for unet_256); None otherwise.
        n_blocks: ResNet residual blocks; None otherwise.
        norm: 'batch', 'instance' or 'instance_affine'.
        dropout: whether the net was trained with dropout; None where the file cannot tell (the
            U-Net's dropout has no weights; a ResNet block's dropout layer has no rate).
        input_nc, output_nc: image channels in and out.
        family: the family recorded in a gancompress file; None otherwise.
        generator: the generator name recorded in a gancompress file ('G', 'AtoB', ...).
        pruned: the weights are narrower than a full net of width ``ngf`` (gancompress files).
        notes: what the loader changed (dropped or added buffers, a stripped prefix).
    """

    path: str
    sha256: str
    layout: str
    netG: str | None = None
    ngf: int | None = None
    num_downs: int | None = None
    n_blocks: int | None = None
    norm: str | None = None
    dropout: bool | None = None
    input_nc: int | None = None
    output_nc: int | None = None
    family: str | None = None
    generator: str | None = None
    pruned: bool = False
    notes: tuple[str, ...] = ()

    def settings(self) -> dict[str, object]:
        """The recipe ``model`` settings this file implies (only those it determines).

        Keys are recipe ``model`` keys (``ngf_teacher`` for the width); for gancompress files
        the dict also holds ``family``, meant for the recipe's top-level ``family`` key.
        """
        out: dict[str, object] = {}
        if self.family is not None:
            out["family"] = self.family
        values = {"netG": self.netG, "ngf_teacher": self.ngf, "num_downs": self.num_downs,
                  "n_blocks": self.n_blocks, "norm": self.norm, "dropout": self.dropout,
                  "input_nc": self.input_nc, "output_nc": self.output_nc}
        out.update({k: v for k, v in values.items() if v is not None})
        return out

    def summary(self) -> str:
        """One line for logs and ``--dry-run``, e.g. 'pytorch-CycleGAN-and-pix2pix U-Net (netG unet,
        ngf_teacher 64, num_downs 8, norm batch, dropout unknown, 3->3 channels)'."""
        s = self.settings()
        parts = [f"{k} {v}" for k, v in s.items() if k not in ("input_nc", "output_nc", "family")]
        if self.netG is not None and self.dropout is None:
            parts.append("dropout unknown")
        if self.input_nc is not None:
            parts.append(f"{self.input_nc}->{self.output_nc} channels")
        if self.pruned:
            parts.append("pruned")
        head = LAYOUT_WORDS[self.layout] + (f" of family {self.family}" if self.family else "")
        return f"{head} ({', '.join(parts)})" if parts else head


@dataclass
class _Parsed:
    info: GeneratorFileInfo
    state: dict[str, torch.Tensor]  # the file's tensors in the file's naming, norm buffers patched
    dropout_slot: bool | None = None  # ResNet files: whether blocks hold a dropout layer


def parse_generator_file(path: Path) -> _Parsed:
    obj = read_weights_file(path)
    digest = file_sha256(path)
    if isinstance(obj, dict) and obj.get("format") == GENERATOR_FORMAT:
        return _parse_gancompress(obj, path, digest)
    state, notes = state_dict_of(obj, path)
    keys = list(state)
    if any(k.startswith("model.model.") for k in keys):
        return _parse_unet(state, path, digest, "cyclegan-unet", notes)
    if any(k.startswith("downs.") for k in keys):
        return _parse_unet(state, path, digest, "ours-state-dict", notes)
    if any(".conv_block." in k for k in keys):
        return _parse_resnet(state, path, digest, notes)
    return _Parsed(GeneratorFileInfo(str(path), digest, "ours-state-dict", notes=notes), state)


def _check_norm(norm: str, path: Path) -> None:
    if norm == "none":
        raise CheckpointError(f"{path}: the generator has no norm layers and convs without bias (pix2pix's "
                              "--norm none), which no gancompress family builds; use a model trained with "
                              "--norm batch or --norm instance")


def _parse_unet(state: dict, path: Path, digest: str, layout: str, notes: tuple) -> _Parsed:
    theirs = layout == "cyclegan-unet"
    what = LAYOUT_WORDS[layout] if theirs else "gancompress U-Net"
    if theirs:
        levels = [k.split(".").count("model") - 2 for k in state if k.startswith("model.model.")]
        n = max(levels) + 1
        first, last = "model.model.0", "model.model.3"
        norm_at, conv_at = "model.model.1.model.2", "model.model.1.model.1"
    else:
        n = len({k.split(".")[1] for k in state if k.startswith("downs.")})
        first, last = "downs.0.0", f"ups.{n - 1}.1"
        norm_at, conv_at = "downs.1.2", "downs.1.1"
    w_in = need_key(state, f"{first}.weight", path, what)
    w_out = need_key(state, f"{last}.weight", path, what)
    norm = norm_kind_at(state, norm_at, conv_at)
    _check_norm(norm, path)
    if n < 5:
        raise CheckpointError(f"{path}: the U-Net has {n} downsamplings; gancompress's U-Net needs at least 5 "
                              "(model.num_downs >= 5)")
    info = GeneratorFileInfo(str(path), digest, layout, netG="unet", ngf=int(w_in.shape[0]), num_downs=n,
                             norm=norm, dropout=None, input_nc=int(w_in.shape[1]), output_nc=int(w_out.shape[1]),
                             notes=notes)
    return _finish(_Parsed(info, state), path)


def _parse_resnet(state: dict, path: Path, digest: str, notes: tuple) -> _Parsed:
    mobile = any(".conv_block.1.conv.0." in k for k in state)
    layout = "ours-state-dict" if mobile else "cyclegan-resnet"
    what = "gancompress mobile ResNet" if mobile else LAYOUT_WORDS[layout]
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("model.") and ".conv_block." in k})
    n_blocks = len(blocks)
    # a dropout layer moves a block's second conv from index 5 to 6 (index 6 is otherwise its norm)
    slot = any((k.endswith(".conv_block.6.weight") and v.dim() == 4) or ".conv_block.6.conv." in k
               for k, v in state.items())
    w_in = need_key(state, "model.1.weight", path, what)
    w_out = need_key(state, f"model.{n_blocks + 17}.weight", path, f"{what} with {n_blocks} blocks")
    norm = norm_kind_at(state, "model.2", "model.1")
    _check_norm(norm, path)
    info = GeneratorFileInfo(str(path), digest, layout, netG="mobile" if mobile else "resnet",
                             ngf=int(w_in.shape[0]), n_blocks=n_blocks, norm=norm, dropout=None if slot else False,
                             input_nc=int(w_in.shape[1]), output_nc=int(w_out.shape[0]), notes=notes)
    if slot:
        info = replace(info, notes=info.notes + ("its residual blocks hold a dropout layer of unknown rate "
                                                 "(0.5 in pix2pix's code, 0 by default in GAN Compression's)",))
    return _finish(_Parsed(info, state, dropout_slot=slot), path)


def _parse_gancompress(obj: dict, path: Path, digest: str) -> _Parsed:
    missing = [k for k in ("family", "generator", "ngf", "recipe", "state_dict") if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: gancompress generator file without '{missing[0]}'; write it again with "
                              "gancompress export")
    model = dict(obj["recipe"].get("model", {})) if isinstance(obj["recipe"], dict) else {}
    state = obj["state_dict"]
    netG = model.get("netG") if obj["family"] in ("pix2pix", "cyclegan") else None
    info = GeneratorFileInfo(
        str(path), digest, "gancompress", netG=netG, ngf=int(obj["ngf"]),
        num_downs=model.get("num_downs") if netG == "unet" else None,
        n_blocks=model.get("n_blocks") if netG in ("resnet", "mobile") else None,
        norm=model.get("norm") if netG else None, dropout=model.get("dropout") if netG else None,
        input_nc=model.get("input_nc") if netG else None, output_nc=model.get("output_nc") if netG else None,
        family=str(obj["family"]), generator=str(obj["generator"]))
    parsed = _Parsed(info, dict(state), dropout_slot=bool(info.dropout) if netG in ("resnet", "mobile") else None)
    if netG is not None and None not in (info.norm, info.input_nc, info.output_nc, info.num_downs or info.n_blocks):
        if obj["generator"] == "BtoA":  # cyclegan's BtoA reads domain B: channels swap
            parsed.info = replace(info, input_nc=info.output_nc, output_nc=info.input_nc)
        full = {k: tuple(v.shape) for k, v in _canonical(parsed.info).state_dict().items()}
        parsed.info = replace(parsed.info, pruned=any(
            tuple(v.shape) != full[k] for k, v in state.items() if k in full))
    return parsed


def _canonical(info: GeneratorFileInfo) -> nn.Module:
    """Our net with the file's inferred settings, on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        if info.netG == "unet":
            return UnetGenerator(info.input_nc, info.output_nc, info.num_downs, info.ngf, info.norm, False)
        cls = MobileResnetGenerator if info.netG == "mobile" else ResnetGenerator
        return cls(info.input_nc, info.output_nc, info.ngf, info.n_blocks, info.norm, info.dropout is not False)


def _finish(parsed: _Parsed, path: Path) -> _Parsed:
    """Patch norm buffers and check every key and shape against the net the file implies."""
    info = parsed.info
    reference = _canonical(info)
    to_file = ours_to_file(info.layout, reference, parsed.dropout_slot)
    expected = {to_file[k]: (k, tuple(v.shape)) for k, v in reference.state_dict().items()}
    parsed.state, notes = patch_norm_buffers(parsed.state, info.norm, expected)
    parsed.info = replace(info, notes=info.notes + notes)
    misfit = first_misfit(parsed.state, expected)
    if misfit:
        raise CheckpointError(f"{path}: {misfit}, though its other keys make it a {parsed.info.summary()}; "
                              "the file is damaged or holds another architecture")
    return parsed


def inspect_generator_file(path: str | Path) -> GeneratorFileInfo:
    """Read a generator file without running code; recognise its layout and infer its settings.

    Every key and shape is checked against the net the inferred settings describe (for the
    U-Net, ResNet and mobile ResNet; other families' state dicts are only checked when loaded).

    Raises:
        MissingFileError, CheckpointError: one line naming the file, and for a file that does not
            fit, the first key that does not fit.
    """
    return parse_generator_file(Path(path)).info


def implied_settings(path_or_info: str | Path | GeneratorFileInfo) -> dict[str, object]:
    """The recipe ``model`` settings a generator file implies: see :meth:`GeneratorFileInfo.settings`."""
    info = path_or_info if isinstance(path_or_info, GeneratorFileInfo) else inspect_generator_file(path_or_info)
    return info.settings()


def recipe_mismatches(info: GeneratorFileInfo, model_cfg: object, *, family: str | None = None,
                      name: str | None = None, ngf: int | None = None,
                      ngf_key: str = "ngf_teacher") -> dict[str, tuple[object, object]]:
    """Recipe settings that differ from what the file implies.

    Args:
        info: from :func:`inspect_generator_file`.
        model_cfg: the recipe's ``model`` section (a dataclass or a mapping).
        family: the recipe's family name; compared with a gancompress file's family, and
            'cyclegan' with ``name`` 'BtoA' swaps the channel keys (BtoA maps B to A).
        name: the generator the file is for ('G', 'AtoB', 'BtoA', ...).
        ngf: the width the generator is built with; by default the recipe's ``ngf_key``.
        ngf_key: the ``model`` key the file's width is compared with.

    Returns:
        recipe key (dotted, e.g. 'model.ngf_teacher') -> (value the file implies, recipe value);
        empty when they agree. Keys the recipe's model section lacks are skipped.
    """
    def get(key):
        return model_cfg.get(key, _MISSING) if isinstance(model_cfg, dict) else getattr(model_cfg, key, _MISSING)

    implied = info.settings()
    out: dict[str, tuple[object, object]] = {}
    if "family" in implied and family is not None and implied["family"] != family:
        out["family"] = (implied["family"], family)
    swap = family == "cyclegan" and name == "BtoA"
    for key, value in implied.items():
        if key == "family":
            continue
        recipe_key = {"ngf_teacher": ngf_key}.get(key, key)
        if swap and key in ("input_nc", "output_nc"):
            recipe_key = "output_nc" if key == "input_nc" else "input_nc"
        current = ngf if key == "ngf_teacher" and ngf is not None else get(recipe_key)
        if current is not _MISSING and current != value:
            out[f"model.{recipe_key}"] = (value, current)
    return out


_MISSING = object()
