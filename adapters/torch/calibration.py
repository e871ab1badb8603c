"""Calibrating measured latency tables against whole models.

Parts timed alone do not add up to the network they came from (see `latency_model`).
Calibration measures reference models built with the handle's own `apply`, in alternation
so a slow phase of the machine hits them all, and rewrites the latency tables; the spec
stays a plain spec and `spec.meta["latency_calibration"]` records the fit and the
measurements. Three methods:

- "affine" (the default of `MeasuredLatency`): tables scaled per group of terms plus a fixed
  cost, fitted to the full model, uniformly slimmed models and models with blocks removed
  (`latency_model`). A fixed cost is what one factor cannot express: pruned models then
  measured 10-35% slower than "factor" predicted (benchmarks/RESULTS.md).
- "factor": the full configuration alone; every entry is multiplied by measured / predicted.
  Budgets in percent select the same models as the raw tables.
- "parts": also the model slimmed uniformly to half its widths. Each entry is split into
  its table's smallest entry (the *fixed* part: the part at its narrowest) and the rest
  (the *variable* part), and `measured = variable_factor x variable + fixed_factor x fixed`
  is fitted (least squares of relative error, both factors >= 0); every entry becomes
  `variable_factor x (entry - min) + fixed_factor x min`, so none is negative. It
  extrapolates badly when removing blocks changes the fixed parts (the reference models
  keep every block).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from torch import nn

from mdp_opt import Answer, Result, Spec, Status, Term, evaluate, solve, verify

from .latency_model import (AffineFit, Reference, affine_spec, as_result, distinct, fit_affine,
                            reference_configurations)

METHODS = {"affine": (), "factor": (), "parts": (0.5,)}   # method -> uniform keep ratios ("parts", "factor")
DEFAULT_ROUNDS = 5
ANSWER_BUDGETS = (0.2, 0.4, 0.6, 0.8)     # "affine": the solver's answers at these budgets join the references
ANSWER_WEIGHT = 9.0      # and each counts as this many references in the final fit (see `calibrate_affine`)
MeasureMany = Callable[[Sequence[nn.Module]], Sequence[Sequence[float]]]


class Slimmer(Protocol):
    """A handle made by `build_spec`."""

    def apply(self, result: Result) -> nn.Module: ...


@dataclass(frozen=True)
class CalibrationPoint:
    """One reference model: the raw tables' variable and fixed parts for it, and what it measures (ms)."""

    name: str
    variable_ms: float
    fixed_ms: float
    measured_ms: float

    @property
    def tables_ms(self) -> float:
        return self.variable_ms + self.fixed_ms


@dataclass(frozen=True)
class Calibration:
    """`calibrated = variable_factor * variable part + fixed_factor * fixed part`, fitted to `points`."""

    variable_factor: float
    fixed_factor: float
    points: tuple[CalibrationPoint, ...]
    note: str = ""

    def predict(self, variable_ms: float, fixed_ms: float) -> float:
        return self.variable_factor * variable_ms + self.fixed_factor * fixed_ms

    def as_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variable_factor": self.variable_factor, "fixed_factor": self.fixed_factor,
            "points": [{"model": p.name, "tables_ms": p.tables_ms, "fixed_ms": p.fixed_ms,
                        "measured_ms": p.measured_ms} for p in self.points]}
        if self.note:
            out["note"] = self.note
        return out


def uniform_choice(spec: Spec, ratio: float) -> dict[str, int]:
    """Every dim at the largest choice <= `ratio` x its full width (its smallest choice if none is)."""
    return {d.name: max([i for i, c in enumerate(d.choices) if c <= ratio * d.choices[-1]], default=0)
            for d in spec.dims}


def configuration(spec: Spec, choice: dict[str, int], name: str) -> Result:
    """A configuration of `spec` with every block kept, as a verified Result ready for `handle.apply`."""
    answer = Answer(Status.FEASIBLE, choice=choice, active={b: True for b in spec.block_names})
    return verify(spec, {}, answer, name, 0.0)


def reference_points(spec: Spec, handle: Slimmer, measure: Callable[[nn.Module], float],
                     ratios: Sequence[float] = METHODS["parts"], rounds: int = DEFAULT_ROUNDS,
                     resource: str = "latency") -> list[CalibrationPoint]:
    """The full model, then one uniformly slimmed model per ratio in (0, 1), each measured `rounds`
    times in alternation (the median is kept). Ratios that give the full configuration again are skipped.
    The full model too is built by `handle.apply`: what the spec predicts are slimmed models, and a ViT
    slimmed to its full widths (with `PrunedAttention`) is not the original model (on the development
    machine it measured 1-6% slower)."""
    for r in ratios:
        if not 0 < r < 1:
            raise ValueError(f"calibration ratios: each must be in (0, 1), got {r!r}")
    if rounds < 1:
        raise ValueError(f"calibration rounds: expected at least 1, got {rounds!r}")
    full = configuration(spec, uniform_choice(spec, 1.0), "calibration")
    models = [("full", split_costs(spec, full, resource), handle.apply(full))]
    seen = [full.choice]
    for r in ratios:
        result = configuration(spec, uniform_choice(spec, r), "calibration")
        if result.choice in seen:
            continue
        seen.append(result.choice)
        models.append((f"uniform {r:g}", split_costs(spec, result, resource), handle.apply(result)))
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for (_, _, model), out in zip(models, samples):
            out.append(measure(model))
    return [CalibrationPoint(name, *parts, statistics.median(s)) for (name, parts, _), s in zip(models, samples)]


def split_costs(spec: Spec, result: Result, resource: str = "latency") -> tuple[float, float]:
    """(variable, fixed) parts of a configuration's `resource` cost: each active entry minus its table's
    smallest entry, and those smallest entries."""
    fixed = spec.replace(costs={resource: tuple(Term(t.dims, np.full(t.table.shape, t.table.min()), t.block)
                                                 for t in spec.costs[resource])})
    fixed_ms = evaluate(fixed, result.choice, result.active).costs[resource]
    return evaluate(spec, result.choice, result.active).costs[resource] - fixed_ms, fixed_ms


def fit(points: Sequence[CalibrationPoint]) -> Calibration:
    """Least squares of relative error over the points (the full model first); one factor through the full
    model when the points cannot tell the two parts apart; the fixed factor kept >= 0."""
    full = points[0]
    if not (full.tables_ms > 0 and full.measured_ms > 0):
        raise ValueError(f"latency calibration: the full model's tables predict {full.tables_ms} ms and it "
                         f"measures {full.measured_ms} ms; both must be positive (or pass calibrate=False)")
    parts = np.array([[p.variable_ms, p.fixed_ms] for p in points])
    measured = np.array([p.measured_ms for p in points])
    if np.linalg.matrix_rank(parts) < 2:
        factor = full.measured_ms / full.tables_ms
        return Calibration(factor, factor, tuple(points))
    weights = 1.0 / measured
    (variable, fixed), *_ = np.linalg.lstsq(parts * weights[:, None], measured * weights, rcond=None)
    if variable > 0 and fixed >= 0:
        return Calibration(float(variable), float(fixed), tuple(points))
    column = parts[:, 0] * weights
    limited = float(column @ (measured * weights) / (column @ column))
    if not limited > 0:
        raise ValueError(f"latency calibration: the reference models measure {measured.tolist()} ms where the "
                         f"tables predict {parts.sum(axis=1).tolist()} ms; no positive factors fit "
                         "(pass calibrate=False)")
    return Calibration(limited, 0.0, tuple(points),
                       note=f"fixed factor limited to 0; the unconstrained fit was variable {variable:.4g}, "
                            f"fixed {fixed:.4g}")


def calibrated_spec(spec: Spec, calibration: Calibration, measured_with: str, resource: str = "latency") -> Spec:
    """`spec` with every `resource` entry rewritten to `variable_factor * (entry - min) + fixed_factor * min`
    (min: its table's smallest entry), and `meta[f"{resource}_calibration"]` describing the fit
    (`measured_with`: how the reference models were timed)."""
    a, b = calibration.variable_factor, calibration.fixed_factor
    if not (a >= 0 and b >= 0):
        raise ValueError(f"latency calibration: factors must be >= 0, got variable {a}, fixed {b}")
    terms = tuple(Term(t.dims, a * (t.table - t.table.min()) + b * t.table.min(), t.block)
                  for t in spec.costs[resource])
    meta = {**spec.meta, f"{resource}_calibration": {**calibration.as_meta(), "measured_with": measured_with}}
    return spec.replace(costs={**spec.costs, resource: terms}, meta=meta)


def calibrate_latency(spec: Spec, handle: Slimmer, measure: Callable[[nn.Module], float], measured_with: str,
                      method: str = "factor", rounds: int = DEFAULT_ROUNDS, resource: str = "latency",
                      measure_many: MeasureMany | None = None) -> tuple[Spec, Calibration | AffineFit]:
    """Measure the reference models with `measure(model) -> ms`, fit, and return the calibrated spec.

    `method`: "affine" (scaled tables, weights and a fixed cost, see `latency_model` and
    `calibrate_affine`), "factor" (the full model alone: every entry times measured / predicted;
    budgets in percent select the same models as the raw tables) or "parts" (also the model slimmed
    to half its widths: fixed and variable parts fitted apart). "affine" measures with
    `measure_many(models) -> samples per model` when given (all models run by run in alternation),
    else with `measure` in `rounds` alternating rounds.
    """
    if method not in METHODS:
        raise ValueError(f"calibrate: expected one of {sorted(METHODS)}, True or False, got {method!r}")
    if rounds < 1:
        raise ValueError(f"calibration rounds: expected at least 1, got {rounds!r}")
    if method == "affine":
        many = measure_many or _alternating(measure, rounds)
        return calibrate_affine(spec, handle, many, measured_with, resource=resource)
    points = reference_points(spec, handle, measure, METHODS[method], rounds, resource)
    calibration = fit(points)
    how = f"{method}: {measured_with}; {rounds} rounds in alternation, median"
    return calibrated_spec(spec, calibration, how, resource), calibration


def calibrate_affine(spec: Spec, handle: Slimmer, measure_many: MeasureMany, measured_with: str,
                     budgets: Sequence[float] = ANSWER_BUDGETS, resource: str = "latency") -> tuple[Spec, AffineFit]:
    """Fit the affine model in two stages and return the calibrated spec.

    1. The reference configurations (`latency_model.reference_configurations`) are measured and fitted.
    2. The spec so fitted is solved at `budgets` (fractions of its full latency): a solver picks
       configurations unlike uniform ones (it strips what the model calls expensive), which is where a
       model fitted to uniform ones errs most. Every reference and those answers are measured again,
       together, run by run in alternation, and the final fit uses them all, each answer's squared error
       counted ANSWER_WEIGHT times: the model must be right where a solver picks, and the references are
       there to tell its components apart. (Where the form cannot fit both, OpenVINO's ViT-Tiny at 64 px,
       equal weights left the answers 17-29% fast within the fit; in `benchmarks/latency_forms.py`'s 31
       cases, the mean of each case's worst error fell from 2.1% to 1.8% in eager and ONNX Runtime and from
       6.2% to 4.8% in OpenVINO.)
    The user's budgets play no part: the fitted model serves every budget."""
    configs = reference_configurations(spec)
    first = fit_affine(spec, _measured(spec, handle, configs, measure_many), resource)
    draft = affine_spec(spec, first, measured_with, resource)
    answers, answered = [], []
    for b in budgets:
        result = solve(draft, {resource: b * draft.full_cost(resource)})
        if result.has_solution:
            answers.append((f"solver answer at {b:.0%}", result.choice, result.active))
            answered.append(b)
    references = _measured(spec, handle, distinct(configs + answers), measure_many)
    answer_names = {name for name, _, _ in answers}
    references = [replace(r, weight=ANSWER_WEIGHT) if r.name in answer_names else r for r in references]
    fitted = fit_affine(spec, references, resource)
    runs = len(references[0].samples)
    unanswered = [b for b in budgets if b not in answered]     # below the first fit's least latency
    how = (f"affine: {measured_with}; {len(references)} reference models (uniform, half-slimmed, blocks removed, "
           f"and the solver's answers at {_percents(answered) or 'no budget'} of a first fit"
           + (f"; none at {_percents(unanswered)}, infeasible there" if unanswered else "")
           + f"), {runs} runs each in alternation, median")
    return affine_spec(spec, fitted, how, resource), fitted


def _percents(fractions: Sequence[float]) -> str:
    return ", ".join(f"{b:.0%}" for b in fractions)


def _measured(spec: Spec, handle: Slimmer, configs: Sequence[tuple[str, dict[str, int], dict[str, bool]]],
              measure_many: MeasureMany) -> list[Reference]:
    models = [handle.apply(as_result(spec, choice, active, "calibration")) for _, choice, active in configs]
    samples = measure_many(models)
    return [Reference(name, choice, active, tuple(s)) for (name, choice, active), s in zip(configs, samples)]


def _alternating(measure: Callable[[nn.Module], float], rounds: int) -> MeasureMany:
    """`measure_many` from a one-model `measure`: `rounds` rounds, the models taken in turn."""
    def many(models: Sequence[nn.Module]) -> list[list[float]]:
        samples: list[list[float]] = [[] for _ in models]
        for _ in range(rounds):
            for model, out in zip(models, samples):
                out.append(measure(model))
        return samples
    return many
