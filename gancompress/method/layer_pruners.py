"""torch-pruning handlers for the modules it cannot see through.

Each such module is one custom leaf of the dependency graph (torch-pruning ignores its
submodules), handled by a :class:`~torch_pruning.pruner.function.BasePruningFunc` here:

- :class:`SubPixelBlock`: owns its output channels (a root of pruning groups); channel c is
  made of conv filters ``c*r*r ... c*r*r + r*r - 1`` (PixelShuffle's order) and PReLU weight c.
- :class:`SelfAttention`: its output channels are its input channels (``gamma * attn(x) + x``),
  so pruning either side prunes both: the input channels of the query, key and value convs and
  the output channels of the value conv. The query/key width C//8 is left as it is: it is
  internal to the block and no other layer depends on it.

InstanceNorm needs no entry: torch-pruning 1.6.1 maps every ``nn.InstanceNorm2d`` to its own
``InstanceNormPruner``, which prunes ``weight`` and ``bias`` when ``affine=True``, and its
tracer follows the view / batch_norm / view that InstanceNorm decomposes into, for batch sizes
1 and above (``tests/test_custom_pruners.py`` checks that pruning zeroed channels of an affine
InstanceNorm leaves the output unchanged).

Use::

    DG = tp.DependencyGraph().build_dependency(model, example_inputs=x,
                                               customized_pruners=CUSTOM_PRUNERS)
    groups = DG.get_all_groups(ignored_layers=[out_conv],
                               root_module_types=(nn.Conv2d, nn.ConvTranspose2d, nn.Linear,
                                                  *CUSTOM_ROOT_TYPES))
"""
from __future__ import annotations

from typing import Sequence

import torch_pruning as tp
from torch import nn

from ..nets.sagan import SelfAttention
from ..nets.srresnet import SubPixelBlock

__all__ = ["SubPixelPruner", "SelfAttentionPruner", "CUSTOM_PRUNERS", "CUSTOM_ROOT_TYPES"]


def _keep(n: int, idxs: Sequence[int]) -> list[int]:
    drop = set(int(i) for i in idxs)
    return [i for i in range(n) if i not in drop]


class SubPixelPruner(tp.pruner.function.BasePruningFunc):
    """Prunes a :class:`SubPixelBlock`: output channel c is the conv's filters
    ``c*r*r ... c*r*r + r*r - 1``, their bias entries and PReLU parameter c; input channels
    are the conv's input channels."""

    TARGET_MODULES = SubPixelBlock

    def prune_out_channels(self, layer: SubPixelBlock, idxs: Sequence[int]) -> nn.Module:
        r2 = layer.scale ** 2
        keep = _keep(self.get_out_channels(layer), idxs)
        filters = [c * r2 + k for c in keep for k in range(r2)]
        conv = layer.conv
        conv.weight = self._prune_parameter_and_grad(conv.weight, filters, 0)
        if conv.bias is not None:
            conv.bias = self._prune_parameter_and_grad(conv.bias, filters, 0)
        conv.out_channels = len(filters)
        prelu = layer.prelu
        if prelu.num_parameters > 1:
            prelu.weight = self._prune_parameter_and_grad(prelu.weight, keep, 0)
            prelu.num_parameters = len(keep)
        return layer

    def prune_in_channels(self, layer: SubPixelBlock, idxs: Sequence[int]) -> nn.Module:
        conv = layer.conv
        keep = _keep(conv.in_channels, idxs)
        conv.weight = self._prune_parameter_and_grad(conv.weight, keep, 1)
        conv.in_channels = len(keep)
        return layer

    def get_out_channels(self, layer: SubPixelBlock) -> int:
        return layer.conv.out_channels // layer.scale ** 2

    def get_in_channels(self, layer: SubPixelBlock) -> int:
        return layer.conv.in_channels


class SelfAttentionPruner(tp.pruner.function.BasePruningFunc):
    """Prunes a :class:`SelfAttention`: input and output channels are one set (the residual
    term), so ``prune_in_channels is prune_out_channels``, which makes torch-pruning carry a
    group through the block. The query/key width (C//8) is not pruned."""

    TARGET_MODULES = SelfAttention

    def prune_out_channels(self, layer: SelfAttention, idxs: Sequence[int]) -> nn.Module:
        keep = _keep(self.get_out_channels(layer), idxs)
        for conv in (layer.query_conv, layer.key_conv, layer.value_conv):
            conv.weight = self._prune_parameter_and_grad(conv.weight, keep, 1)
            conv.in_channels = len(keep)
        value = layer.value_conv
        value.weight = self._prune_parameter_and_grad(value.weight, keep, 0)
        if value.bias is not None:
            value.bias = self._prune_parameter_and_grad(value.bias, keep, 0)
        value.out_channels = len(keep)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: SelfAttention) -> int:
        return layer.value_conv.out_channels

    def get_in_channels(self, layer: SelfAttention) -> int:
        return layer.value_conv.in_channels


CUSTOM_PRUNERS: dict[type, tp.pruner.function.BasePruningFunc] = {
    SubPixelBlock: SubPixelPruner(),
    SelfAttention: SelfAttentionPruner(),
}

# Custom leaves that own output channels and so root pruning groups.
CUSTOM_ROOT_TYPES: tuple[type, ...] = (SubPixelBlock,)
