"""Coupled channel groups from Torch-Pruning's DependencyGraph: one `ChannelDim` per group.

A group is every layer whose channels must be removed together (a conv, its BN, the
convs reading it, everything tied by residual adds or depthwise convs). Each group
becomes one dim of the spec, named after its root layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

CHANNEL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass(frozen=True)
class ChannelDim:
    """One coupled channel group.

    `producers` maps each layer whose output channels belong to the group (conv, linear, BN)
    to the group index of each of its channels; `consumers` lists the layers that read the
    group's channels as inputs.
    """

    name: str
    width: int
    producers: dict[str, np.ndarray]
    consumers: tuple[str, ...]


def dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's graph of `model` (which it puts in eval mode: pass a copy)."""
    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example_input, verbose=False)


def coupled_dims(model: nn.Module, graph: tp.DependencyGraph) -> list[ChannelDim]:
    """Every coupled group rooted at a conv or linear layer's output channels."""
    names = {m: n for n, m in model.named_modules()}
    dims = []
    for group in graph.get_all_groups(root_module_types=CHANNEL_LAYERS):
        root = names[group[0].dep.target.module]
        producers: dict[str, np.ndarray] = {}
        consumers: list[str] = []
        for item in group:
            module = item.dep.target.module
            if module not in names:   # Torch-Pruning's own nodes for functional ops
                continue
            name = names[module]
            if graph.is_out_channel_pruning_fn(item.dep.handler):
                local = np.full(len(item.idxs), -1, dtype=np.int64)
                local[np.asarray(item.idxs)] = np.asarray(item.root_idxs)
                producers[name] = local
            elif graph.is_in_channel_pruning_fn(item.dep.handler):
                consumers.append(name)
        dims.append(ChannelDim(root, len(group[0].idxs), producers, tuple(consumers)))
    return dims
