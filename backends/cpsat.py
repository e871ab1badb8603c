"""Exact backend: OR-Tools CP-SAT on the marginal linearisation of `mdp_opt.linear_model`.

Every variable of the linearisation (one-hots, block binaries, gated one-hots, joint cells) is a
CP-SAT Boolean: in integral solutions they are all 0/1, and Booleans let CP-SAT propagate the
marginal equalities as clauses. CP-SAT needs integer data, so:

- costs are scaled by a power of ten (the smallest that makes every cost entry integral, when one
  exists below `MAX_SCALED`) and rounded UP, the budget DOWN: every answer meets the true budget.
  When rounding was needed, a second solve with costs rounded DOWN (a relaxation of the true
  problem) gives a bound that holds for the true problem, and its solution is kept when it
  happens to meet the true budget and is better;
- the objective is scaled the same way and rounded UP, so CP-SAT's bound is also a bound on the
  true objective, while the answer's value is evaluated exactly.
The answer is `optimal` only when that true bound is within 1e-9 relative of its true value: for
integral data that is whenever CP-SAT proves optimality. `stats` records scales and resolutions.

Options:
    threads      CP-SAT workers (`num_workers`); None: CP-SAT's default (all cores).
    verbose      print CP-SAT's search log.
    hint         a starting configuration: a Result, or {"choice": {dim: index}, "active": {block: bool}};
                 expanded to every variable (CP-SAT ignores a hint that covers only some of them).
    parameters   raw CP-SAT parameters, e.g. {"linearization_level": 2, "random_seed": 1}; applied last,
                 over `BASE_PARAMETERS` (CP-SAT's presolve off, see there).
    resolution   cost unit CP-SAT counts in, for all budgeted resources or {resource: unit}; None
                 (default) picks it automatically as described above. A coarse unit solves faster
                 but may leave a gap that the answer then reports.
    time_limit   seconds for the whole call; at the limit the best solution is `feasible` with its bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from ortools.sat.python import cp_model

from ..evaluate import budget_limit, evaluate
from ..linear_model import Linear, LinearModel, build, configuration_from_hint
from ..result import OPTIMALITY_GAP, Answer, Status, relative_gap
from ..solve import take_options
from ..spec import Spec, SpecError

DEFAULTS: dict[str, Any] = {"threads": None, "verbose": False, "hint": None, "parameters": {}, "resolution": None}
# CP-SAT's own presolve rewrites the marginal equalities into clauses and exactly-ones that its LP
# relaxation (linearization_level 1) leaves out, losing the tight marginal bound: on the ResNet-101
# instance it stalls at a 90% gap after 30 s with 2 workers, where without it the proof takes ~4 s.
# The linearisation is already presolved (every row is needed), so it is off unless asked for.
BASE_PARAMETERS: dict[str, Any] = {"cp_model_presolve": False}
MAX_SCALED = 1e12          # largest scaled magnitude of a whole objective or cost expression
_INTEGRAL_ULPS = 16 * np.finfo(float).eps


@dataclass(frozen=True)
class _Scaled:
    """An expression scaled by `scale` into integer coefficients and constant."""

    coef: np.ndarray       # int64
    constant: int
    scale: float
    exact: bool            # every scaled entry was integral (up to float noise)


def solve(spec: Spec, budgets: Mapping[str, float], options: dict) -> Answer:
    """Solve `spec` under `budgets` with CP-SAT; see the module docstring for options and rounding."""
    opts = take_options(options, DEFAULTS, "cpsat")
    deadline = None if opts["time_limit"] is None else time.monotonic() + float(opts["time_limit"])
    hint = configuration_from_hint(spec, opts["hint"]) if opts["hint"] is not None else None
    model = build(spec, budgets)
    # Rounded up, the scaled objective never undervalues a configuration, so CP-SAT's bound holds
    # for the true objective; the answer's own value is re-evaluated exactly.
    objective = _scale(model, Linear(model.objective.coef, 0.0), "up")
    resolution = _resolutions(opts["resolution"], budgets)
    up = {r: _scale(model, model.costs[r], "up", None if resolution[r] is None else 1.0 / resolution[r])
          for r in budgets}
    stats: dict[str, Any] = {
        "objective_scale": objective.scale, "objective_exact": objective.exact,
        "cost_scales": {r: s.scale for r, s in up.items()},
        "costs_exact": {r: s.exact for r, s in up.items()},
        "resolution": {r: 1.0 / s.scale for r, s in up.items()},
        "variables": model.num_vars, "rows": model.num_rows + len(budgets),
    }

    def true_bound(scaled_bound: float) -> float:
        return scaled_bound / objective.scale + model.objective.constant

    # exact (integral) scaled costs take the core's whole tolerance: the same configurations as the core
    first = _run(model, objective, {r: (up[r], _cap(up[r], b, relaxed=up[r].exact)) for r, b in budgets.items()},
                 hint, opts, deadline)
    stats["solver_status"] = first.status_name
    stats.update(first.counters)
    if first.status == cp_model.MODEL_INVALID:
        stats["message"] = "CP-SAT rejected the model: " + first.validation
        return Answer(Status.ERROR, stats=stats)
    best = _Candidate.of(spec, budgets, model, first)
    bound = true_bound(first.bound) if first.has_bound else None

    if all(s.exact for s in up.values()):
        if first.status == cp_model.INFEASIBLE:
            return Answer(Status.INFEASIBLE, stats=stats)
    else:
        # Costs were rounded up: the bound above holds only for the rounded problem. A solve
        # with costs rounded down relaxes the true problem, so its bound holds for it.
        down = {r: _scale(model, model.costs[r], "down", up[r].scale) for r in budgets}
        remaining = None if deadline is None else deadline - time.monotonic()
        bound = None
        if remaining is None or remaining > 0:
            start = (best.choice, best.active) if best else hint
            relaxed = _run(model, objective, {r: (down[r], _cap(down[r], b, relaxed=True))
                                              for r, b in budgets.items()}, start, opts, deadline)
            stats["relaxation_solver_status"] = relaxed.status_name
            if relaxed.status == cp_model.INFEASIBLE:
                return Answer(Status.INFEASIBLE, stats=stats)
            bound = true_bound(relaxed.bound) if relaxed.has_bound else None
            other = _Candidate.of(spec, budgets, model, relaxed)
            if other and (best is None or other.value > best.value):
                best = other
        if best is None and bound is not None:
            stats["message"] = ("rounding the costs up to the resolution in stats left no configuration within "
                                "budget, yet the rounded-down relaxation has one: the budget is within rounding "
                                "distance of the cheapest configurations; use a finer resolution or the milp backend")
            return Answer(Status.ERROR, bound=bound, stats=stats)

    if best is None:
        return Answer(Status.TIME_LIMIT_NO_SOLUTION, bound=bound, stats=stats)
    if bound is not None:
        bound = max(bound, best.value)
    proven = bound is not None and relative_gap(bound, best.value) <= OPTIMALITY_GAP
    if not proven and first.status == cp_model.OPTIMAL:
        stats["message"] = "CP-SAT solved the rounded problem to optimality; rounding leaves the gap reported"
    return Answer(Status.OPTIMAL if proven else Status.FEASIBLE, best.choice, best.active, best.value, bound, stats)


@dataclass(frozen=True)
class _Outcome:
    status: int
    status_name: str
    solution: np.ndarray | None
    bound: float
    validation: str
    counters: dict[str, Any]

    @property
    def has_bound(self) -> bool:
        return self.status in (cp_model.OPTIMAL, cp_model.FEASIBLE)


@dataclass(frozen=True)
class _Candidate:
    choice: dict[str, int]
    active: dict[str, bool]
    value: float

    @staticmethod
    def of(spec: Spec, budgets: Mapping[str, float], model: LinearModel, outcome: _Outcome) -> "_Candidate | None":
        """The outcome's configuration when it has one that meets the true budgets."""
        if outcome.solution is None:
            return None
        choice, active = model.decode(outcome.solution)
        ev = evaluate(spec, choice, active, budgets)
        return _Candidate(choice, active, ev.value) if ev.feasible else None


def _run(model: LinearModel, objective: _Scaled, budget_rows: Mapping[str, tuple[_Scaled, int]],
         hint: tuple[dict, dict] | None, opts: Mapping[str, Any], deadline: float | None) -> _Outcome:
    cp = cp_model.CpModel()
    x = [cp.new_bool_var(name) for name in model.names]
    for index, coef, lower, upper in model.rows():
        cp.add_linear_constraint(cp_model.LinearExpr.weighted_sum([x[i] for i in index], [int(c) for c in coef]),
                                 _int_or(lower, cp_model.INT_MIN), _int_or(upper, cp_model.INT_MAX))
    for scaled, cap in budget_rows.values():
        nz = np.flatnonzero(scaled.coef)
        cp.add_linear_constraint(cp_model.LinearExpr.weighted_sum([x[i] for i in nz], scaled.coef[nz].tolist()),
                                 cp_model.INT_MIN, cap)
    nz = np.flatnonzero(objective.coef)
    cp.maximize(cp_model.LinearExpr.weighted_sum([x[i] for i in nz], objective.coef[nz].tolist()))
    if hint is not None:
        for var, value in zip(x, model.values(*hint)):
            cp.add_hint(var, bool(value))
    solver = cp_model.CpSolver()
    _set_parameters(solver, opts, deadline)
    status = solver.solve(cp)
    found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    solution = np.array(solver.response_proto.solution, dtype=float) if found else None
    counters = {"conflicts": solver.num_conflicts, "branches": solver.num_branches,
                "deterministic_time": solver.deterministic_time}
    return _Outcome(status, solver.status_name(status), solution, solver.best_objective_bound if found else math.inf,
                    cp.validate() if status == cp_model.MODEL_INVALID else "", counters)


def _set_parameters(solver: cp_model.CpSolver, opts: Mapping[str, Any], deadline: float | None) -> None:
    params = solver.parameters
    threads = opts["threads"]
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise SpecError(f"option threads: expected a positive integer, got {threads!r}")
        params.num_workers = threads
    if deadline is not None:
        params.max_time_in_seconds = max(deadline - time.monotonic(), 1e-3)
    params.log_search_progress = bool(opts["verbose"])
    raw = opts["parameters"]
    if not isinstance(raw, Mapping):
        raise SpecError(f"option parameters: expected a mapping of CP-SAT parameter names to values, got {raw!r}")
    for name, value in {**BASE_PARAMETERS, **raw}.items():
        try:
            setattr(params, name, value)
        except (AttributeError, TypeError, ValueError) as e:
            raise SpecError(f"option parameters: CP-SAT rejected {name}={value!r} ({e.__class__.__name__}); "
                            "see ortools/sat/sat_parameters.proto for names and types") from None


def _resolutions(option: Any, budgets: Mapping[str, float]) -> dict[str, float | None]:
    """Per budgeted resource, the cost unit asked for (None: automatic)."""
    if option is None:
        return {r: None for r in budgets}
    if isinstance(option, Mapping):
        unknown = sorted(set(option) - set(budgets))
        if unknown:
            raise SpecError(f"option resolution: {unknown[0]!r} is not a budgeted resource ({sorted(budgets)})")
        values = {r: option.get(r) for r in budgets}
    else:
        values = {r: option for r in budgets}
    for r, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf):
            raise SpecError(f"option resolution: expected a positive cost unit (number, or resource -> number), "
                            f"got {v!r} for {r!r}")
    return {r: None if v is None else float(v) for r, v in values.items()}


def _int_or(value: float, default: int) -> int:
    return int(value) if math.isfinite(value) else default


def _near_integral(scaled: np.ndarray) -> np.ndarray:
    return np.abs(scaled - np.round(scaled)) <= _INTEGRAL_ULPS * np.maximum(1.0, np.abs(scaled))


def _scale(model: LinearModel, expression: Linear, rounding: str, scale: float | None = None) -> _Scaled:
    """Scale by a power of ten (the smallest making every entry integral, else the finest allowed) and round.

    rounding is "up" or "down"; entries already integral (up to float noise) are rounded to
    nearest in either mode.
    """
    values = np.append(expression.coef, expression.constant)
    if scale is None:
        magnitude = float(sum(np.abs(expression.coef[f.index]).max(initial=0.0) for f in model.families))
        scale = _choose_scale(values, magnitude + abs(expression.constant))
    scaled = values * scale
    integral = _near_integral(scaled)
    rounded = np.where(integral, np.round(scaled), {"up": np.ceil, "down": np.floor}[rounding](scaled))
    ints = rounded.astype(np.int64)
    return _Scaled(ints[:-1], int(ints[-1]), scale, bool(integral.all()))


def _choose_scale(values: np.ndarray, magnitude: float) -> float:
    """`magnitude` bounds |expression| over all configurations (one variable per family can be 1)."""
    if magnitude == 0:
        return 1.0
    finest = 10.0 ** math.floor(math.log10(MAX_SCALED / magnitude))
    power = 1.0
    while power <= finest:
        if _near_integral(values * power).all():
            return power
        power *= 10.0
    return finest


def _cap(cost: _Scaled, budget: float, relaxed: bool) -> int:
    """Integer bound on the scaled variable part of a cost row.

    Not relaxed (costs rounded up): every configuration within it meets `budget` (the core's
    tolerance halved). Relaxed (costs rounded down): every configuration the core deems within
    budget satisfies it.
    """
    limit = budget_limit(budget, 1.0 if relaxed else 0.5) * cost.scale
    return math.floor(limit) - cost.constant
