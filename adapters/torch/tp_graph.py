"""Reading a Torch-Pruning `DependencyGraph`: its pruning groups as widths, and which group sizes the output
and the input channels of every convolution and Linear layer (for `torch_pruning_bridge`).

A group is one width: every layer it prunes loses the same channels (Torch-Pruning's coupling through
residual additions, norms, concatenations, depthwise convolutions). A layer's output channels are sized by
the group that prunes them; its input channels by the groups that prune them (several after a
concatenation, each some number of times), plus the channels no prunable group touches.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from torch import nn

LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
UNSUPPORTED = (nn.modules.conv._ConvTransposeNd, nn.MultiheadAttention, nn.RNNBase)


@dataclass(frozen=True)
class GroupInfo:
    """One Torch-Pruning group: named after its root layer (`root`), `width` channels; `pinned` says why it keeps
    its width (empty when it is prunable); `layers`: the convolution / Linear layers whose outputs it prunes."""

    name: str
    root: str
    width: int
    layers: tuple[str, ...]
    pinned: str


@dataclass(frozen=True)
class LayerInfo:
    """A convolution or Linear layer: the group sizing its output (None: a fixed width), the groups sizing its
    input with how many times each channel of theirs appears there, the input channels no group sizes, and
    the (input shape, output shape) of each call in the example forward pass."""

    name: str
    module: nn.Module
    out_dim: str | None
    in_dims: tuple[tuple[str, int], ...]
    fixed_in: int
    calls: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]

    @property
    def depthwise(self) -> bool:
        m = self.module
        return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels == m.out_channels

    @property
    def dims(self) -> tuple[str, ...]:
        """The groups its cost depends on, output first."""
        names = ([self.out_dim] if self.out_dim else []) + [d for d, _ in self.in_dims]
        return tuple(dict.fromkeys(names))

    def widths(self, kept: Mapping[str, int]) -> tuple[int, int]:
        """(output channels, input channels) when each group keeps `kept[group]` channels."""
        full_out = self.module.out_channels if isinstance(self.module, nn.modules.conv._ConvNd) \
            else self.module.out_features
        out = kept[self.out_dim] if self.out_dim else full_out
        return out, self.fixed_in + sum(times * kept[d] for d, times in self.in_dims)


@dataclass(frozen=True)
class ParamInfo:
    """Parameters of a module other than a convolution / Linear: `per_channel` of them per channel of the
    groups in `dims` (with multiplicities), plus `fixed` ones."""

    name: str
    per_channel: int
    dims: tuple[tuple[str, int], ...]
    fixed: int


def group_items(dg: Any, group: Any) -> list[tuple[Any, bool, int, list[Any]]]:
    """(target module, is an output pruning, number of indices, root indices) of each item of a group."""
    out = []
    for item in group:
        dep = item.dep
        out.append((dep.target.module, dg.is_out_channel_pruning_fn(dep.handler), len(item.idxs),
                    list(getattr(item, "root_idxs", []) or [])))
    return out


def reaches_output(dg: Any, group: Any) -> bool:
    """True when the channels of `group` reach the model's output (a node it prunes has no successor)."""
    for item in group:
        if dg.is_out_channel_pruning_fn(item.dep.handler) and not item.dep.target.outputs:
            return True
    return False


def multiplicity(layer: str, group: GroupInfo, count: int, roots: Sequence[Any]) -> int:
    """How many times each channel of `group` appears among `count` channels of `layer`; uneven use is refused."""
    if count % group.width or any(r is None for r in roots):
        raise ValueError(f"ignored_layers: {layer} reads {count} channels of the group rooted at {group.root} "
                         f"({group.width} channels) unevenly; the bridge cannot size it. Pass "
                         f"ignored_layers=[model.{group.root}] (or use mdp_opt.adapters.torch.build_spec)")
    times = count // group.width
    if roots and set(Counter(roots).values()) != {times}:
        raise ValueError(f"ignored_layers: {layer} reads the channels of the group rooted at {group.root} unevenly; "
                         f"pass ignored_layers=[model.{group.root}]")
    return times


def layer_infos(dg: Any, model: nn.Module, groups: Mapping[str, tuple[GroupInfo, Any]],
                calls: Mapping[str, list[tuple[tuple[int, ...], tuple[int, ...]]]]) -> list[LayerInfo]:
    """Every convolution and Linear layer that ran, with the prunable groups sizing its outputs and inputs.

    Refused with a message naming the layer and the fix: a grouped (not depthwise) convolution or a layer
    type the bridge has no cost model for, whose channels a prunable group would change."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    out_dim: dict[str, str] = {}
    ins: dict[str, dict[str, int]] = {}
    for dim, (info, group) in groups.items():
        if info.pinned:
            continue
        for module, is_out, count, roots in group_items(dg, group):
            name = names.get(module)
            if name is None or not isinstance(module, LAYER_TYPES + UNSUPPORTED):
                continue
            if isinstance(module, UNSUPPORTED):
                raise ValueError(f"ignored_layers: {name} ({type(module).__name__}) would be pruned by the group "
                                 f"rooted at {info.root}, and the bridge has no cost model for it; pass "
                                 f"ignored_layers=[model.{info.root}] (or use mdp_opt.adapters.torch.build_spec)")
            if is_out:
                out_dim[name] = dim
            else:
                ins.setdefault(name, {})
                ins[name][dim] = ins[name].get(dim, 0) + multiplicity(name, info, count, roots)
    layers = []
    for name, shapes in calls.items():
        module = modules[name]
        if isinstance(module, UNSUPPORTED):
            raise ValueError(f"model: {name} is a {type(module).__name__}; the Torch-Pruning bridge counts the costs "
                             "of Conv1d/2d/3d and Linear layers only; use mdp_opt.adapters.torch.build_spec")
        in_dims = tuple(ins.get(name, {}).items())
        full_in = module.in_channels if isinstance(module, nn.modules.conv._ConvNd) else module.in_features
        info = LayerInfo(name, module, out_dim.get(name), in_dims,
                         full_in - sum(times * groups[d][0].width for d, times in in_dims), tuple(shapes))
        if info.depthwise and info.out_dim:
            info = LayerInfo(name, module, info.out_dim, ((info.out_dim, 1),), 0, info.calls)
        elif isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and info.dims:
            roots = [groups[d][0].root for d in info.dims]
            fix = ", ".join(f"model.{r}" for r in dict.fromkeys([name] + roots))
            raise ValueError(f"ignored_layers: {name} is a grouped convolution (groups={module.groups}) whose channels "
                             f"the groups rooted at {', '.join(roots)} would prune; the bridge models only plain and "
                             f"depthwise convolutions: pass ignored_layers=[{fix}]")
        if info.fixed_in < 0:
            raise ValueError(f"ignored_layers: {name}: the groups reading its input count more channels than it has; "
                             f"pass ignored_layers=[{', '.join('model.' + groups[d][0].root for d, _ in in_dims)}]")
        layers.append(info)
    return layers


def param_infos(dg: Any, model: nn.Module, groups: Mapping[str, tuple[GroupInfo, Any]], called: Sequence[str]
                ) -> list[ParamInfo]:
    """The parameters of every module other than a convolution / Linear that ran (`called`: those have cost
    tables): norms, PReLU, ..., per channel of the prunable groups that prune them (a parameter whose first
    axis has the module's channel count) or fixed; the parameters of layers that never ran are fixed."""
    names = {m: n for n, m in model.named_modules()}
    touching: dict[str, dict[str, int]] = {}
    for dim, (info, group) in groups.items():
        if info.pinned:
            continue
        for module, is_out, count, roots in group_items(dg, group):
            if isinstance(module, nn.Parameter):
                raise ValueError(f"costs: the group rooted at {info.root} prunes a parameter outside any module, "
                                 "which the bridge does not count; leave 'params' out of costs=")
            name = names.get(module)
            if is_out and name is not None and not isinstance(module, LAYER_TYPES) \
                    and any(True for _ in module.parameters(recurse=False)):
                touching.setdefault(name, {})
                touching[name][dim] = touching[name].get(dim, 0) + multiplicity(name, info, count, roots)
    out = []
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if not params or (isinstance(module, LAYER_TYPES) and name in called):
            continue
        if isinstance(module, LAYER_TYPES):
            out.append(ParamInfo(name, 0, (), sum(p.numel() for p in params)))
            continue
        dims = tuple(touching.get(name, {}).items())
        channels = dg.get_out_channels(module) if dims else None
        if dims and channels is None:
            raise ValueError(f"costs: {name} ({type(module).__name__}) is pruned by Torch-Pruning but its channel "
                             "count is unknown; leave 'params' out of costs=")
        per_channel = sum(p.numel() // channels for p in params if dims and p.ndim and p.shape[0] == channels)
        fixed = sum(p.numel() for p in params) - per_channel * (channels or 0) \
            + per_channel * ((channels or 0) - sum(t * groups[d][0].width for d, t in dims))
        out.append(ParamInfo(name, per_channel, dims if per_channel else (), fixed))
    return out
