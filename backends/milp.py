"""Exact backend: HiGHS (through `highspy`) on the exact linearisation of `mdp_opt.linear_model`
(marginal families; small components as one-hots over their configurations).

Options:
    threads      HiGHS threads (None: HiGHS's default, half the hardware threads). HiGHS keeps one
                 thread pool per process; it is rebuilt when a solve asks for a different size.
    mip_rel_gap  relative gap at which HiGHS stops (default 0: prove optimality). The answer is
                 reported `optimal` only when HiGHS says optimal and the gap between its dual bound
                 and the answer's value is <= 1e-9 relative; otherwise `feasible` with the bound.
    verbose      print HiGHS's log.
    hint         a starting configuration: a Result, or {"choice": {dim: index}, "active": {block: bool}}.
    parameters   raw HiGHS options, e.g. {"random_seed": 3}; applied last, over `BASE_OPTIONS`.
    time_limit   seconds; at the limit the best solution is returned as `feasible` with HiGHS's bound.
                 The call's deadline also stops HiGHS (`cancelSolve`) on Ctrl-C.

`stats` holds the HiGHS model status, node count, HiGHS's gap and bound, and the model size.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from mdp_opt.backend import Feature, check_bool, check_number, check_threads, register_backend, take_options
from mdp_opt.evaluate import configuration_from_hint
from mdp_opt.linear_model import LinearModel, build
from mdp_opt.result import OPTIMALITY_GAP, Answer, Status, relative_gap
from mdp_opt.spec import Spec, SpecError

try:
    import highspy
    MISSING = None
except ImportError as e:   # registered as missing; `solve` is never called then
    highspy, MISSING = None, f"highspy (HiGHS) is not importable ({e})"

DEFAULTS: dict[str, Any] = {"threads": None, "mip_rel_gap": 0.0, "verbose": False, "hint": None, "parameters": {}}

# Tight tolerances so that the configuration read off HiGHS's solution meets the limit (budget
# rows are normalised to unit scale and tightened by HiGHS's own tolerance), and no
# absolute gap (objectives may be tiny). The marginal LP is tight, so HiGHS's sub-MIP heuristics
# RINS and RENS mostly cost time: off, they cut the median solve by 25-50% on the four real
# instances (benchmarks/instances.py). `parameters` overrides any of these.
HIGHS_ROW_TOLERANCE = 1e-9     # = primal_feasibility_tolerance below, in the scaled rows
#
# HiGHS's MIP presolve is off: with it, HiGHS 1.16 (one thread, started from the presolve's incumbent)
# reported the reduced ResNet-101 instance `optimal` at 3350743, below the proven optimum 3350920 (a
# wrong proof; HiGHS has had several such presolve bugs, e.g. ERGO-Code/HiGHS#1273, #1725, #3094).
# Without it every proof checked here was right; the cost is measured in the README (slower on the
# full ResNet-101 model, about even after mdp-opt's own presolve).
BASE_OPTIONS: dict[str, Any] = {"mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9,
                                "mip_abs_gap": 0.0, "mip_heuristic_run_rins": False,
                                "mip_heuristic_run_rens": False, "presolve": "off"}
_threads_in_pool: int | None = None


def solve(spec: Spec, limits: Mapping[str, float], options: dict) -> Answer:
    """Solve `spec` within `limits` with HiGHS; see the module docstring for options."""
    opts = take_options(options, DEFAULTS, "milp")
    check_options(opts, spec, limits)
    hint = configuration_from_hint(spec, opts["hint"]) if opts["hint"] is not None else None
    deadline = opts["deadline"]
    highs = _quiet_highs()
    _set_options(highs, opts)
    model = build(spec, limits, deadline)
    if model.num_vars == 0:  # no dims, no blocks: one configuration, which HiGHS calls an empty model
        if any(model.costs[r].constant > limit for r, limit in limits.items()):
            return Answer(Status.INFEASIBLE, stats={"variables": 0})
        value = model.objective.constant
        return Answer(Status.OPTIMAL, {}, {}, value, value, {"variables": 0})
    objective_unit = _pass_model(highs, model, limits)
    if hint is not None:
        x0 = model.values(*hint)
        highs.setSolution(model.num_vars, np.arange(model.num_vars, dtype=np.int32), x0)
    highs.HandleUserInterrupt = True          # cancelSolve() then stops HiGHS at its next check
    if deadline.limited:
        highs.setOptionValue("time_limit", max(deadline.remaining(), 1e-3))
    with deadline.hook(highs.cancelSolve):
        highs.run()
    return _answer(model, limits, highs, objective_unit)


def _quiet_highs() -> Any:
    """A highspy.Highs that does not print its banner on construction (output is switched on later if wanted)."""
    class QuietHighs(highspy.Highs):
        def enableCallbacks(self) -> None:
            self.setOptionValue("output_flag", False)
            super().enableCallbacks()
    return QuietHighs()


def check_options(opts: Mapping[str, Any], spec: Spec, limits: Mapping[str, float]) -> None:
    """Reject bad option values before any work (HiGHS options are tried on a throwaway instance)."""
    check_threads(opts["threads"])
    check_bool("verbose", opts["verbose"])
    check_number("mip_rel_gap", opts["mip_rel_gap"])
    if opts["hint"] is not None:
        configuration_from_hint(spec, opts["hint"])
    parameters = opts["parameters"]
    if not isinstance(parameters, Mapping):
        raise SpecError(f"option parameters: expected a mapping of HiGHS option names to values, got {parameters!r:.40}")
    _apply(_quiet_highs(), {**BASE_OPTIONS, **parameters})


def _set_options(highs: Any, opts: Mapping[str, Any]) -> None:
    global _threads_in_pool
    values: dict[str, Any] = {**BASE_OPTIONS, "mip_rel_gap": float(opts["mip_rel_gap"])}
    if opts["threads"] is not None:
        values["threads"] = opts["threads"]
        if opts["threads"] != _threads_in_pool:
            highspy.Highs.resetGlobalScheduler(True)
            _threads_in_pool = opts["threads"]
    _apply(highs, {**values, **opts["parameters"]})
    highs.setOptionValue("output_flag", bool(opts["verbose"]))


def _apply(highs: Any, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if not isinstance(name, str) or highs.setOptionValue(name, value) != highspy.HighsStatus.kOk:
            raise SpecError(f"option parameters: HiGHS rejected {name}={value!r:.40} (unknown option or bad value; "
                            "see https://ergo-code.github.io/HiGHS/dev/options/definitions/)")


def _unit(magnitude: float) -> float:
    """A power of two (so scaling is exact) that brings `magnitude` into [0.5, 1)."""
    return math.ldexp(1.0, -math.frexp(magnitude)[1]) if magnitude > 0 else 1.0


def _pass_model(highs: Any, model: LinearModel, limits: Mapping[str, float]) -> float:
    """Load the model with objective and budget rows scaled to unit size (HiGHS's tolerances are
    absolute); return the objective's scale factor."""
    n = model.num_vars
    objective_unit = _unit(float(np.abs(model.objective.coef).max(initial=0.0)))
    highs.addCols(n, model.objective.coef * objective_unit, np.zeros(n), np.ones(n), 0,
                  np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0))
    integral = np.flatnonzero(model.integral).astype(np.int32)
    highs.changeColsIntegrality(len(integral), integral,
                                np.full(len(integral), highspy.HighsVarType.kInteger))
    highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
    lower, upper = list(model.row_lower), list(model.row_upper)
    starts, index, coef = [model.row_start[:-1]], [model.row_index], [model.row_coef]
    offset = len(model.row_index)
    for r, limit in limits.items():
        cost = model.costs[r]
        nz = np.flatnonzero(cost.coef)
        # scaled by the limit alone, HiGHS's absolute row tolerance (1e-9) is at most a quarter of 1e-9 of
        # the limit; the row is tightened by that much so that what HiGHS accepts fits the limit
        unit = 4 * _unit(max(1.0, abs(limit)))
        room = limit - cost.constant - HIGHS_ROW_TOLERANCE / unit
        starts.append(np.array([offset]))
        index.append(nz)
        coef.append(cost.coef[nz] * unit)
        lower.append(-np.inf)
        upper.append(room * unit)
        offset += len(nz)
    highs.addRows(len(lower), np.array(lower), np.array(upper), offset,
                  np.concatenate(starts).astype(np.int32), np.concatenate(index).astype(np.int32),
                  np.concatenate(coef))
    return objective_unit


def _answer(model: LinearModel, limits: Mapping[str, float], highs: Any, objective_unit: float) -> Answer:
    status = highs.getModelStatus()
    info = highs.getInfo()
    stats: dict[str, Any] = {
        "solver_status": highs.modelStatusToString(status),
        "nodes": int(info.mip_node_count),
        "highs_gap": float(info.mip_gap),
        "variables": model.num_vars,
        "integer_variables": int(model.integral.sum()),
        "rows": highs.getNumRow(),
        "nonzeros": highs.getNumNz(),
    }
    has_solution = info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible
    kinds = highspy.HighsModelStatus
    if status in (kinds.kInfeasible, kinds.kUnboundedOrInfeasible):
        return Answer(Status.INFEASIBLE, stats=stats)
    stopped = (kinds.kTimeLimit, kinds.kInterrupt, kinds.kIterationLimit, kinds.kSolutionLimit,
               kinds.kHighsInterrupt, kinds.kMemoryLimit)
    if status != kinds.kOptimal and status not in stopped:
        stats["message"] = f"HiGHS stopped with model status {stats['solver_status']!r}"
        return Answer(Status.ERROR, stats=stats)
    if not has_solution:
        return Answer(Status.TIME_LIMIT_NO_SOLUTION, bound=_bound(info, model, objective_unit), stats=stats)
    choice, active = model.decode(np.asarray(highs.getSolution().col_value))
    x = model.values(choice, active)          # the 0/1 point of the configuration, free of solver tolerance
    over = {r: model.costs[r].value(x) for r, limit in limits.items() if model.costs[r].value(x) > limit}
    if over:
        # HiGHS's tolerances let the configuration through; the limit does not: no answer rather than a wrong one
        stats["message"] = f"HiGHS returned a configuration over its limit by solver tolerance (costs {over})"
        return Answer(Status.ERROR, bound=_bound(info, model, objective_unit), stats=stats)
    value = model.objective.value(x)
    bound = _bound(info, model, objective_unit)
    bound = value if bound is None else max(bound, value)
    proven = status == highspy.HighsModelStatus.kOptimal and relative_gap(bound, value) <= OPTIMALITY_GAP
    return Answer(Status.OPTIMAL if proven else Status.FEASIBLE, choice, active, value, bound, stats)


def _bound(info, model: LinearModel, objective_unit: float) -> float | None:
    bound = float(info.mip_dual_bound)
    return bound / objective_unit + model.objective.constant if np.isfinite(bound) else None


register_backend("milp", solve, options=DEFAULTS, extra="milp", missing=MISSING, check=check_options,
                 features={Feature.EXACT, Feature.BOUND, Feature.HINT, Feature.PRESOLVE, Feature.THREADS,
                           Feature.TIME_LIMIT, Feature.INTERRUPT},
                 description="HiGHS MILP on the exact linearisation (exact)")
