"""`build_spec`: a PyTorch model -> an mdp-opt `Spec` plus a `PruningHandle` to slim the model."""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from mdp_opt.spec import Dim, Spec, Term

from .apply import LayerWidths, PruningHandle
from .blocks import find_blocks
from .graph import CHANNEL_LAYERS, ChannelDim, coupled_dims, dependency_graph
from .handlers import UnsupportedModelError, Workload, handler_for
from .checks import calibrate_if_measured, calibration_costs, check_build_arguments
from .importance import dim_importance, normalized, objective_terms, scored_layers, taylor_scores, user_scores
from .importance_check import scores_by_halves, with_importance_check
from .latency import MeasuredLatency
from .trace import OpRecord, Trace, record_forward
from .vit import build_vit_spec
from .vit_structure import has_attention

LatencyArg = Union[str, MeasuredLatency, Callable[[Workload], float]]
MinChannels = Union[int, float]


def build_spec(model: nn.Module, example_input: torch.Tensor, *, data: Iterable[Any] | None = None,
               loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
               importance: Mapping[Any, Any] | None = None, latency: LatencyArg = "measure",
               costs: Sequence[str] = ("latency",), step: int = 8,
               min_channels: MinChannels | Mapping[nn.Module, MinChannels] = 1,
               ignore: Sequence[nn.Module] = (), blocks: str | Sequence[nn.Module] | None = "auto",
               name: str | None = None) -> tuple[Spec, PruningHandle]:
    """Turn `model` into a pruning spec and a handle that applies a solution.

    Args:
        model: the trained network (left unmodified).
        example_input: one input batch; its device, dtype and batch size are those timed.
        data, loss_fn: `(inputs, targets)` batches and `loss_fn(outputs, targets)` for first-order
            Taylor importance (scaled so the unpruned model is worth 1); or give `importance`
            instead: {layer (module or name): per-output-channel scores} for conv/linear/BN layers.
        latency: "measure" (timed on the device of `example_input`, cached on disk, then calibrated
            against whole models; or a configured `MeasuredLatency(...)`, e.g. with calibrate=False),
            "flops" (multiply-accumulates as the latency), or a callable `fn(workload) -> cost`
            called once per layer and width choice.
        costs: the resources to put in the spec, any of "latency", "flops" (multiply-accumulates of
            conv and linear layers, exact), "params" (parameter count, exact).
        step: channel granularity; kept counts are multiples of `step` (or the full width), never 0.
        min_channels: the fewest channels a layer keeps: a count, a fraction of its width in (0, 1),
            or {layer: count or fraction} (others default to 1).
        ignore: layers whose output channels are never pruned.
        blocks: "auto" (residual blocks x + f(x) with no shape change may be removed), a list of
            modules, or None.
        name: the spec's name (default: the model's class name).

    Returns `(spec, handle)`: solve the spec with `mdp_opt.solve`, then `handle.apply(result)`.
    Models with attention modules are handed to `build_vit_spec`.
    """
    _check_arguments(model, example_input, data, loss_fn, importance, latency, costs, step)
    if isinstance(latency, str) and latency == "measure":
        latency = MeasuredLatency()
    if has_attention(model):   # vision transformers: heads, head dims, MLP and embedding dims (see vit.py)
        return build_vit_spec(model, example_input, data=data, loss_fn=loss_fn, importance=importance,
                              latency=latency, costs=costs, step=step, min_channels=min_channels, ignore=ignore,
                              blocks=blocks, name=name)
    work = copy.deepcopy(model)
    dims = coupled_dims(work, dependency_graph(work, example_input))
    out_labels = _out_labels(dims)
    trace = record_forward(work, example_input, out_labels)
    _check_trace(work, trace, dims)
    block_names = find_blocks(model, trace, blocks)
    block_of = _block_lookup(block_names)
    pinned = _pinned(model, trace, out_labels, ignore)
    choices = {d.name: _choices(d, step, _dim_minimum(model, d, min_channels), d.name in pinned) for d in dims}
    spec_dims = tuple(Dim(d.name, choices[d.name]) for d in dims)

    scoring = None
    if importance is not None:
        prunable = [d for d in dims if len(choices[d.name]) > 1]
        scores = user_scores(model, importance, out_labels, prunable)
    else:
        scorer = copy.deepcopy(model)
        layers = scored_layers(scorer, dims)
        scoring = scores_by_halves(lambda batches: taylor_scores(scorer, layers, batches, loss_fn), data)
        scores = normalized(scoring.totals)
        del scorer
    dim_imps = {d.name: dim_importance(d, scores, block_of) for d in dims}
    objective = [t for d in dims for t in objective_terms(d.name, choices[d.name], dim_imps[d.name])]

    cost_terms = _cost_terms(work, trace, choices, block_names, calibration_costs(costs, latency), latency,
                             example_input)
    spec = Spec(dims=spec_dims, objective=tuple(objective), costs=cost_terms, blocks=tuple(block_names),
                name=name or type(model).__name__,
                meta={"source": "mdp_opt.adapters.torch", "model": type(model).__name__, "step": step,
                      "latency": _describe_latency(latency), "input_shape": list(example_input.shape),
                      "pinned": pinned})
    spec = with_importance_check(spec, scores, scoring)
    handle = PruningHandle(model, example_input, spec, dims, {n: imp.order for n, imp in dim_imps.items()},
                           block_names, _layers(trace))
    return calibrate_if_measured(spec, handle, latency, costs, example_input), handle


# ---- checks ---------------------------------------------------------------------------------------

def _check_arguments(model: Any, example_input: Any, data: Any, loss_fn: Any, importance: Any, latency: Any,
                     costs: Any, step: Any) -> None:
    check_build_arguments(model, example_input, data, loss_fn, importance, latency, costs,
                          "{layer: per-channel scores}")
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"step: expected a positive integer channel granularity, got {step!r}")


def _out_labels(dims: list[ChannelDim]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for d in dims:
        for layer in d.producers:
            if labels.setdefault(layer, d.name) != d.name:
                raise UnsupportedModelError(f"{layer}: its output channels belong to two groups ({labels[layer]}, "
                                            f"{d.name}); split or concatenated outputs are not supported")
    return labels


def _check_trace(model: nn.Module, trace: Trace, dims: list[ChannelDim]) -> None:
    """Every layer supported, and the traced input dim of each conv/linear agrees with Torch-Pruning's graph."""
    for name, m in model.named_modules():
        if any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False)):
            raise UnsupportedModelError(f"{name or 'model'}: has parameters outside its leaf modules; "
                                        "this adapter handles parameters in leaf layers only")
    reads = {c: d.name for d in dims for c in d.consumers}
    for op in trace.ops:
        handler_for(op).check(op)
        if isinstance(op.module, CHANNEL_LAYERS):
            depthwise = op.inputs[0].label == op.output.label and op.output.label is not None
            expected = op.output.label if depthwise else reads.get(op.name)
            if op.inputs[0].label != expected:
                raise UnsupportedModelError(
                    f"{op.name}: cannot follow its input channels through the forward pass "
                    f"(traced {op.inputs[0].label}, dependency graph {expected}); channels concatenated, split "
                    "or flattened into another axis are not supported: pin the layers that produce them with ignore=")


def _block_lookup(block_names: list[str]) -> Callable[[str], str | None]:
    def block_of(layer: str) -> str | None:
        return next((b for b in block_names if layer.startswith(b + ".")), None)
    return block_of


def _pinned(model: nn.Module, trace: Trace, out_labels: Mapping[str, str], ignore: Sequence[nn.Module]
            ) -> dict[str, str]:
    """Dim name -> why it keeps its full width."""
    names = {m: n for n, m in model.named_modules()}
    pinned: dict[str, str] = {}
    for slot in trace.outputs:
        if slot.label is not None:
            pinned[slot.label] = "model output"
    for op in trace.ops:
        for label in handler_for(op).pinned_labels(op):
            if label is not None:
                pinned.setdefault(label, f"{op.name}: {type(op.module).__name__} keeps its width")
    for i, m in enumerate(ignore):
        name = names.get(m)
        if name is None:
            raise ValueError(f"ignore[{i}]: {type(m).__name__} is not a submodule of the model")
        if name not in out_labels:
            raise ValueError(f"ignore[{i}] ({name}): its output channels are not prunable (not a conv, linear or BN "
                             "layer in the dependency graph)")
        pinned.setdefault(out_labels[name], f"ignore={name}")
    return pinned


def _dim_minimum(model: nn.Module, dim: ChannelDim, min_channels: Any) -> int:
    def as_count(value: Any, width: int, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a channel count or a fraction in (0, 1), got {value!r}")
        if isinstance(value, float):
            if not 0 < value < 1:
                raise ValueError(f"{where}: a fraction must be in (0, 1), got {value}; give counts as integers")
            return int(np.ceil(value * width))
        if value < 1:
            raise ValueError(f"{where}: expected at least 1 channel, got {value}")
        return value

    if not isinstance(min_channels, Mapping):
        return as_count(min_channels, dim.width, "min_channels")
    names = {m: n for n, m in model.named_modules()}
    lows = [1]
    for m, value in min_channels.items():
        name = names.get(m) if isinstance(m, nn.Module) else m
        if name in dim.producers:
            lows.append(as_count(value, dim.width, f"min_channels[{name}]"))
    return max(lows)


def _choices(dim: ChannelDim, step: int, minimum: int, pinned: bool) -> tuple[int, ...]:
    if pinned or minimum >= dim.width:
        return (dim.width,)
    counts = [k for k in range(step, dim.width, step) if k >= minimum] + [dim.width]
    return tuple(counts)


# ---- cost terms ----------------------------------------------------------------------------------

def _cost_terms(model: nn.Module, trace: Trace, choices: Mapping[str, tuple[int, ...]], block_names: list[str],
                costs: Sequence[str], latency: LatencyArg, example_input: torch.Tensor) -> dict[str, list[Term]]:
    """One table per operation over the choices of the dims sizing it, summed per (dims, block)."""
    blocks = set(block_names)
    entries: list[tuple[OpRecord, tuple[str, ...], tuple[int, ...], str | None, slice]] = []
    workloads: list[Workload] = []
    for op in trace.ops:
        handler = handler_for(op)
        labels = tuple(dict.fromkeys(lab for lab in handler.labels(op) if lab is not None))
        grid = [choices[lab] for lab in labels]
        start = len(workloads)
        workloads.extend(handler.workload(op, dict(zip(labels, combo))) for combo in itertools.product(*grid))
        block = next((s for s in op.scope if s in blocks), None)
        entries.append((op, labels, tuple(len(g) for g in grid), block, slice(start, len(workloads))))

    values: dict[str, np.ndarray] = {}
    for resource in costs:
        if resource == "flops" or (resource == "latency" and latency == "flops"):
            values[resource] = np.array([w.macs for w in workloads], dtype=np.float64)
        elif resource == "params":
            first = np.zeros(len(workloads), dtype=bool)
            for op, _, _, _, span in entries:
                first[span] = op.first_call
            values[resource] = np.where(first, [w.params for w in workloads], 0).astype(np.float64)
        else:
            values[resource] = _latencies(workloads, latency, example_input)

    out: dict[str, list[Term]] = {}
    for resource, vals in values.items():
        tables: dict[tuple[tuple[str, ...], str | None], np.ndarray] = {}
        for op, labels, shape, block, span in entries:
            table = vals[span].reshape(shape)
            if resource != "latency" and not table.any():
                continue
            key = (labels, block)
            tables[key] = tables[key] + table if key in tables else table
        if resource == "params":
            for (labels, block), table in _unused_parameters(model, trace, block_names).items():
                tables[(labels, block)] = tables.get((labels, block), 0) + table
        out[resource] = [Term(labels, table, block) for (labels, block), table in tables.items()]
    return out


def _latencies(workloads: list[Workload], latency: LatencyArg, example_input: torch.Tensor) -> np.ndarray:
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


def _unused_parameters(model: nn.Module, trace: Trace, block_names: list[str]
                       ) -> dict[tuple[tuple[str, ...], str | None], np.ndarray]:
    """Parameters of leaf modules that never ran: they stay as they are (a constant per block)."""
    block_of = _block_lookup(block_names)
    out: dict[tuple[tuple[str, ...], str | None], np.ndarray] = {}
    for name, m in model.named_modules():
        count = sum(p.numel() for p in m.parameters(recurse=False))
        if count and name not in trace.leaf_names:
            key = ((), block_of(name))
            out[key] = out.get(key, np.array(0.0)) + float(count)
    return out


def _layers(trace: Trace) -> list[LayerWidths]:
    layers = []
    for op in trace.ops:
        if op.first_call and isinstance(op.module, CHANNEL_LAYERS + (nn.modules.batchnorm._BatchNorm,)):
            x, y = op.inputs[0], op.output
            layers.append(LayerWidths(op.name, type(op.module).__name__, y.label, x.label,
                                      y.shape[y.axis], x.shape[x.axis]))
    return layers


def _describe_latency(latency: LatencyArg) -> str:
    if isinstance(latency, MeasuredLatency):
        return (f"measured (threads={latency.threads}, repeats={latency.repeats}"
                + (f", calibrated: {latency.calibrate})" if latency.calibrate else ")"))
    if isinstance(latency, str):
        return latency
    return f"callable {getattr(latency, '__qualname__', type(latency).__name__)}"
