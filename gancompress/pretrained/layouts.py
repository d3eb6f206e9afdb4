"""The key layouts of the weights files gancompress reads, and the tables mapping their keys to ours.

Layouts (file -> our net):

- ``gancompress``: a generator file of :func:`gancompress.export.generator.save_generator`.
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
"""
from __future__ import annotations

from torch import nn

from ..nets.resnet import ResnetGenerator
from ..nets.unet import UnetGenerator

LAYOUTS = ("gancompress", "ours-state-dict", "cyclegan-unet", "cyclegan-resnet")
D_LAYOUTS = ("ours-state-dict", "cyclegan-patchgan")

#: Layout -> how messages name it.
LAYOUT_WORDS = {"gancompress": "gancompress generator file",
                "ours-state-dict": "gancompress state dict",
                "cyclegan-unet": "pytorch-CycleGAN-and-pix2pix U-Net",
                "cyclegan-resnet": "pytorch-CycleGAN-and-pix2pix ResNet",
                "cyclegan-patchgan": "pytorch-CycleGAN-and-pix2pix PatchGAN"}


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


def ours_to_file(layout: str, target: nn.Module, dropout_slot: bool | None = None) -> dict[str, str]:
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


def d_key_table(n_layers: int) -> dict[str, str]:
    """Our :class:`PatchDiscriminator` prefixes -> pix2pix's ``NLayerDiscriminator`` ones."""
    table = {"blocks.0.0": "model.0", "head": f"model.{3 * n_layers + 2}"}
    for k in range(1, n_layers + 1):
        table[f"blocks.{k}.0"] = f"model.{3 * k - 1}"
        table[f"blocks.{k}.1"] = f"model.{3 * k}"
    return table
