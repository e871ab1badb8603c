"""Importance of every dim's units, and the shares of it each block owns.

Channel dims use MDP's first-order Taylor score on the layers whose outputs they size (the
affine norms when there are any, else the convolution / Linear layers), computed by
`importance.taylor_scores`. Attention dims use the same criterion on the attention's
projections (see `AttentionSite`): a head scores its q, k, v rows and output columns; a
channel per head scores those rows in every head, squared per head and summed. Scores are
scaled so the unpruned model is worth 1. A layer's share of a dim goes to the block that
removes it, so removing a block removes exactly its share.

Under torch.distributed the Taylor scores of every rank's batches are summed before they are scaled
(`distributed.sum_scoring`), so every rank holds the importance of the union of the batches.

Or the user gives `importance=`: per dim name, one score per unit; or per layer (module or
name), one score per output channel.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .attention import SiteHandler
from .blocks import Gate
from .distributed import collectively, sum_scoring
from .handlers import ConvHandler, LinearHandler, NormHandler
from .importance import DimImportance, batch_losses, normalized, taylor_scores
from .importance_check import Scoring, scores_by_halves
from .layout import positions
from .structure import Structure


def scored_layers(structure: Structure) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Dim -> (layer, positions in the layer's output, units of the dim) for the layers that score it."""
    per_dim: dict[str, list[tuple[str, np.ndarray, np.ndarray, bool]]] = {}
    for op in structure.atomic_ops():
        if not op.first_call or op.output.layout is None:
            continue
        norm = type(op.handler) is NormHandler and getattr(op.module, "weight", None) is not None
        if not (norm or isinstance(op.handler, (ConvHandler, LinearHandler))):
            continue
        for dim, pairs in positions(op.output.layout, structure.spaces, structure.dim_of).items():
            pos, units = (np.array(v) for v in zip(*pairs))
            per_dim.setdefault(dim, []).append((op.name, pos, units, norm))
    out = {}
    for dim, layers in per_dim.items():
        norms = [entry for entry in layers if entry[3]]
        out[dim] = [(name, pos, units) for name, pos, units, _ in (norms or layers)]
    return out


def dim_importances(structure: Structure, model: nn.Module, gates: Iterable[Gate], prunable: set[str],
                    data: Iterable[Any] | None, loss_fn: Callable[[Any, Any], torch.Tensor] | None,
                    importance: Mapping[Any, Any] | None
                    ) -> tuple[dict[str, DimImportance], dict[str, np.ndarray], Scoring | None]:
    """Per dim: its units by decreasing total score, and each block's share (None: outside every block);
    with the per-layer (or per-unit) scores and, for Taylor scores, how they split over the data's two
    halves (for `importance_check`)."""
    layers = scored_layers(structure)
    if importance is not None:
        gate_of = _gate_of(gates)
        ops = {op.name: op for op in structure.atomic_ops() if op.first_call}
        shares = _Shares(structure)
        by_layer, by_dim = _given(structure, model, importance, layers, prunable)
        scores = {**by_dim, **by_layer}
        for dim, values in by_dim.items():
            shares.add(dim, _home(structure, dim, ops, gate_of), np.arange(len(values)), values)
        for layer, values in by_layer.items():
            for dim, pairs in positions(ops[layer].output.layout, structure.spaces, structure.dim_of).items():
                pos, units = (np.array(v) for v in zip(*pairs))
                shares.add(dim, gate_of.get(ops[layer].index), units, values[pos])
        return shares.importances(), scores, None
    names = sorted({name for entries in layers.values() for name, _, _ in entries})

    def score(batches: list[Any]) -> dict[str, np.ndarray]:
        return {**{f"layer:{k}": v for k, v in taylor_scores(model, names, batches, loss_fn).items()},
                **{f"site:{k}": v for k, v in _site_scores(model, structure.sites, batches, loss_fn).items()}}

    scoring = sum_scoring(collectively(lambda: scores_by_halves(score, data)))   # every rank's batches
    scaled = normalized(scoring.totals)
    return taylor_importances(structure, gates, scaled), scaled, scoring


def taylor_importances(structure: Structure, gates: Iterable[Gate], scores: Mapping[str, np.ndarray]
                       ) -> dict[str, DimImportance]:
    """Per dim: its units by decreasing total score and each block's share, from Taylor scores keyed as
    `build_spec` computes them (`layer:<name>` per output channel of every layer of `scored_layers`,
    `site:<site>.<kind>` per unit of an attention site); a key that is missing scores zero."""
    gate_of = _gate_of(gates)
    ops = {op.name: op for op in structure.atomic_ops() if op.first_call}
    site_dims = {d.name: d for d in structure.dims if d.site is not None}
    shares = _Shares(structure)
    add = shares.add
    for dim, entries in scored_layers(structure).items():
        if dim in site_dims:
            continue
        for name, pos, units in entries:
            key = f"layer:{name}"
            add(dim, gate_of.get(ops[name].index), units, scores[key][pos] if key in scores else 0.0)
    for dim in site_dims.values():
        handler = structure.sites[dim.site]
        kind = next(k for k, s in handler.spaces.items() if structure.dim_of[structure.spaces.find(s)] == dim.name)
        key = f"site:{dim.site}.{kind}"
        add(dim.name, gate_of.get(ops[dim.site].index), np.arange(dim.width), scores[key] if key in scores else 0.0)
    return shares.importances()


def _gate_of(gates: Iterable[Gate]) -> dict[int, str]:
    """Op index -> the gate (block or branch) it belongs to; a branch's gate over its block's."""
    gate_of: dict[int, str] = {}
    for g in sorted(gates, key=lambda g: g.branch is not None):
        for i in g.ops:
            gate_of[i] = g.name
    return gate_of


class _Shares:
    """Per dim, each gate's share (None: outside every gate) of every unit's score."""

    def __init__(self, structure: Structure) -> None:
        self.structure = structure
        self.by_dim: dict[str, dict[str | None, np.ndarray]] = {d.name: {} for d in structure.dims}

    def add(self, dim: str, gate: str | None, units: np.ndarray, values: Any) -> None:
        share = self.by_dim[dim].setdefault(gate, np.zeros(self.structure.dim(dim).width))
        np.add.at(share, units, values)

    def importances(self) -> dict[str, DimImportance]:
        """Per dim: its units by decreasing total score, and each gate's share."""
        out = {}
        for d in self.structure.dims:
            total = sum(self.by_dim[d.name].values(), np.zeros(d.width))
            out[d.name] = DimImportance(np.argsort(-total, kind="stable"), self.by_dim[d.name])
        return out


def score_name(key: str) -> str:
    """The name a scored unit is shown under: its layer, attention part or dim (without the key's prefix)."""
    return key.split(":", 1)[1] if key.startswith(("layer:", "site:")) else key


def _home(structure: Structure, dim: str, ops: Mapping[str, Any], gate_of: Mapping[int, str]) -> str | None:
    """The block a dim lives in (all its layers, or its attention, inside it), else None."""
    info = structure.dim(dim)
    names = [info.site] if info.site else list(info.layers)
    gates = {gate_of.get(ops[n].index) for n in names if n in ops}
    return gates.pop() if len(gates) == 1 else None


def _given(structure: Structure, model: nn.Module, importance: Mapping[Any, Any],
           layers: Mapping[str, list[tuple[str, np.ndarray, np.ndarray]]], prunable: set[str]
           ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Check user scores: {dim name: per-unit scores} or {layer (module or name): per-output-channel scores}."""
    names = {m: n for n, m in model.named_modules()}
    widths = {d.name: d.width for d in structure.dims}
    producing = {op.name: op for op in structure.atomic_ops() if op.first_call and op.output.layout is not None}
    by_layer: dict[str, np.ndarray] = {}
    by_dim: dict[str, np.ndarray] = {}
    for key, scores in importance.items():
        arr = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
        if isinstance(key, str) and key in widths:
            if arr.shape != (widths[key],) or not np.all(np.isfinite(arr)):
                raise ValueError(f"importance[{key!r}]: expected {widths[key]} finite scores, got shape {arr.shape}")
            by_dim[key] = arr
            continue
        name = key if isinstance(key, str) else names.get(key)
        if name is None or name not in names.values():
            raise ValueError(f"importance: {key!r} is neither a dim of this model (such as "
                             f"{sorted(widths)[:3]}) nor a submodule")
        if name not in producing:
            raise ValueError(f"importance[{name}]: this layer's output channels are not prunable; give scores "
                             "for conv, linear or norm layers whose outputs can be pruned, or per dim name")
        expected = producing[name].output.shape[producing[name].output.axis]
        if arr.shape != (expected,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"importance[{name}]: expected {expected} finite scores (one per output channel), "
                             f"got shape {arr.shape}")
        by_layer[name] = arr
    covered = set(by_dim) | {dim for n in by_layer
                             for dim in positions(producing[n].output.layout, structure.spaces, structure.dim_of)}
    for d in structure.dims:
        if d.name in prunable and d.name not in covered:
            where = f"layers {sorted(d.layers)}" if d.layers else f"attention {d.site}"
            raise ValueError(f"importance: no scores for dim {d.name} ({where}); give scores for it (by dim name or "
                             "for one of its layers), or pin it with ignore=")
    return by_layer, by_dim


def _site_scores(model: nn.Module, sites: Mapping[str, SiteHandler], data: Iterable[Any] | None,
                 loss_fn: Callable[[Any, Any], torch.Tensor] | None) -> dict[str, np.ndarray]:
    """`<site>.<kind>` -> per-unit Taylor scores of every attention site (empty without sites)."""
    if not sites:
        return {}
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: no parameter requires gradients, so Taylor importance cannot be computed; "
                         "give importance= instead")
    device = params[0].device
    totals: dict[str, torch.Tensor] = {}
    for loss in batch_losses(model, data, loss_fn, device):
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        products = {id(p): p.detach() * g for p, g in zip(params, grads) if g is not None}

        def value(p: torch.Tensor) -> torch.Tensor:
            return products[id(p)] if id(p) in products else torch.zeros_like(p)

        for key, score in site_batch_scores(model, sites, value).items():
            totals[key] = totals.get(key, 0) + score
    return {k: t.cpu().numpy() for k, t in totals.items()}


def site_batch_scores(model: nn.Module, sites: Mapping[str, SiteHandler],
                      value: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """One batch's Taylor scores of every attention site, `<site>.<kind>` -> per-unit scores (float64), where
    `value(parameter)` is that batch's `parameter * gradient` (zeros for a parameter without gradient). Summed
    over batches, they are the site scores `build_spec` uses."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, handler in sites.items():
            for kind, parts in handler.taylor_parts(model, value).items():
                score = sum(part.double() ** 2 for part in parts)
                if kind != "heads":
                    score = score.sum(dim=0)
                out[f"{name}.{kind}"] = score
    return out
