"""Cost tables: one table per operation over the choices of the dims sizing it, summed per (dims, block).

Every cost part of every traced operation is evaluated at every combination of its dims'
choices (a `Workload` each: its MACs, its parameters, and, to time it, a runnable stand-in).
A consumer of a concatenation reads several dims, so its table has one axis per dim; when
that grid would exceed `MAX_JOINT` entries (a DenseNet layer reading a dozen earlier layers)
the table is split into a base over the op's own output dims with every input dim at its
smallest choice, plus one increment per input dim. That split is exact for MACs and
parameters (affine in each input width) and a first-order model of latency;
`spec.meta["decomposed"]` lists the operations it was used for.

Parameters used outside layers (layer scale, class token, position embedding) cost their
kept entries; parameters that never ran are a constant. Both follow the block that owns them.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mdp_opt import Term

from .blocks import Gate
from .handlers import Sizes, Workload
from .latency import MeasuredLatency
from .structure import Structure
from .trace import OpRecord

MAX_JOINT = 4096


class _Part:
    """One cost part at a grid of choices: `labels` (dims), the table's shape, its workloads and how to read it."""

    def __init__(self, op: OpRecord, labels: tuple[str, ...], gate: str | None, shape: tuple[int, ...],
                 workloads: list[Workload], combine: Callable[[np.ndarray], list[tuple[tuple[str, ...], np.ndarray]]]
                 ) -> None:
        self.op, self.labels, self.gate, self.shape, self.workloads, self.combine = (op, labels, gate, shape,
                                                                                     workloads, combine)


def cost_terms(family: Any, structure: Structure, model: nn.Module, choices: Mapping[str, tuple[int, ...]],
               gates: Sequence[Gate], costs: Sequence[str], latency: Any, example_input: torch.Tensor
               ) -> tuple[dict[str, tuple[Term, ...]], list[str]]:
    """Cost terms per resource, and the names of the operations whose tables were split (see module doc)."""
    sizes = structure.sizes()
    gate_of: dict[int, str] = {}
    for g in sorted(gates, key=lambda g: g.branch is not None):
        for i in g.ops:
            gate_of[i] = g.name
    parts: list[_Part] = []
    decomposed: list[str] = []
    for op in structure.trace.ops:
        for labels, make in family.cost_parts(structure, op, sizes):
            gate = gate_of.get(op.index)
            grid = [choices[name] for name in labels]
            if math.prod(len(g) for g in grid) <= MAX_JOINT:
                parts.append(_joint(op, labels, grid, make, sizes, gate))
            else:
                parts.append(_split(op, labels, grid, make, sizes, gate, structure))
                decomposed.append(op.name)
    workloads = [w for p in parts for w in p.workloads]
    first = np.concatenate([np.full(len(p.workloads), p.op.first_call) for p in parts]) if parts else np.zeros(0, bool)
    values: dict[str, np.ndarray] = {}
    for resource in costs:
        if resource == "flops" or (resource == "latency" and latency == "flops"):
            values[resource] = np.array([w.macs for w in workloads], dtype=np.float64)
        elif resource == "params":
            values[resource] = np.where(first, [w.params for w in workloads], 0).astype(np.float64)
        elif resource == "activations":
            values[resource] = np.array([w.activations for w in workloads], dtype=np.float64)
        else:
            values[resource] = workload_latencies(workloads, latency, example_input)
    order = {d.name: i for i, d in enumerate(structure.dims)}
    out: dict[str, tuple[Term, ...]] = {}
    for resource, vals in values.items():
        tables: dict[tuple[tuple[str, ...], str | None], np.ndarray] = {}
        start = 0
        for p in parts:
            flat = vals[start:start + len(p.workloads)]
            start += len(p.workloads)
            for dims, table in p.combine(flat):
                if resource != "latency" and not table.any():
                    continue
                _add(tables, dims, p.gate, table, order)
        if resource == "params":
            for (dims, gate), table in _outside_parameters(structure, model, choices, gates).items():
                _add(tables, dims, gate, table, order)
        out[resource] = tuple(Term(dims, table, gate) for (dims, gate), table in tables.items())
    return out, decomposed


def _add(tables: dict, dims: tuple[str, ...], gate: str | None, table: np.ndarray, order: Mapping[str, int]) -> None:
    """Sum `table` into the term over the same dims and block, with its axes in the spec's dim order."""
    perm = sorted(range(len(dims)), key=lambda i: order[dims[i]])
    key = (tuple(dims[i] for i in perm), gate)
    table = np.transpose(np.asarray(table, dtype=np.float64), perm) if dims else np.asarray(table, dtype=np.float64)
    tables[key] = tables[key] + table if key in tables else table


def _joint(op: OpRecord, labels: tuple[str, ...], grid: list[tuple[int, ...]], make: Callable[[Sizes], Workload],
           sizes: Sizes, gate: str | None) -> _Part:
    shape = tuple(len(g) for g in grid)
    workloads = [make(sizes.with_kept(dict(zip(labels, combo)))) for combo in itertools.product(*grid)]
    return _Part(op, labels, gate, shape, workloads, lambda flat: [(labels, flat.reshape(shape))])


def _split(op: OpRecord, labels: tuple[str, ...], grid: list[tuple[int, ...]], make: Callable[[Sizes], Workload],
           sizes: Sizes, gate: str | None, structure: Structure) -> _Part:
    """Base over the op's own output dims (inputs at their smallest choice) plus one increment per input dim."""
    own = set(sizes.dims(op.output.layout)) if op.outputs else set()
    pivot = [i for i, name in enumerate(labels) if name in own]
    rest = [i for i in range(len(labels)) if i not in pivot]
    if not rest:
        pivot, rest = [], list(range(len(labels)))
    low = {labels[i]: grid[i][0] for i in rest}
    pivot_grid = [grid[i] for i in pivot]
    pivot_labels = tuple(labels[i] for i in pivot)
    pivot_shape = tuple(len(g) for g in pivot_grid)
    workloads = [make(sizes.with_kept({**low, **dict(zip(pivot_labels, combo))}))
                 for combo in itertools.product(*pivot_grid)]
    counts = [len(workloads)]
    for i in rest:
        for combo in itertools.product(*pivot_grid, grid[i]):
            widths = {**low, **dict(zip(pivot_labels, combo[:-1])), labels[i]: combo[-1]}
            workloads.append(make(sizes.with_kept(widths)))
        counts.append(len(workloads) - sum(counts))

    def combine(flat: np.ndarray) -> list[tuple[tuple[str, ...], np.ndarray]]:
        base = flat[:counts[0]].reshape(pivot_shape)
        out = [(pivot_labels, base)]
        at = counts[0]
        for i, n in zip(rest, counts[1:]):
            table = flat[at:at + n].reshape(pivot_shape + (len(grid[i]),))
            at += n
            out.append((pivot_labels + (labels[i],), np.maximum(table - base[..., None], 0.0)))
        return out

    return _Part(op, labels, gate, (), workloads, combine)


def workload_latencies(workloads: list[Workload], latency: Any, example_input: torch.Tensor) -> np.ndarray:
    """Latency of each workload: timed by a `MeasuredLatency` on the example input's device, dtype and batch
    size, or `latency(workload)` of a callable (once per distinct key; a finite number >= 0)."""
    if isinstance(latency, MeasuredLatency):
        return np.array(latency(workloads, example_input.device, example_input.dtype, example_input.shape[0]))
    out = np.empty(len(workloads))
    cache: dict[str, float] = {}
    for i, w in enumerate(workloads):
        if w.key not in cache:
            value = latency(w)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"latency: the callable returned {value!r} for {w.key}; "
                                 "expected a finite number >= 0")
            cache[w.key] = float(value)
        out[i] = cache[w.key]
    return out


def _owner_gate(owner: str, gates: Sequence[Gate]) -> str | None:
    for g in sorted(gates, key=lambda g: g.branch is None):
        unit = g.branch.module if g.branch is not None else g.name
        if owner == unit or owner.startswith(unit + "."):
            return g.name
    return None


def _outside_parameters(structure: Structure, model: nn.Module, choices: Mapping[str, tuple[int, ...]],
                        gates: Sequence[Gate]) -> dict[tuple[tuple[str, ...], str | None], np.ndarray]:
    """Parameters used by functions outside layers (their kept entries) and parameters that never ran (constant)."""
    trace = structure.trace
    sizes = structure.sizes()
    atomic = {op.name for op in trace.ops if op.module is not None}
    out: dict[tuple[tuple[str, ...], str | None], np.ndarray] = {}
    layouts: dict[str, dict[int, Any]] = {}
    for s in trace.slots:
        if s.qualified in trace.param_users:
            layouts.setdefault(s.qualified, {})[s.axis] = s.layout
    for name, p in model.named_parameters():
        owner = name.rpartition(".")[0]
        if any(owner == a or owner.startswith(a + ".") for a in atomic):
            continue
        gate = _owner_gate(owner, gates)
        axes = layouts.get(name, {}) if name in trace.param_users else {}
        dims = tuple(dict.fromkeys(d for lay in axes.values() for d in sizes.dims(lay)))
        fixed_part = p.numel() // max(1, math.prod(p.shape[a] for a in axes))
        table = np.zeros(tuple(len(choices[d]) for d in dims))
        for index in itertools.product(*(range(len(choices[d])) for d in dims)):
            s = sizes.with_kept({d: choices[d][i] for d, i in zip(dims, index)})
            table[index] = fixed_part * math.prod(s.width(lay) for lay in axes.values())
        key = (dims, gate)
        out[key] = out.get(key, 0) + table
    return out
