"""Checks shared by the CNN and ViT spec builders and their handles: arguments in, results back."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from mdp_opt import Result, Spec

from .calibration import calibrate_latency
from .latency import MeasuredLatency

RESOURCES = ("latency", "flops", "params", "activations")


def check_build_arguments(model: Any, example_input: Any, data: Any, loss_fn: Any, importance: Any, latency: Any,
                          costs: Any, importance_form: str) -> None:
    """Raise a clear error for a bad `build_spec` argument; `importance_form` describes what `importance=` maps."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input: expected a tensor (one input batch), got {type(example_input).__name__}")
    if importance is None and (data is None or loss_fn is None):
        raise ValueError("importance: give data= (an iterable of (inputs, targets) batches) and loss_fn=, "
                         f"or importance= {importance_form}")
    if importance is not None and (data is not None or loss_fn is not None):
        raise ValueError("importance: given together with data/loss_fn; pass one or the other")
    if not (latency in ("measure", "flops") or isinstance(latency, MeasuredLatency)
            or (callable(latency) and not isinstance(latency, str))):
        raise ValueError(f"latency: expected 'measure', 'flops', a MeasuredLatency or a callable, got {latency!r}")
    if isinstance(costs, str) or not costs or any(c not in RESOURCES for c in costs) or len(set(costs)) != len(costs):
        raise ValueError(f"costs: expected a non-empty tuple of distinct names from {RESOURCES}, got {costs!r}")


def check_result_for(spec: Spec, result: Any, builder: str) -> None:
    """Raise unless `result` is a solved `Result` of `spec` (the spec `builder` returned with the handle)."""
    if not isinstance(result, Result):
        raise TypeError(f"result: expected mdp_opt.Result from mdp_opt.solve, got {type(result).__name__}")
    if not result.has_solution:
        raise ValueError(f"result: status {result.status.value} has no configuration to apply")
    if set(result.kept) != set(spec.dim_names) or set(result.active) != set(spec.block_names):
        raise ValueError(f"result: its dims and blocks do not match this handle's spec; solve the spec that "
                         f"{builder} returned with this handle")


def calibration_costs(costs: Sequence[str], latency: Any) -> tuple[str, ...]:
    """The resources a builder computes: `costs`, plus "params" and "activations" when measured latency is
    calibrated with the affine model (its weight- and activation-streaming terms; dropped again by
    `calibrate_if_measured`)."""
    costs = tuple(costs)
    if "latency" in costs and isinstance(latency, MeasuredLatency) and latency.calibrate == "affine":
        return costs + tuple(c for c in ("params", "activations") if c not in costs)
    return costs


def calibrate_if_measured(spec: Spec, handle: Any, latency: Any, costs: Any, example_input: torch.Tensor) -> Spec:
    """The spec with measured latency tables calibrated against whole models (when asked), and only the
    resources in `costs`; set on the handle too."""
    if "latency" in costs and isinstance(latency, MeasuredLatency) and latency.calibrate:
        how = latency.describe() + (f"; {latency.describe_turns()}" if latency.calibrate == "affine" else "")
        spec, _ = calibrate_latency(spec, handle, lambda m: latency.measure(m, example_input), how,
                                    latency.calibrate, measure_many=lambda models: latency.measure_interleaved(
                                        models, example_input, latency.calibration_runs,
                                        streak=latency.calibration_streak,
                                        settle_ms=latency.calibration_settle_ms))
    if set(spec.costs) != set(costs):
        spec = spec.replace(costs={r: ts for r, ts in spec.costs.items() if r in costs})
    handle.spec = spec
    return spec
