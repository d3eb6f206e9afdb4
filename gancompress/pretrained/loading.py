"""Loading a pretrained file into a family's generator or discriminator, and checking every file a
recipe names before a run.

The file's keys are mapped onto the net the family builds (on the meta device: shapes only) and
every key and shape is checked, so ``net.load_state_dict(state)`` (strict) succeeds; where a file
does not fit, the message names the first key that does not and the recipe settings that would
have to change.

Note that pix2pix's ``test.py`` runs the generator in train mode unless ``--eval`` is given
(batch statistics, dropout on); our evaluation runs it in eval mode (running statistics).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, RecipeError
from ..nets.patchgan import PatchDiscriminator
from .discriminator_files import DiscriminatorFileInfo, d_expected, parse_discriminator_file
from .files import first_misfit, patch_norm_buffers
from .generator_files import GeneratorFileInfo, parse_generator_file, recipe_mismatches
from .layouts import ours_to_file


def load_pretrained_generator(path: str | Path, family, name: str, ngf: int, *,
                              ngf_key: str = "ngf_teacher") -> tuple[dict[str, torch.Tensor], GeneratorFileInfo]:
    """The state dict, in our keys, that loads a generator file into ``family``'s generator ``name``.

    The family's net is built (on the meta device: shapes only) with ``family.build_generator(name,
    ngf)`` and every key and shape of the mapped file is checked against it, so
    ``net.load_state_dict(state)`` (strict) succeeds on a net built the same way.

    Args:
        path: a gancompress generator file, a state dict of one of our nets, or a
            pytorch-CycleGAN-and-pix2pix ``unet_*`` / ``resnet_*`` generator state dict.
        family: a family instance (``gancompress.families``); its ``cfg`` is the recipe's model
            section.
        name: the generator to load ('G'; cyclegan 'AtoB' for pix2pix's G_A, 'BtoA' for G_B).
        ngf: the width the family builds it with (``model.ngf_teacher`` for a teacher).
        ngf_key: the recipe key ``ngf`` comes from, for messages.

    Returns:
        (state dict with our keys, on the CPU; file info).

    Raises:
        CheckpointError: one line naming the file, the first key that does not fit, and the recipe
            settings that would have to change (with the values the file implies).
    """
    path = Path(path)
    parsed = parse_generator_file(path)
    info = parsed.info
    family_name = getattr(family, "name", None)
    if info.layout == "gancompress" and family_name is not None and info.family != family_name:
        raise CheckpointError(f"{path}: a generator of family {info.family}, but the recipe's family is "
                              f"{family_name}; set family: {info.family} or use a {family_name} generator")
    with torch.device("meta"):
        target = family.build_generator(name, ngf)
    to_file = ours_to_file(info.layout, target, parsed.dropout_slot)
    expected = {to_file[k]: (k, tuple(v.shape)) for k, v in target.state_dict().items()}
    state, notes = parsed.state, ()
    if info.layout == "gancompress" or (info.layout == "ours-state-dict" and info.netG is None):
        # our own nets: BatchNorm counters may be absent in hand-made state dicts, nothing else
        state, notes = patch_norm_buffers(state, "batch", expected)
    misfit = first_misfit(state, expected)
    if misfit:
        raise CheckpointError(_recipe_message(path, misfit, info, family, name, ngf, ngf_key))
    if notes:
        info = replace(info, notes=info.notes + notes)
    file_to_ours = {f: k for f, (k, _) in expected.items()}
    return {file_to_ours[k]: v for k, v in state.items()}, info


def build_pretrained_generator(path: str | Path, family, name: str, ngf: int, *,
                               ngf_key: str = "ngf_teacher") -> tuple[nn.Module, GeneratorFileInfo]:
    """``family.build_generator(name, ngf)`` with the file's weights loaded (strict), in eval mode.

    See :func:`load_pretrained_generator` for the arguments and errors.
    """
    state, info = load_pretrained_generator(path, family, name, ngf, ngf_key=ngf_key)
    net = family.build_generator(name, ngf)
    net.load_state_dict(state)
    return net.eval(), info


def _recipe_message(path: Path, misfit: str, info: GeneratorFileInfo, family, name: str, ngf: int,
                    ngf_key: str) -> str:
    diffs = recipe_mismatches(info, getattr(family, "cfg", {}), family=getattr(family, "name", None),
                              name=name, ngf=ngf, ngf_key=ngf_key)
    diffs.pop("model.dropout", None)  # files load whatever it says (see gancompress.pretrained.layouts)
    head = f"{path}: {misfit} in the recipe's generator {name!r}; the file is a {info.summary()}"
    if diffs:
        changes = ", ".join(f"{k}: {_yaml(v)} (now {_yaml(r)})" for k, (v, r) in diffs.items())
        return f"{head}; to load it set {changes}"
    if info.netG is None and info.layout == "ours-state-dict":
        return (f"{head}; its settings cannot be read from its keys: compare its shapes with the recipe's "
                "model.* settings (ngf, widths, blocks)")
    if info.pruned:
        return f"{head}; it holds pruned weights, which a full-width generator of {ngf_key} {info.ngf} cannot take"
    return f"{head}; no model.* setting explains the difference"


def _yaml(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def load_pretrained_discriminator(path: str | Path, family, name: str
                                  ) -> tuple[dict[str, torch.Tensor], DiscriminatorFileInfo]:
    """The state dict, in our keys, that loads a discriminator file into ``family.build_discriminator(name)``.

    pix2pix's ``latest_net_D.pth`` is pix2pix's 'G' discriminator; CycleGAN's D_A judges domain B,
    so ``latest_net_D_A.pth`` is our 'AtoB' discriminator and ``latest_net_D_B.pth`` our 'BtoA'.

    Raises:
        CheckpointError: one line naming the first key that does not fit and the recipe settings
            (``model.ndf``, ``model.n_layers_D``, ``model.norm``, channels) that differ from the file's.
    """
    path = Path(path)
    info, state = parse_discriminator_file(path)
    with torch.device("meta"):
        target = family.build_discriminator(name)
    expected = d_expected(info.layout, target)
    misfit = first_misfit(state, expected)
    if misfit:
        head = f"{path}: {misfit} in the recipe's discriminator {name!r}; the file is a {info.summary()}"
        diffs = _d_mismatches(info, target, family)
        tail = ("; to load it set " + ", ".join(f"{k}: {_yaml(v)} (now {_yaml(r)})" for k, (v, r) in diffs.items())
                if diffs else "; no model.* setting explains the difference")
        raise CheckpointError(head + tail)
    file_to_ours = {f: k for f, (k, _) in expected.items()}
    return {file_to_ours[k]: v for k, v in state.items()}, info


def _d_mismatches(info: DiscriminatorFileInfo, target: nn.Module, family) -> dict[str, tuple[object, object]]:
    if info.ndf is None or not isinstance(target, PatchDiscriminator):
        return {}
    first = target.blocks[0][0]
    norm = "batch" if isinstance(target.blocks[1][1], nn.BatchNorm2d) else "instance"
    out: dict[str, tuple[object, object]] = {}
    if info.ndf != first.out_channels:
        out["model.ndf"] = (info.ndf, first.out_channels)
    if info.n_layers != len(target.blocks) - 1:
        out["model.n_layers_D"] = (info.n_layers, len(target.blocks) - 1)
    if info.norm != norm:
        if getattr(family, "name", None) == "cyclegan":  # its D norm is no recipe setting
            out["the discriminator norm (the cyclegan family always builds instance)"] = (info.norm, norm)
        else:
            out["model.norm"] = (info.norm, getattr(getattr(family, "cfg", None), "norm", norm))
    if info.input_nc != first.in_channels:
        out["input channels (model.input_nc, model.output_nc)"] = (info.input_nc, first.in_channels)
    return out


def check_pretrained(family, generators: dict[str, str | Path], discriminators: dict[str, str | Path] | None = None,
                     *, ngf: int, ngf_key: str = "ngf_teacher", section: str = "pretrained") -> list[str]:
    """Check every pretrained file a recipe names against its family; one line per file.

    Meant to run before any training (and for ``--dry-run``): every file is read and each key and
    shape checked against the net the recipe builds.

    Args:
        family: the family instance.
        generators: generator name -> file (``<section>.generators``).
        discriminators: discriminator name -> file (``<section>.discriminators``).
        ngf: the width the generators are built with; ``ngf_key`` names it in messages.
        section: the recipe section, for messages.

    Returns:
        Lines such as "pretrained.generators.G: latest_net_G.pth: pytorch-CycleGAN-and-pix2pix
        U-Net (...), sha256 0123abcd4567"; train-time-only differences (dropout) are named.

    Raises:
        RecipeError: a name the family does not have.
        MissingFileError, CheckpointError: a file that is missing or does not fit (one line).
    """
    valid = tuple(family.generator_names)
    lines = []
    for kind, files in (("generators", generators), ("discriminators", discriminators or {})):
        for name, path in files.items():
            if name not in valid:
                raise RecipeError(f"{section}.{kind}.{name}: the {family.name} family has no {kind[:-1]} {name!r} "
                                  f"(valid: {', '.join(valid)})")
            where = f"{section}.{kind}.{name}: {path}"
            if kind == "discriminators":
                _, dinfo = load_pretrained_discriminator(path, family, name)
                lines.append(f"{where}: {dinfo.summary()}, sha256 {dinfo.sha256[:12]}")
                continue
            _, info = load_pretrained_generator(path, family, name, ngf, ngf_key=ngf_key)
            line = f"{where}: {info.summary()}, sha256 {info.sha256[:12]}"
            diffs = recipe_mismatches(info, family.cfg, family=family.name, name=name, ngf=ngf, ngf_key=ngf_key)
            if diffs:
                line += "; the recipe differs in " + ", ".join(
                    f"{k} ({_yaml(r)}, the file {_yaml(v)}; training only)" for k, (v, r) in diffs.items())
            lines.append(line + "".join(f"; {n}" for n in info.notes))
    return lines
