"""Calibrating measured latency tables against whole models.

Parts timed alone do not add up to the network they came from: on the development
machine the per-layer tables of a ResNet-50 summed 10-15% below the measured forward
pass, and they underestimate large models more than small ones. Calibration measures
reference models built with the handle's own `apply` (the full model and a uniformly
slimmed one, timed in alternation so a slow phase of the machine hits both), fits
`measured = factor x tables + offset` through them, and rewrites the latency tables:
every entry is multiplied by `factor`; a positive offset becomes one constant term, a
negative one is taken from the ungated tables (always counted) in proportion to their
smallest entries, so no entry becomes negative. An offset more negative than those
entries can give is not representable: the fit then keeps the most negative one
(`measured = factor x (tables - floor)`) and says so in its `note`. The spec stays a
plain spec; `spec.meta["latency_calibration"]` records the fit and the measurements.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from torch import nn

from mdp_opt.result import Answer, Result, Status
from mdp_opt.solve import verify
from mdp_opt.spec import Spec, Term

DEFAULT_RATIOS = (0.5,)
DEFAULT_ROUNDS = 3


class Slimmer(Protocol):
    """A handle made by `build_spec` / `build_vit_spec`."""

    model: nn.Module

    def apply(self, result: Result) -> nn.Module: ...


@dataclass(frozen=True)
class CalibrationPoint:
    """One reference model: what the raw tables predict and what it measures (milliseconds)."""

    name: str
    tables_ms: float
    measured_ms: float


@dataclass(frozen=True)
class Calibration:
    """`calibrated = factor * tables + offset_ms`, fitted to `points` (the full model first)."""

    factor: float
    offset_ms: float
    points: tuple[CalibrationPoint, ...]
    note: str = ""

    def predict(self, tables_ms: float) -> float:
        return self.factor * tables_ms + self.offset_ms

    def as_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"factor": self.factor, "offset_ms": self.offset_ms,
                               "points": [{"model": p.name, "tables_ms": p.tables_ms, "measured_ms": p.measured_ms}
                                          for p in self.points]}
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
                     ratios: Sequence[float] = DEFAULT_RATIOS, rounds: int = DEFAULT_ROUNDS,
                     resource: str = "latency") -> list[CalibrationPoint]:
    """The full model, then one uniformly slimmed model per ratio in (0, 1), each measured `rounds`
    times in alternation (the median is kept). Ratios that give the full configuration again are skipped."""
    for r in ratios:
        if not 0 < r < 1:
            raise ValueError(f"calibration ratios: each must be in (0, 1), got {r!r}")
    if rounds < 1:
        raise ValueError(f"calibration rounds: expected at least 1, got {rounds!r}")
    full_choice = uniform_choice(spec, 1.0)
    models = [("full", spec.full_cost(resource), handle.model)]
    seen = [full_choice]
    for r in ratios:
        choice = uniform_choice(spec, r)
        if choice in seen:
            continue
        seen.append(choice)
        result = configuration(spec, choice, "calibration")
        models.append((f"uniform {r:g}", result.costs[resource], handle.apply(result)))
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for (_, _, model), out in zip(models, samples):
            out.append(measure(model))
    return [CalibrationPoint(name, tables, statistics.median(s)) for (name, tables, _), s in zip(models, samples)]


def fit(points: Sequence[CalibrationPoint], floor_ms: float = 0.0) -> Calibration:
    """Least squares of relative error of `factor * tables + offset` over the points; through the first
    (full model) point alone when there is one distinct prediction. The offset is kept >= -factor * floor_ms."""
    full = points[0]
    if not (full.tables_ms > 0 and full.measured_ms > 0):
        raise ValueError(f"latency calibration: the full model's tables predict {full.tables_ms} ms and it "
                         f"measures {full.measured_ms} ms; both must be positive (or pass calibrate=False)")
    tables = np.array([p.tables_ms for p in points])
    measured = np.array([p.measured_ms for p in points])
    if len(set(tables.tolist())) < 2:
        return Calibration(full.measured_ms / full.tables_ms, 0.0, tuple(points))
    weights = 1.0 / measured
    (factor, offset), *_ = np.linalg.lstsq(np.stack([tables * weights, weights], axis=1), measured * weights,
                                           rcond=None)
    if factor > 0 and offset >= -factor * floor_ms:
        return Calibration(float(factor), float(offset), tuple(points))
    shifted = (tables - floor_ms) * weights
    limited = float(shifted @ (measured * weights) / (shifted @ shifted))
    if not limited > 0:
        raise ValueError(f"latency calibration: the reference models measure {measured.tolist()} ms where the "
                         f"tables predict {tables.tolist()} ms; no positive factor fits (pass calibrate=False)")
    return Calibration(limited, -limited * floor_ms, tuple(points),
                       note=f"offset limited to -factor x {floor_ms:.6g} ms (the smallest ungated tables); "
                            f"the unconstrained fit was factor {factor:.4g}, offset {offset:.4g} ms")


def ungated_floor(spec: Spec, resource: str = "latency") -> float:
    """The part of every configuration's cost that no choice or block removal avoids."""
    return float(sum(t.table.min() for t in spec.costs[resource] if t.block is None))


def calibrated_spec(spec: Spec, calibration: Calibration, measured_with: str, resource: str = "latency") -> Spec:
    """`spec` with its `resource` tables rewritten so every configuration costs `factor * tables + offset`,
    and `meta[f"{resource}_calibration"]` describing the fit (`measured_with`: how the points were timed)."""
    factor, offset = calibration.factor, calibration.offset_ms
    floor = ungated_floor(spec, resource)
    if offset < 0 and -offset > factor * floor * (1 + 1e-12):
        raise ValueError(f"latency calibration: offset {offset} ms is below what the ungated tables can give "
                         f"(-{factor * floor} ms); fit with floor_ms={floor}")
    terms = []
    for t in spec.costs[resource]:
        table = factor * t.table
        if offset < 0 and t.block is None and floor > 0:
            table = np.maximum(table + offset * t.table.min() / floor, 0.0)   # clamps float rounding only
        terms.append(Term(t.dims, table, t.block))
    if offset > 0:
        terms.append(Term((), np.array(offset)))
    meta = {**spec.meta, f"{resource}_calibration": {**calibration.as_meta(), "measured_with": measured_with}}
    return spec.replace(costs={**spec.costs, resource: tuple(terms)}, meta=meta)


def calibrate_latency(spec: Spec, handle: Slimmer, measure: Callable[[nn.Module], float], measured_with: str,
                      ratios: Sequence[float] = DEFAULT_RATIOS, rounds: int = DEFAULT_ROUNDS,
                      resource: str = "latency") -> tuple[Spec, Calibration]:
    """Measure the reference models with `measure(model) -> ms`, fit, and return the calibrated spec.

    With `ratios=()` the fit is one factor: the full model measured / predicted.
    """
    points = reference_points(spec, handle, measure, ratios, rounds, resource)
    calibration = fit(points, ungated_floor(spec, resource))
    how = f"{measured_with}; {rounds} rounds in alternation, median"
    return calibrated_spec(spec, calibration, how, resource), calibration
