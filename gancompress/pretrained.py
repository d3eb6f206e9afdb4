"""Generators and discriminators trained elsewhere, mapped onto gancompress's nets.

"I have a model, make it small": most trained image-to-image generators come from
junyanz/pytorch-CycleGAN-and-pix2pix (``latest_net_G.pth``, ``latest_net_G_A.pth``,
``latest_net_G_B.pth``; GAN Compression's and OMGD's released full models share the layouts),
or from gancompress itself. This module reads such a file without running code
(``torch.load(weights_only=True)``), recognises its layout, infers the architecture settings its
keys and shapes determine, maps its keys onto our nets and checks every key and shape.

Layouts (file -> our net):

- ``gancompress``: a generator file of :func:`gancompress.export.save_generator`.
- ``ours-state-dict``: a plain state dict of one of our nets (any family).
- ``cyclegan-unet``: pix2pix's ``UnetGenerator``, one ``UnetSkipConnectionBlock`` nested in the
  next (``model.model.1.model.3...``). Level k of the nesting (0 outermost) holds our
  ``downs[k]`` and ``ups[n-1-k]``; in a middle block index 1 is the down conv, 2 its norm,
  3 the submodule, 5 the up conv, 6 its norm; the innermost block has 1 down conv, 3 up conv,
  4 norm; the outermost 0 down conv, 1 the submodule, 3 up conv. Dropout comes last in a middle
  block, so it shifts no index and leaves no trace: whether the file was trained with dropout
  cannot be read from it. (pix2pix concatenates a skip after the next level's in-place
  LeakyReLU has changed it; the up path's ReLU makes that equal to our plain skip, since
  ReLU(LeakyReLU(s)) = ReLU(s), so outputs match exactly.)
- ``cyclegan-resnet``: ``ResnetGenerator``; our ResnetGenerator keeps its module tree, so keys
  map to themselves. A dropout layer sits between a residual block's two convs and shifts the
  second conv from ``conv_block.5`` to ``conv_block.6``; its rate is not in the file (pix2pix's
  code uses 0.5; GAN Compression's always has the layer, at rate 0 by default). Dropout does
  nothing in eval mode, so a file loads whatever ``model.dropout`` says: the indices are shifted
  to the recipe's net. A file without the layer implies ``dropout: false``; one with it implies
  nothing.

Discriminators: pix2pix's ``NLayerDiscriminator`` (netD basic / n_layers) is a flat
``model`` Sequential: conv 0, LeakyReLU, then conv, norm, LeakyReLU per layer, then the logit
conv; our PatchDiscriminator holds the same layers as ``blocks[k]`` and ``head``.

Norms: ``norm='batch'`` has affine BatchNorm with running statistics and convs without bias;
``norm='instance'`` is ``InstanceNorm2d(affine=False)`` and convs with bias. Old files (torch
< 0.4, or the 2018 code with ``track_running_stats=True``) carry InstanceNorm running statistics;
pytorch-CycleGAN-and-pix2pix's loader drops them (``__patch_instance_norm_state_dict``) and so do
we. BatchNorm files from torch < 0.4.1 lack ``num_batches_tracked``; it is set to 0, as torch
does for such files.

Note that pix2pix's ``test.py`` runs the generator in train mode unless ``--eval`` is given
(batch statistics, dropout on); our evaluation runs it in eval mode (running statistics).
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, MissingFileError, RecipeError
from .nets.patchgan import PatchDiscriminator
from .nets.resnet import MobileResnetGenerator, ResnetGenerator
from .nets.unet import UnetGenerator

# the format tag of gancompress.export.save_generator (not imported: export depends on the
# recipe machinery, this module only on nets; tests check that the two agree)
GENERATOR_FORMAT = "gancompress-generator"

LAYOUTS = ("gancompress", "ours-state-dict", "cyclegan-unet", "cyclegan-resnet")
D_LAYOUTS = ("ours-state-dict", "cyclegan-patchgan")

# recipe ``model`` keys that describe a generator's architecture (what a file can imply)
_RUNNING = ("running_mean", "running_var", "num_batches_tracked")
_LAYOUT_WORDS = {"gancompress": "gancompress generator file",
                 "ours-state-dict": "gancompress state dict",
                 "cyclegan-unet": "pytorch-CycleGAN-and-pix2pix U-Net",
                 "cyclegan-resnet": "pytorch-CycleGAN-and-pix2pix ResNet",
                 "cyclegan-patchgan": "pytorch-CycleGAN-and-pix2pix PatchGAN"}


@dataclass(frozen=True)
class GeneratorFileInfo:
    """What a generator file is and which architecture settings its keys and shapes determine.

    Attributes:
        path: the file.
        sha256: hex digest of the file's bytes.
        layout: one of :data:`LAYOUTS`.
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
        head = _LAYOUT_WORDS[self.layout] + (f" of family {self.family}" if self.family else "")
        return f"{head} ({', '.join(parts)})" if parts else head


@dataclass(frozen=True)
class DiscriminatorFileInfo:
    """What a PatchGAN discriminator file is (see :func:`inspect_discriminator_file`).

    Attributes: path, sha256, layout (one of :data:`D_LAYOUTS`), ndf, n_layers, norm ('batch' or
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
            return _LAYOUT_WORDS[self.layout]
        return (f"{_LAYOUT_WORDS[self.layout]} (ndf {self.ndf}, n_layers_D {self.n_layers}, "
                f"norm {self.norm}, {self.input_nc} input channels)")


# ----------------------------------------------------------------------------------------------
# Reading files


def read_weights_file(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; one-line errors.

    Raises:
        MissingFileError: no such file.
        CheckpointError: the file needs code to load (a pickled module or class: the message
            names the global it asks for) or is not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: it holds objects that need code to rebuild ({_unpickling_reason(exc)}), "
            "and loading it could run that code; where you trust the file, re-save its weights alone with "
            "torch.save(net.state_dict(), path)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch file ({first})") from None


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file asks for."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "global" in line.split(":")[0]:
            line = line.removeprefix("WeightsUnpickler error:").strip()
            # keep the sentence naming the global, not torch's allow-list advice after it
            return line.split(". Please use")[0].rstrip(".")
    return lines[-1][:200] if lines else type(exc).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _state_dict_of(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """The tensors of a plain state dict, with a DataParallel ``module.`` prefix stripped."""
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__
        if isinstance(obj, dict):
            keys = ", ".join(repr(k) for k in list(obj)[:4])
            what = f"a dict with non-tensor entries (keys {keys}{', ...' if len(obj) > 4 else ''})"
        raise CheckpointError(f"{path}: not a generator state dict nor a gancompress generator file (it holds "
                              f"{what}); save the generator with torch.save(net.state_dict(), path)")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}, ("stripped the DataParallel prefix 'module.'",)
    return state, ()


# ----------------------------------------------------------------------------------------------
# Key layouts


def unet_key_table(num_downs: int) -> dict[str, str]:
    """Module prefixes of our :class:`UnetGenerator` -> those of pix2pix's nested U-Net.

    Level k of the nesting (0 outermost, ``num_downs - 1`` innermost) sits at
    ``model.model.1`` + ``.model.3`` * (k-1) + ``.model``; see the module docstring for the
    indices inside a level.
    """
    n = num_downs
    table = {}
    for level in range(n):
        where = "model.model" if level == 0 else "model.model.1" + ".model.3" * (level - 1) + ".model"
        up = n - 1 - level
        if level == 0:
            roles = {0: "downs.0.0", 3: f"ups.{up}.1"}
        elif level == n - 1:
            roles = {1: f"downs.{level}.1", 3: f"ups.{up}.1", 4: f"ups.{up}.2"}
        else:
            roles = {1: f"downs.{level}.1", 2: f"downs.{level}.2", 5: f"ups.{up}.1", 6: f"ups.{up}.2"}
        for index, ours in roles.items():
            table[ours] = f"{where}.{index}"
    return table


def _ours_to_file(layout: str, target: nn.Module, dropout_slot: bool | None = None) -> dict[str, str]:
    """Our state-dict keys of ``target`` -> the key the file uses for them (identity if same).

    ``dropout_slot``: whether the file's residual blocks hold a dropout layer (None: not a ResNet
    file); where ``target``'s blocks differ, the indices after the slot are shifted.
    """
    keys = list(target.state_dict())
    if dropout_slot is not None and isinstance(target, ResnetGenerator):
        target_slot = any(isinstance(m, nn.Dropout) for m in target.modules())
        shift = int(dropout_slot) - int(target_slot)
        if shift == 0:
            return {k: k for k in keys}
        out = {}
        for k in keys:
            parts = k.split(".")
            if len(parts) > 3 and parts[2] == "conv_block" and int(parts[3]) > 4:
                parts[3] = str(int(parts[3]) + shift)
            out[k] = ".".join(parts)
        return out
    if layout == "cyclegan-unet" and isinstance(target, UnetGenerator):
        table = unet_key_table(len(target.downs))
        out = {}
        for k in keys:
            prefix, leaf = k.rsplit(".", 1)
            out[k] = f"{table[prefix]}.{leaf}" if prefix in table else k
        return out
    return {k: k for k in keys}


def _d_key_table(n_layers: int) -> dict[str, str]:
    """Our :class:`PatchDiscriminator` prefixes -> pix2pix's ``NLayerDiscriminator`` ones."""
    table = {"blocks.0.0": "model.0", "head": f"model.{3 * n_layers + 2}"}
    for k in range(1, n_layers + 1):
        table[f"blocks.{k}.0"] = f"model.{3 * k - 1}"
        table[f"blocks.{k}.1"] = f"model.{3 * k}"
    return table


# ----------------------------------------------------------------------------------------------
# Inference


@dataclass
class _Parsed:
    info: GeneratorFileInfo
    state: dict[str, torch.Tensor]  # the file's tensors in the file's naming, norm buffers patched
    dropout_slot: bool | None = None  # ResNet files: whether blocks hold a dropout layer


def _norm_at(state: dict, norm: str, conv: str) -> str:
    """The norm kind whose keys sit at module ``norm`` after conv ``conv`` (file naming)."""
    if f"{norm}.weight" in state:
        return "batch" if f"{norm}.running_mean" in state else "instance_affine"
    if f"{conv}.bias" in state:
        return "instance"
    return "none"


def _need(state: dict, key: str, path: Path, what: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{path}: key '{key}' is missing, which every {what} has; "
                              "the file is damaged or holds another architecture")
    return state[key]


def _parse(path: Path) -> _Parsed:
    obj = read_weights_file(path)
    digest = _sha256(path)
    if isinstance(obj, dict) and obj.get("format") == GENERATOR_FORMAT:
        return _parse_gancompress(obj, path, digest)
    state, notes = _state_dict_of(obj, path)
    keys = list(state)
    if any(k.startswith("model.model.") for k in keys):
        return _parse_unet(state, path, digest, "cyclegan-unet", notes)
    if any(k.startswith("downs.") for k in keys):
        return _parse_unet(state, path, digest, "ours-state-dict", notes)
    if any(".conv_block." in k for k in keys):
        return _parse_resnet(state, path, digest, notes)
    return _Parsed(GeneratorFileInfo(str(path), digest, "ours-state-dict", notes=notes), state)


def _patch_norm_buffers(state: dict, norm: str, expected: dict) -> tuple[dict, tuple[str, ...]]:
    """Drop InstanceNorm running statistics, add a missing BatchNorm ``num_batches_tracked``."""
    notes = []
    if norm in ("instance", "instance_affine"):
        dropped = [k for k in state if k.rsplit(".", 1)[-1] in _RUNNING and k not in expected]
        if dropped:
            state = {k: v for k, v in state.items() if k not in dropped}
            notes.append(f"dropped {len(dropped)} InstanceNorm running-statistics buffers, as "
                         "pytorch-CycleGAN-and-pix2pix does (instance statistics are used)")
    if norm == "batch":
        added = [k for k in expected if k.endswith(".num_batches_tracked") and k not in state
                 and f"{k.rsplit('.', 1)[0]}.running_mean" in state]
        if added:
            state = dict(state)
            for k in added:
                state[k] = torch.tensor(0, dtype=torch.long)
            notes.append(f"set num_batches_tracked to 0 in {len(added)} BatchNorm layers (a file from torch < 0.4.1)")
    return state, tuple(notes)


def _check_norm(norm: str, path: Path) -> None:
    if norm == "none":
        raise CheckpointError(f"{path}: the generator has no norm layers and convs without bias (pix2pix's "
                              "--norm none), which no gancompress family builds; use a model trained with "
                              "--norm batch or --norm instance")


def _parse_unet(state: dict, path: Path, digest: str, layout: str, notes: tuple) -> _Parsed:
    theirs = layout == "cyclegan-unet"
    what = _LAYOUT_WORDS[layout] if theirs else "gancompress U-Net"
    if theirs:
        levels = [k.split(".").count("model") - 2 for k in state if k.startswith("model.model.")]
        n = max(levels) + 1
        first, last = "model.model.0", "model.model.3"
        norm_at, conv_at = "model.model.1.model.2", "model.model.1.model.1"
    else:
        n = len({k.split(".")[1] for k in state if k.startswith("downs.")})
        first, last = "downs.0.0", f"ups.{n - 1}.1"
        norm_at, conv_at = "downs.1.2", "downs.1.1"
    w_in = _need(state, f"{first}.weight", path, what)
    w_out = _need(state, f"{last}.weight", path, what)
    norm = _norm_at(state, norm_at, conv_at)
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
    what = "gancompress mobile ResNet" if mobile else _LAYOUT_WORDS[layout]
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("model.") and ".conv_block." in k})
    n_blocks = len(blocks)
    # a dropout layer moves a block's second conv from index 5 to 6 (index 6 is otherwise its norm)
    slot = any((k.endswith(".conv_block.6.weight") and v.dim() == 4) or ".conv_block.6.conv." in k
               for k, v in state.items())
    w_in = _need(state, "model.1.weight", path, what)
    w_out = _need(state, f"model.{n_blocks + 17}.weight", path, f"{what} with {n_blocks} blocks")
    norm = _norm_at(state, "model.2", "model.1")
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
    to_file = _ours_to_file(info.layout, reference, parsed.dropout_slot)
    expected = {to_file[k]: (k, tuple(v.shape)) for k, v in reference.state_dict().items()}
    parsed.state, notes = _patch_norm_buffers(parsed.state, info.norm, expected)
    parsed.info = replace(info, notes=info.notes + notes)
    misfit = _first_misfit(parsed.state, expected)
    if misfit:
        raise CheckpointError(f"{path}: {misfit}, though its other keys make it a {parsed.info.summary()}; "
                              "the file is damaged or holds another architecture")
    return parsed


def _first_misfit(state: dict[str, torch.Tensor], expected: dict[str, tuple[str, tuple]]) -> str | None:
    """The first key (file naming) that does not fit, in words; None if every key and shape fits.

    ``expected`` maps file keys to (our key, shape). Keys are checked in the file's order, then
    the expected keys the file lacks in our order.
    """
    for key, tensor in state.items():
        if key not in expected:
            return f"key '{key}' {tuple(tensor.shape)} is unexpected"
        ours, shape = expected[key]
        if tuple(tensor.shape) != shape:
            alias = "" if ours == key else f" (our '{ours}')"
            return f"key '{key}'{alias} has shape {tuple(tensor.shape)} where {shape} is expected"
    for key, (ours, shape) in expected.items():
        if key not in state:
            alias = "" if ours == key else f" (our '{ours}')"
            return f"key '{key}'{alias} {shape} is missing"
    return None


# ----------------------------------------------------------------------------------------------
# Public API: generators


def inspect_generator_file(path: str | Path) -> GeneratorFileInfo:
    """Read a generator file without running code; recognise its layout and infer its settings.

    Every key and shape is checked against the net the inferred settings describe (for the
    U-Net, ResNet and mobile ResNet; other families' state dicts are only checked when loaded).

    Raises:
        MissingFileError, CheckpointError: one line naming the file, and for a file that does not
            fit, the first key that does not fit.
    """
    return _parse(Path(path)).info


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
    parsed = _parse(path)
    info = parsed.info
    family_name = getattr(family, "name", None)
    if info.layout == "gancompress" and family_name is not None and info.family != family_name:
        raise CheckpointError(f"{path}: a generator of family {info.family}, but the recipe's family is "
                              f"{family_name}; set family: {info.family} or use a {family_name} generator")
    with torch.device("meta"):
        target = family.build_generator(name, ngf)
    to_file = _ours_to_file(info.layout, target, parsed.dropout_slot)
    expected = {to_file[k]: (k, tuple(v.shape)) for k, v in target.state_dict().items()}
    state, notes = parsed.state, ()
    if info.layout == "gancompress" or (info.layout == "ours-state-dict" and info.netG is None):
        # our own nets: BatchNorm counters may be absent in hand-made state dicts, nothing else
        state, notes = _patch_norm_buffers(state, "batch", expected)
    misfit = _first_misfit(state, expected)
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
    diffs.pop("model.dropout", None)  # files load whatever it says (see the module docstring)
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


# ----------------------------------------------------------------------------------------------
# Public API: discriminators


def _parse_discriminator(path: Path) -> tuple[DiscriminatorFileInfo, dict[str, torch.Tensor]]:
    obj = read_weights_file(path)
    digest = _sha256(path)
    state, notes = _state_dict_of(obj, path)
    convs = sorted(int(k.split(".")[1]) for k, v in state.items()
                   if k.startswith("model.") and k.endswith(".weight") and v.dim() == 4)
    if convs:
        layout = "cyclegan-patchgan"
        n_layers = len(convs) - 2
        first, norm_at, conv_at = "model.0", "model.3", "model.2"
    elif "head.weight" in state:
        layout = "ours-state-dict"
        n_layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")}) - 1
        first, norm_at, conv_at = "blocks.0.0", "blocks.1.1", "blocks.1.0"
    else:
        return DiscriminatorFileInfo(str(path), digest, "ours-state-dict", notes=notes), state
    what = _LAYOUT_WORDS[layout] if layout != "ours-state-dict" else "gancompress PatchGAN"
    w = _need(state, f"{first}.weight", path, what)
    norm = _norm_at(state, norm_at, conv_at)
    if n_layers < 1 or norm not in ("batch", "instance"):
        raise CheckpointError(f"{path}: a {what} with n_layers {n_layers} and norm {norm}, which gancompress's "
                              "PatchGAN does not build (n_layers >= 1, norm batch or instance)")
    info = DiscriminatorFileInfo(str(path), digest, layout, ndf=int(w.shape[0]), n_layers=n_layers, norm=norm,
                                 input_nc=int(w.shape[1]), notes=notes)
    with torch.device("meta"):
        reference = PatchDiscriminator(info.input_nc, info.ndf, n_layers, norm)
    expected = _d_expected(layout, reference)
    state, patch_notes = _patch_norm_buffers(state, norm, expected)
    info = replace(info, notes=info.notes + patch_notes)
    misfit = _first_misfit(state, expected)
    if misfit:
        raise CheckpointError(f"{path}: {misfit}, though its other keys make it a {info.summary()}; "
                              "the file is damaged or holds another architecture")
    return info, state


def _d_expected(layout: str, target: nn.Module) -> dict[str, tuple[str, tuple]]:
    table = _d_key_table(len(target.blocks) - 1) if (layout == "cyclegan-patchgan"
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
    return _parse_discriminator(Path(path))[0]


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
    info, state = _parse_discriminator(path)
    with torch.device("meta"):
        target = family.build_discriminator(name)
    expected = _d_expected(info.layout, target)
    misfit = _first_misfit(state, expected)
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


# ----------------------------------------------------------------------------------------------
# Checking a recipe's pretrained files before a run


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
