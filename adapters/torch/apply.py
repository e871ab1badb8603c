"""`PruningHandle`: turn a solved spec back into a physically slimmed copy of the model (every family)."""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence, TextIO

import numpy as np
import torch
from torch import nn

from mdp_opt import Result, Spec

from .attention import REPLACE
from .blocks import Gate
from .checks import check_result_for
from .latency import eval_mode
from .modules import PrunedAttention
from .structure import DimInfo, LayerWidths, Structure


class PruningHandle:
    """Made by `build_spec`; keeps what is needed to slim the model for any result of the spec.

    `dims` (name -> DimInfo: width, kind, layers), `layers` (conv/linear/norm layers and the dims
    sizing them), `blocks` (the spec's removable units) and `structure` describe what was found.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, spec: Spec, family: Any,
                 structure: Structure, orders: Mapping[str, np.ndarray], gates: Sequence[Gate]) -> None:
        self.model = model
        self.example_input = example_input
        self.spec = spec
        self.family = family
        self.structure = structure
        self.orders = dict(orders)
        self.gates = list(gates)
        self.dims: dict[str, DimInfo] = {d.name: d for d in structure.dims}
        self.layers: list[LayerWidths] = structure.layers()
        self.blocks = [g.name for g in gates]

    def kept_channels(self, result: Result) -> dict[str, np.ndarray]:
        """Dim name -> the units (channels, heads, channels per head) `apply` keeps, best first."""
        self._check(result)
        return {name: self.orders[name][:k] for name, k in result.kept.items() if k > 0}

    def apply(self, result: Result) -> nn.Module:
        """A new model with each dim cut to its kept units and each removed block gone.

        The user's model is not modified. Units are kept by decreasing importance, in the same
        ranking the objective was built from. A removed residual block becomes the identity; a
        removed branch (an attention or MLP half) returns zeros and its pre-norm becomes the identity.
        Recognised plain attentions become `PrunedAttention`s; others are sliced in place.
        """
        self._check(result)
        kept = {name: torch.as_tensor(np.sort(self.orders[name][:k]), dtype=torch.long)
                for name, k in result.kept.items() if 0 < k < self.dims[name].width}
        removed = [g for g in self.gates if not result.active[g.name]]
        small = self.family.apply(self.model, self.structure, kept, removed)
        self._check_runs(small)
        self._check_widths(small, result)
        return small

    def describe(self, result: Result, file: TextIO | None = None) -> str:
        """Print (to `file`, default stdout) and return a table: per layer original -> kept channels, per attention
        original -> kept heads and channels per head, removed blocks, pinned widths and costs."""
        self._check(result)
        removed = [b for b, a in result.active.items() if not a]
        gone = self._gone(result)

        def change(full: int, kept: int) -> str:
            return str(full) if full == kept else f"{full} -> {kept}"

        rows = [("layer", "type", "out channels", "in channels")]
        for layer in self.layers:
            if gone(layer.name):
                continue
            rows.append((layer.name, layer.kind, change(layer.out_width, self._width(layer.out_layout, result)),
                         change(layer.in_width, self._width(layer.in_layout, result))))
        lines = _table(rows)
        sites = [(n, h) for n, h in self.structure.sites.items() if not gone(n)]
        if sites:
            attn = [("attention", "slimmed", "heads", "q/k dim", "v dim")]
            for name, handler in sites:
                widths = {k: (handler.site.width(k), result.kept[self._dim_of(handler, k)]) for k in handler.site.kinds}
                qk = widths.get("qk_dim", widths.get("head_dim"))
                v = widths.get("v_dim", widths.get("head_dim"))
                attn.append((name, "replaced" if handler.site.mode == REPLACE else "in place",
                             change(*widths["heads"]), change(*qk), change(*v)))
            lines += [""] + _table(attn)
        pinned = self.spec.meta.get("pinned", {})
        if pinned:
            names = list(pinned)
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            lines.append(f"kept at full width: {shown} (spec.meta['pinned'] says why)")
        lines.append(f"blocks: {len(self.gates) - len(removed)}/{len(self.gates)} kept"
                     + (f"; removed (now identity): {', '.join(removed)}" if removed else ""))
        full = self.spec.full_costs()
        lines.append("costs: " + ", ".join(f"{r} {c:.6g} ({100 * c / full[r]:.1f}% of {full[r]:.6g})" if full[r]
                                           else f"{r} {c:.6g}" for r, c in result.costs.items()))
        text = "\n".join(lines)
        print(text, file=file or sys.stdout)
        return text

    # ---- internals -------------------------------------------------------------------------------
    def _dim_of(self, handler: Any, kind: str) -> str:
        return self.structure.dim_of[self.structure.spaces.find(handler.spaces[kind])]

    def _width(self, layout: Any, result: Result) -> int:
        return self.structure.sizes(dict(result.kept)).width(layout)

    def _gone(self, result: Result):
        units = [g.branch.module if g.branch is not None else g.name for g in self.gates if not result.active[g.name]]
        units += [g.branch.norm for g in self.gates if not result.active[g.name] and g.branch is not None
                  and g.branch.norm]
        return lambda name: any(name == u or name.startswith(u + ".") for u in units)

    def _check(self, result: Result) -> None:
        check_result_for(self.spec, result, "build_spec")

    def _check_runs(self, small: nn.Module) -> None:
        """Run the slimmed model (in eval mode) once on the example input."""
        try:
            with torch.no_grad(), eval_mode(small):
                small(self.example_input)
        except (RuntimeError, ValueError, IndexError) as e:
            raise RuntimeError(f"the slimmed model fails on the example input ({e}); a width that the forward pass "
                               "hard-codes cannot change: pin the layers that produce it with ignore=") from e

    def _check_widths(self, small: nn.Module, result: Result) -> None:
        modules = dict(small.named_modules())
        gone = self._gone(result)
        for layer in self.layers:
            if gone(layer.name):
                continue
            want = (self._width(layer.out_layout, result), self._width(layer.in_layout, result))
            got = _widths(modules[layer.name])
            if got != want:
                raise RuntimeError(f"{layer.name}: slimmed to (out, in) = {got} channels, but the result says {want}")
        for name, handler in self.structure.sites.items():
            if gone(name) or handler.site.mode != REPLACE:
                continue
            attn = modules[name]
            want = tuple(result.kept[self._dim_of(handler, k)] for k in ("heads", "qk_dim", "v_dim"))
            if not isinstance(attn, PrunedAttention) or (attn.num_heads, attn.qk_dim, attn.v_dim) != want:
                raise RuntimeError(f"{name}: slimmed to {attn}, but the result says heads, q/k and v dims {want}")


def _widths(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Linear):
        return m.out_features, m.in_features
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1], m.normalized_shape[-1]
    if isinstance(m, nn.GroupNorm):
        return m.num_channels, m.num_channels
    if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return m.num_features, m.num_features
    return m.out_channels, m.in_channels


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
