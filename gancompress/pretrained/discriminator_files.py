"""Discriminator files: pix2pix's ``NLayerDiscriminator`` (netD basic / n_layers) or our
:class:`~gancompress.nets.patchgan.PatchDiscriminator`'s state dict, recognised and checked, and
the settings they imply (:func:`inspect_discriminator_file`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..nets.patchgan import PatchDiscriminator
from .files import (
    file_sha256,
    first_misfit,
    need_key,
    norm_kind_at,
    patch_norm_buffers,
    read_weights_file,
    state_dict_of,
)
from .layouts import LAYOUT_WORDS, d_key_table


@dataclass(frozen=True)
class DiscriminatorFileInfo:
    """What a PatchGAN discriminator file is (see :func:`inspect_discriminator_file`).

    Attributes: path, sha256, layout (one of :data:`~gancompress.pretrained.layouts.D_LAYOUTS`), ndf, n_layers, norm ('batch' or
    'instance'), input_nc (pix2pix: input + output image channels), notes.
    """

    path: str
    sha256: str
    layout: str
    ndf: int | None = None
    n_layers: int | None = None
    norm: str | None = None
    input_nc: int | None = None
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        if self.ndf is None:
            return LAYOUT_WORDS[self.layout]
        return (f"{LAYOUT_WORDS[self.layout]} (ndf {self.ndf}, n_layers_D {self.n_layers}, "
                f"norm {self.norm}, {self.input_nc} input channels)")


def parse_discriminator_file(path: Path) -> tuple[DiscriminatorFileInfo, dict[str, torch.Tensor]]:
    obj = read_weights_file(path)
    digest = file_sha256(path)
    state, notes = state_dict_of(obj, path)
    convs = sorted(int(k.split(".")[1]) for k, v in state.items()
                   if k.startswith("model.") and k.endswith(".weight") and v.dim() == 4)
    if convs:
        layout = "cyclegan-patchgan"
        n_layers = len(convs) - 2
        first, norm_at, conv_at = "model.0", "model.3", "model.2"
    elif "head.weight" in state and "blocks.0.0.weight" in state:  # our PatchGAN (SAGAN's D has SN convs)
        layout = "ours-state-dict"
        n_layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")}) - 1
        first, norm_at, conv_at = "blocks.0.0", "blocks.1.1", "blocks.1.0"
    else:
        return DiscriminatorFileInfo(str(path), digest, "ours-state-dict", notes=notes), state
    what = LAYOUT_WORDS[layout] if layout != "ours-state-dict" else "gancompress PatchGAN"
    w = need_key(state, f"{first}.weight", path, what)
    norm = norm_kind_at(state, norm_at, conv_at)
    if n_layers < 1 or norm not in ("batch", "instance"):
        raise CheckpointError(f"{path}: a {what} with n_layers {n_layers} and norm {norm}, which gancompress's "
                              "PatchGAN does not build (n_layers >= 1, norm batch or instance)")
    info = DiscriminatorFileInfo(str(path), digest, layout, ndf=int(w.shape[0]), n_layers=n_layers, norm=norm,
                                 input_nc=int(w.shape[1]), notes=notes)
    with torch.device("meta"):
        reference = PatchDiscriminator(info.input_nc, info.ndf, n_layers, norm)
    expected = d_expected(layout, reference)
    state, patch_notes = patch_norm_buffers(state, norm, expected)
    info = replace(info, notes=info.notes + patch_notes)
    misfit = first_misfit(state, expected)
    if misfit:
        raise CheckpointError(f"{path}: {misfit}, though its other keys make it a {info.summary()}; "
                              "the file is damaged or holds another architecture")
    return info, state


def d_expected(layout: str, target: nn.Module) -> dict[str, tuple[str, tuple]]:
    """The keys a ``layout`` file of discriminator ``target`` holds -> (our key, shape)."""
    table = d_key_table(len(target.blocks) - 1) if (layout == "cyclegan-patchgan"
                                                      and isinstance(target, PatchDiscriminator)) else {}
    out = {}
    for k, v in target.state_dict().items():
        prefix, leaf = k.rsplit(".", 1)
        out[f"{table[prefix]}.{leaf}" if prefix in table else k] = (k, tuple(v.shape))
    return out


def inspect_discriminator_file(path: str | Path) -> DiscriminatorFileInfo:
    """Read a PatchGAN discriminator file (pix2pix's ``latest_net_D*.pth`` with netD basic or
    n_layers, or our PatchDiscriminator's state dict) and infer ndf, n_layers, norm and channels.

    Raises:
        MissingFileError, CheckpointError: one line, as :func:`inspect_generator_file`.
    """
    return parse_discriminator_file(Path(path))[0]
