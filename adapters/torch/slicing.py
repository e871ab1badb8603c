"""Physical slicing: keep, along every slotted axis, the positions whose units are kept.

A slot says that axis `axis` of tensor `owner.tensor` (a parameter or buffer) has a channel
layout; a configuration keeps a set of units of every dim. The kept positions of a layout
are, segment by segment, the kept units of the segment's dim (all positions of a fixed
segment), in their original order, so every tensor that shares channels keeps the same ones.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

import torch
from torch import nn

from .layout import Layout, Spaces
from .trace import Slot


def kept_positions(layout: Layout, kept: Mapping[str, torch.Tensor], spaces: Spaces,
                   dim_of: Mapping[int, str]) -> torch.Tensor | None:
    """Positions of `layout` kept when each dim keeps the units `kept[dim]` (sorted); None when all are kept."""
    parts, offset, changed = [], 0, False
    for seg in layout:
        name = dim_of.get(spaces.find(seg.space)) if seg.space is not None else None
        units = kept.get(name) if name is not None else None
        if units is not None and len(units) < seg.width:
            parts.append(units.to(torch.long) + offset)
            changed = True
        else:
            parts.append(torch.arange(offset, offset + seg.width))
        offset += seg.width
    return torch.cat(parts) if changed else None


def slice_slots(model: nn.Module, slots: Iterable[Slot], kept: Mapping[str, torch.Tensor], spaces: Spaces,
                dim_of: Mapping[int, str]) -> None:
    """Slice, in place, every slotted parameter or buffer of `model` whose owner is still in the model."""
    by_tensor: dict[tuple[str, str], dict[int, Layout]] = defaultdict(dict)
    for s in slots:
        by_tensor[(s.owner, s.tensor)].setdefault(s.axis, s.layout)
    modules = dict(model.named_modules())
    for (owner, name), layouts in by_tensor.items():
        module = modules.get(owner)
        if module is None:
            continue        # removed with its block, or replaced
        tensor = getattr(module, name, None)
        if not isinstance(tensor, torch.Tensor):
            continue
        new = tensor.detach()
        for axis, layout in layouts.items():
            if new.shape[axis] != sum(seg.width for seg in layout):
                continue    # already resized (a module replaced by a slimmed one)
            idx = kept_positions(layout, kept, spaces, dim_of)
            if idx is not None:
                new = new.index_select(axis, idx.to(new.device))
        if new.shape == tensor.shape:
            continue
        set_tensor(module, name, new.clone(), tensor)


def set_tensor(module: nn.Module, name: str, value: torch.Tensor, old: torch.Tensor) -> None:
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        module.register_buffer(name, value, persistent=name not in module._non_persistent_buffers_set)


def set_submodule(model: nn.Module, name: str, value: nn.Module) -> None:
    """Replace submodule `name`; the new module takes over the old one's training flag."""
    old = model.get_submodule(name)
    value.train(old.training)
    model.set_submodule(name, value)


def common_prefix(names: list[str]) -> str:
    """The longest dotted module path that every name starts with ("" when none)."""
    parts = [n.split(".") for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)
