"""`build_spec`: a PyTorch model -> an mdp-opt `Spec` plus a `PruningHandle` to slim the model.

The one entry point for every family (CNNs, concatenations, layer scale, transformers with any
attention layout, hierarchical transformers, hybrids): see `families` for how a model is
recognised, `costs` for the tables, `scores` for importance and `apply` for the handle.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from mdp_opt import Dim, Spec

from .apply import PruningHandle
from .checks import calibrate_if_measured, calibration_costs, check_build_arguments
from .costs import cost_terms
from .distributed import cost_from_rank0, is_distributed, unwrap_ddp
from .families import recognise
from .handlers import Workload
from .importance import objective_terms
from .importance_check import with_importance_check
from .latency import MeasuredLatency
from .probe import hard_coded_widths
from .scores import dim_importances, score_name
from .structure import DimInfo, Options, Structure, module_names

LatencyArg = Union[str, MeasuredLatency, Callable[[Workload], float]]
MinChannels = Union[int, float]
CHANNEL_KINDS = ("channels", "embed", "mlp_hidden")


def build_spec(model: nn.Module, example_input: torch.Tensor, *, data: Iterable[Any] | None = None,
               loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
               importance: Mapping[Any, Any] | str | None = None, latency: LatencyArg = "measure",
               costs: Sequence[str] = ("latency",), step: int = 8, mlp_step: int | None = None, head_step: int = 1,
               head_dim_step: int | None = None, min_channels: MinChannels | Mapping[Any, MinChannels] = 1,
               ignore: Sequence[nn.Module] = (), blocks: str | Sequence[nn.Module] | None = "auto",
               heads: Mapping[nn.Module, int] | None = None, family: str | None = None, name: str | None = None
               ) -> tuple[Spec, PruningHandle]:
    """Turn `model` into a pruning spec and a handle that applies a solution.

    Args:
        model: the trained network (left unmodified); a `DistributedDataParallel` wrapper is unwrapped
            (its `.module` is scored and sliced, `spec.meta["unwrapped"]` says so).
        example_input: one input batch; its device, dtype and batch size are those timed.
        data, loss_fn: `(inputs, targets)` batches and `loss_fn(outputs, targets)` for first-order
            Taylor importance (scaled so the unpruned model is worth 1); or give `importance`
            instead: {dim name: per-unit scores} or {layer (module or name): per-output-channel scores}, or
            "uniform" (every unit scores 1: a placeholder when scores come later, as in `IterativePruner`).
        latency: "measure" (timed on the device of `example_input`, cached on disk, then calibrated
            against whole models; or a configured `MeasuredLatency(...)`, e.g. with calibrate=False),
            "flops" (multiply-accumulates as the latency), or a callable `fn(workload) -> cost`
            called once per operation and width choice.
        costs: the resources to put in the spec, any of "latency", "flops" (multiply-accumulates of
            convolutions, Linears and attention products, exact), "params" (parameter count, exact),
            "activations" (elements the operations write: their outputs, and an attention's queries,
            keys, probabilities and values; a proxy of memory traffic).
        step: granularity of channel widths (and of a transformer's embedding); `mlp_step` (default
            `step`) of MLP hidden widths; `head_step` of head counts; `head_dim_step` (default `step`) of
            channels per head. Kept counts are multiples of the granularity or the full width, never 0.
        min_channels: the fewest channels a width keeps: a count, a fraction of it in (0, 1), or
            {layer: count or fraction} for the widths that layer produces (others default to 1).
        ignore: modules whose widths stay: a layer's output channels, an attention's heads and
            channels per head, every width that lives inside a module (an MLP's hidden width, a block's
            heads and hidden width), or a layer the adapter has no rules for, kept as it is.
        blocks: "auto" (residual blocks x + f(x) may be removed; in blocks with several branches, such
            as transformer blocks, each branch), "whole" (whole residual blocks), a list of modules
            (blocks or branch modules), or None.
        heads: {attention module: head count} where the forward pass cannot tell it (heads folded into
            the batch axis), or to check it.
        family: use only this family ("transformer", "cnn", or one registered); default: the first
            that recognises the model.
        name: the spec's name (default: the model's class name).

    Returns `(spec, handle)`: solve the spec with `mdp_opt.solve`, then `handle.apply(result)`.

    Under an initialised `torch.distributed` process group every rank calls `build_spec` with its own
    `data` and gets the same spec: Taylor scores are summed over all ranks' batches before they are
    scaled; latency tables are measured (or the latency callable called) on rank 0 only and sent to
    the others; "flops" and "params" are computed on each rank. Solve with
    `distributed.solve_on_rank0` so every rank applies the same result. `importance=` given by the user
    is used as it is on each rank: give every rank the same scores.
    """
    check_build_arguments(model, example_input, data, loss_fn, importance, latency, costs,
                          "{dim name: per-unit scores} or {layer: per-channel scores}")
    wrapped = type(model).__name__ if unwrap_ddp(model) is not model else None
    model = unwrap_ddp(model)
    mlp_step = step if mlp_step is None else mlp_step
    head_dim_step = step if head_dim_step is None else head_dim_step
    for label, value in (("step", step), ("mlp_step", mlp_step), ("head_step", head_step),
                         ("head_dim_step", head_dim_step)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label}: expected a positive integer granularity, got {value!r}")
    if isinstance(latency, str) and latency == "measure":
        latency = MeasuredLatency()
    if isinstance(ignore, nn.Module) or isinstance(ignore, str):
        raise ValueError("ignore: expected a list of modules, got a single one; write ignore=[module]")
    ignored = module_names(model, ignore, "ignore")
    options = Options(step, mlp_step, head_step, head_dim_step, tuple(ignored), heads_by_name(model, heads))
    with _buffers_kept(model):      # forward passes in training mode update BatchNorm statistics
        fam, structure = recognise(model, example_input, options, family)
    gates = fam.blocks(model, structure, blocks)
    pinned = _pinned(model, structure, ignored)
    minimum = _minimums(model, structure, min_channels)
    choices = {d.name: _choices(d, options.granularity(d.kind), minimum[d.name], d.name in pinned)
               for d in structure.dims}
    hard = hard_coded_widths(fam, structure, model, example_input,
                             {n: c[-2] for n, c in choices.items() if len(c) > 1})
    for dim, why in hard.items():
        pinned[dim], choices[dim] = why, (choices[dim][-1],)
    prunable = {n for n, c in choices.items() if len(c) > 1}
    if isinstance(importance, str):
        if importance != "uniform":
            raise ValueError(f"importance: expected a mapping or 'uniform', got {importance!r}")
        importance = {d.name: np.ones(d.width) for d in structure.dims}
    with _buffers_kept(model):
        imps, scores, scoring = dim_importances(structure, model, gates, prunable, data, loss_fn, importance)
    objective = [t for d in structure.dims for t in objective_terms(d.name, choices[d.name], imps[d.name])]
    latency_on_rank0 = is_distributed() and "latency" in costs and not isinstance(latency, str)
    wanted = calibration_costs(costs, latency)
    local_costs = tuple(c for c in costs if c != "latency") if latency_on_rank0 else wanted
    terms, decomposed = cost_terms(fam, structure, model, choices, gates, local_costs, latency, example_input)
    meta: dict[str, Any] = {
        "source": "mdp_opt.adapters.torch", "model": type(model).__name__, "family": fam.name, "step": step,
        "mlp_step": mlp_step, "head_step": head_step, "head_dim_step": head_dim_step,
        "latency": describe_latency(latency), "input_shape": list(example_input.shape),
        "pinned": {n: r for n, r in pinned.items() if len(choices[n]) == 1},
        "attention": {n: h.site.mode for n, h in structure.sites.items()}}
    if decomposed:
        meta["decomposed"] = decomposed
    if wrapped:
        meta["unwrapped"] = f"{wrapped}: built from its .module; handle.apply returns a plain module to wrap again"
    spec = Spec(dims=tuple(Dim(d.name, choices[d.name]) for d in structure.dims), objective=tuple(objective),
                costs=terms, blocks=tuple(g.name for g in gates), name=name or type(model).__name__, meta=meta)
    spec = with_importance_check(spec, scores, scoring, score_name)
    handle = PruningHandle(model, example_input, spec, fam, structure, {n: imp.order for n, imp in imps.items()},
                           gates)
    if latency_on_rank0:   # measured (or given by a callable) on rank 0 only and sent: see `distributed`
        local = spec

        def timed() -> Spec:
            extra = tuple(c for c in wanted if c not in local_costs)
            more, _ = cost_terms(fam, structure, model, choices, gates, extra, latency, example_input)
            handle.spec = local.replace(costs={r: more[r] if r in more else local.costs[r] for r in wanted})
            return calibrate_if_measured(handle.spec, handle, latency, costs, example_input)

        spec = cost_from_rank0(local, timed)
        handle.spec = spec
        return spec, handle
    return calibrate_if_measured(spec, handle, latency, costs, example_input), handle


@contextlib.contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    """The model's buffers (BatchNorm running statistics) as they were before the block: tracing and
    scoring run the model, in training mode when it is in training mode, and must leave it unmodified
    (under DDP, each rank's own batches would otherwise leave each replica other statistics)."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def heads_by_name(model: nn.Module, heads: Mapping[Any, int] | None) -> dict[str, int]:
    """The `heads=` option checked: {attention module (or name): head count} -> {module name: head count}."""
    if heads is None:
        return {}
    if not isinstance(heads, Mapping):
        raise ValueError(f"heads: expected {{attention module: head count}}, got {type(heads).__name__}")
    names = module_names(model, list(heads), "heads")
    out = {}
    for name, count in zip(names, heads.values()):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"heads[{name}]: expected a positive head count, got {count!r}")
        out[name] = count
    return out


def _pinned(model: nn.Module, structure: Structure, ignored: Sequence[str]) -> dict[str, str]:
    """Dim name -> why it keeps its full width (what the forward pass showed, then `ignore=`)."""
    pinned = {d.name: d.pinned for d in structure.dims if d.pinned}
    ops = {op.name: op for op in structure.atomic_ops()}
    sizes = structure.sizes()
    modules = dict(model.named_modules())
    for i, name in enumerate(ignored):
        hits: list[str] = []
        if name in ops and ops[name].output.layout is not None and name not in structure.sites:
            hits += list(sizes.dims(ops[name].output.layout))
        inside = [d for d in structure.dims
                  if (d.site is not None and (d.site == name or d.site.startswith(name + ".") or name == ""))
                  or (d.layers and all(n.startswith(name + ".") or name == "" for n in d.layers))]
        hits += [d.name for d in inside]
        if not hits and not any(True for _ in modules[name].parameters()):
            raise ValueError(f"ignore[{i}] ({name}): {type(modules[name]).__name__} holds no prunable width (give a "
                             "layer, an attention, or a module holding them)")
        for dim in hits:
            pinned.setdefault(dim, f"ignore={name or type(model).__name__}")
    return pinned


def _minimums(model: nn.Module, structure: Structure, min_channels: Any) -> dict[str, int]:
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

    out = {d.name: 1 for d in structure.dims}
    if not isinstance(min_channels, Mapping):
        for d in structure.dims:
            if d.kind in CHANNEL_KINDS:
                out[d.name] = as_count(min_channels, d.width, "min_channels")
        return out
    names = module_names(model, list(min_channels), "min_channels")
    for name, value in zip(names, min_channels.values()):
        for d in structure.dims:
            if d.kind in CHANNEL_KINDS and name in d.layers:
                out[d.name] = max(out[d.name], as_count(value, d.width, f"min_channels[{name}]"))
    return out


def _choices(dim: DimInfo, step: int, minimum: int, pinned: bool) -> tuple[int, ...]:
    """Multiples of `step` from `minimum` up, then the full width; only the full width when pinned."""
    return (dim.width,) if pinned else width_choices(dim.width, step, minimum)


def width_choices(width: int, step: int, minimum: int) -> tuple[int, ...]:
    """The kept counts a width of `width` channels allows: multiples of `step` from `minimum` up, then the
    full width (only the full width when `minimum >= width`)."""
    if minimum >= width:
        return (width,)
    return tuple(k for k in range(step, width, step) if k >= minimum) + (width,)


def describe_latency(latency: LatencyArg) -> str:
    """How a latency argument costs layers, for a spec's meta."""
    if isinstance(latency, MeasuredLatency):
        return (f"measured (threads={latency.threads}, repeats={latency.repeats}"
                + (f", calibrated: {latency.calibrate})" if latency.calibrate else ")"))
    if isinstance(latency, str):
        return latency
    return f"callable {getattr(latency, '__qualname__', type(latency).__name__)}"
