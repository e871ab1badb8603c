"""The model-structure layer: what a family finds in a model, in one form for every family.

`build_spec` hands the model to each family in turn (see `families`); the first that
recognises it returns a `Structure`. From a structure the rest is shared: the spec's dims
and their allowed counts, removable blocks, importance, cost tables, and `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from torch import nn

from .attention import SiteHandler
from .blocks import ResidualBlock
from .handlers import ConvHandler, LinearHandler, NormHandler, Sizes
from .layout import Layout, Spaces, fixed
from .trace import OpRecord, Trace

STEP_OPTION = {"channels": "step", "embed": "step", "mlp_hidden": "mlp_step", "heads": "head_step",
               "qk_dim": "head_dim_step", "v_dim": "head_dim_step", "head_dim": "head_dim_step"}


@dataclass(frozen=True)
class Options:
    """Every `build_spec` option a family may need (module names instead of modules)."""

    step: int = 8
    mlp_step: int | None = None
    head_step: int = 1
    head_dim_step: int | None = None
    ignore: tuple[str, ...] = ()
    heads: Mapping[str, int] = field(default_factory=dict)

    def granularity(self, kind: str) -> int:
        value = getattr(self, STEP_OPTION.get(kind, "step"))
        return self.step if value is None else value


@dataclass
class DimInfo:
    """One prunable width: `kind` is channels, embed, mlp_hidden, heads, qk_dim, v_dim or head_dim."""

    name: str
    width: int
    kind: str
    space: int
    pinned: str | None = None
    site: str | None = None
    layers: tuple[str, ...] = ()      # layers whose outputs it sizes (conv, linear, norm), in forward order


@dataclass(frozen=True)
class LayerWidths:
    """A conv, linear or norm layer and the widths of its output and input channels (dims: None when fixed)."""

    name: str
    kind: str
    out_dims: tuple[str | None, ...]
    in_dims: tuple[str | None, ...]
    out_layout: Layout
    in_layout: Layout

    @property
    def out_dim(self) -> str | None:
        return self.out_dims[0] if len(self.out_dims) == 1 else None

    @property
    def in_dim(self) -> str | None:
        return self.in_dims[0] if len(self.in_dims) == 1 else None

    @property
    def out_width(self) -> int:
        return sum(s.width for s in self.out_layout)

    @property
    def in_width(self) -> int:
        return sum(s.width for s in self.in_layout)


@dataclass
class Structure:
    """A recognised model: its trace, dims, attention sites and residual blocks."""

    family: str
    trace: Trace
    dims: list[DimInfo]
    dim_of: dict[int, str]
    sites: dict[str, SiteHandler]
    residual: list[ResidualBlock]
    notes: list[str] = field(default_factory=list)

    @property
    def spaces(self) -> Spaces:
        return self.trace.spaces

    def sizes(self, kept: Mapping[str, int] | None = None) -> Sizes:
        return Sizes(self.spaces, self.dim_of, kept or {})

    def dim(self, name: str) -> DimInfo:
        return next(d for d in self.dims if d.name == name)

    def atomic_ops(self) -> list[OpRecord]:
        return [op for op in self.trace.ops if op.module is not None]

    def layers(self) -> list[LayerWidths]:
        """Every conv, linear and norm layer (first call), with the dims of its output and input channels."""
        sizes = self.sizes()
        out = []
        for op in self.atomic_ops():
            if not op.first_call or type(op.handler) not in (ConvHandler, LinearHandler, NormHandler):
                continue
            x, y = op.inputs[0], op.output
            m = op.module
            if isinstance(m, nn.Linear):
                in_layout = x.layout if x.layout is not None and x.axis == len(x.shape) - 1 else \
                    ((_fixed(m.in_features)))
            elif isinstance(op.handler, ConvHandler):
                in_layout = x.layout if x.layout is not None and x.axis == 1 else _fixed(m.in_channels)
            else:
                in_layout = y.layout if y.layout is not None else _fixed(y.shape[y.axis or 0])
            out_layout = y.layout if y.layout is not None else _fixed(y.shape[-1 if isinstance(m, nn.Linear) else 1])
            out.append(LayerWidths(op.name, type(m).__name__, tuple(sizes.dim(s.space) for s in out_layout),
                                   tuple(sizes.dim(s.space) for s in in_layout), out_layout, in_layout))
        return out


def _fixed(width: int) -> Layout:
    return fixed(width)


def module_names(model: nn.Module, modules: Sequence[Any], what: str) -> list[str]:
    """Names of `modules` (modules or names) in `model`; a bad entry is a ValueError naming `what[i]`."""
    names = {m: n for n, m in model.named_modules()}
    known = set(names.values())
    out = []
    for i, m in enumerate(modules):
        name = m if isinstance(m, str) and m in known else names.get(m) if isinstance(m, nn.Module) else None
        if name is None:
            raise ValueError(f"{what}[{i}]: {type(m).__name__} {m if isinstance(m, str) else ''} is not a submodule "
                             "of the model".replace("  ", " "))
        out.append(name)
    return out

