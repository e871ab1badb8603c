"""`PruningHandle`: turn a solved spec back into a physically slimmed copy of the model."""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import torch
from torch import nn

from mdp_opt.result import Result
from mdp_opt.spec import Spec

from .checks import check_result_for
from .graph import ChannelDim, dependency_graph


@dataclass(frozen=True)
class LayerWidths:
    """A conv, linear or BN layer and the dims that size its output and input channels (None: fixed)."""

    name: str
    kind: str
    out_dim: str | None
    in_dim: str | None
    out_width: int
    in_width: int


class PruningHandle:
    """Made by `build_spec`; keeps what is needed to slim the model for any result of the spec."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, spec: Spec, dims: list[ChannelDim],
                 orders: dict[str, np.ndarray], blocks: list[str], layers: list[LayerWidths]) -> None:
        self.model = model
        self.example_input = example_input
        self.spec = spec
        self.dims = {d.name: d for d in dims}
        self.orders = orders
        self.blocks = list(blocks)
        self.layers = list(layers)

    def kept_channels(self, result: Result) -> dict[str, np.ndarray]:
        """Dim name -> indices (in its root layer's coordinates) of the channels `apply` keeps, best first."""
        self._check(result)
        return {name: self.orders[name][:k] for name, k in result.kept.items() if k > 0}

    def apply(self, result: Result) -> nn.Module:
        """A new model with each dim cut to its kept channels and each removed block replaced by the identity.

        The user's model is not modified. Channels are kept by decreasing importance, in the same
        ranking the objective was built from.
        """
        self._check(result)
        flags = {n: m.training for n, m in self.model.named_modules()}
        small = copy.deepcopy(self.model)
        for block, active in result.active.items():
            if not active:
                small.set_submodule(block, nn.Identity())
        graph = dependency_graph(small, self.example_input)
        modules = dict(small.named_modules())
        for name, k in result.kept.items():
            dim = self.dims[name]
            if k == 0 or k == dim.width:
                continue
            root = next((n for n in dim.producers if n in modules and modules[n] in graph.module2node), None)
            if root is None:
                raise RuntimeError(f"dim {name}: none of its layers {sorted(dim.producers)} is left in the model, "
                                   f"yet the result keeps {k} channels")
            keep = set(self.orders[name][:k].tolist())
            drop = [i for i, r in enumerate(dim.producers[root]) if r not in keep]
            pruner = graph.get_pruner_of_module(modules[root])
            graph.get_pruning_group(modules[root], pruner.prune_out_channels, drop).prune()
        self._check_runs(small)
        for n, m in small.named_modules():
            m.training = flags.get(n, self.model.training)
        self._check_widths(small, result)
        return small

    def describe(self, result: Result, file: TextIO | None = None) -> str:
        """Print (to `file`, default stdout) and return a per-layer table: original -> kept channels, removed blocks."""
        self._check(result)
        removed = [b for b, a in result.active.items() if not a]
        rows = [("layer", "type", "out channels", "in channels")]
        for layer in self.layers:
            if any(layer.name.startswith(b + ".") for b in removed):
                continue
            out_k, in_k = self._kept(layer.out_dim, layer.out_width, result), self._kept(layer.in_dim, layer.in_width,
                                                                                          result)
            rows.append((layer.name, layer.kind, _change(layer.out_width, out_k), _change(layer.in_width, in_k)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"blocks: {len(self.blocks) - len(removed)}/{len(self.blocks)} kept"
                     + (f"; removed (now identity): {', '.join(removed)}" if removed else ""))
        lines.append("costs: " + ", ".join(f"{r} {c:.6g} ({100 * c / f:.1f}% of {f:.6g})" if f else f"{r} {c:.6g}"
                                           for (r, c), f in zip(result.costs.items(),
                                                                (self.spec.full_costs()[r] for r in result.costs))))
        text = "\n".join(lines)
        print(text, file=file or sys.stdout)
        return text

    # ---- internals -------------------------------------------------------------------------------
    @staticmethod
    def _kept(dim: str | None, width: int, result: Result) -> int:
        return width if dim is None else result.kept[dim]

    def _check(self, result: Result) -> None:
        check_result_for(self.spec, result, "build_spec")

    def _check_runs(self, small: nn.Module) -> None:
        """Run the slimmed model (in eval mode) once on the example input."""
        small.eval()
        try:
            with torch.no_grad():
                small(self.example_input)
        except RuntimeError as e:
            raise RuntimeError(f"the slimmed model fails on the example input ({e}); a shape hard-coded in the "
                               "forward pass cannot change: pin the layers that produce it with ignore=") from e

    def _check_widths(self, small: nn.Module, result: Result) -> None:
        modules = dict(small.named_modules())
        removed = [b for b, a in result.active.items() if not a]
        for layer in self.layers:
            if any(layer.name.startswith(b + ".") for b in removed):
                continue
            got = _widths(modules[layer.name])
            want = (self._kept(layer.out_dim, layer.out_width, result),
                    self._kept(layer.in_dim, layer.in_width, result))
            if got != want:
                raise RuntimeError(f"{layer.name}: slimmed to (out, in) = {got} channels, but the result says {want}")


def _widths(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Linear):
        return m.out_features, m.in_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.num_features, m.num_features
    return m.out_channels, m.in_channels


def _change(before: int, after: int) -> str:
    return str(before) if before == after else f"{before} -> {after}"
