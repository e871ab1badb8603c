"""Exact backend: OR-Tools CP-SAT on the exact linearisation of `mdp_opt.linear_model`
(marginal families; small components as one-hots over their configurations).

Every variable of the linearisation (one-hots, block binaries, gated one-hots, joint cells, component
configurations) is a CP-SAT Boolean: in integral solutions they are all 0/1, and Booleans let CP-SAT
propagate the marginal equalities as clauses. CP-SAT needs integer data, so the spec goes through the core's
cost-rounding reduction (`mdp_opt.rounding`):

- costs are scaled by a power of ten (the smallest that makes every cost entry integral, when one
  exists below `MAX_SCALED`, or 1 / `resolution`); when that leaves fractions, the rounded-down
  relaxation gives a bound that holds for the true problem and the rounded-up restriction a
  configuration that meets the true budget;
- the objective is scaled the same way and rounded up, so CP-SAT's bound is also a bound on the
  true objective, while the answer's value is evaluated exactly.
The answer is `optimal` only when that true bound is within 1e-9 relative of its true value: for
integral data that is whenever CP-SAT proves optimality. `stats["rounding"]` records the scales.

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
The call's deadline also stops CP-SAT at once (`stop_search`) on Ctrl-C.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from mdp_opt.backend import Feature, check_bool, check_threads, register_backend, take_options
from mdp_opt.deadline import Deadline
from mdp_opt.evaluate import configuration_from_hint
from mdp_opt.linear_model import LinearModel, build
from mdp_opt.result import Answer, Status
from mdp_opt.rounding import near_integral, solve_rounded
from mdp_opt.spec import Spec, SpecError, Term

try:
    from ortools.sat.python import cp_model
    MISSING = None
except ImportError as e:   # registered as missing; `solve` is never called then
    cp_model, MISSING = None, f"OR-Tools is not importable ({e})"

DEFAULTS: dict[str, Any] = {"threads": None, "verbose": False, "hint": None, "parameters": {}, "resolution": None}
# CP-SAT's own presolve rewrites the marginal equalities into clauses and exactly-ones that its LP
# relaxation (linearization_level 1) leaves out, losing the tight marginal bound: on the ResNet-101
# instance it stalls at a 90% gap after 30 s with 2 workers, where without it the proof takes ~4 s.
# The linearisation is already presolved (every row is needed), so it is off unless asked for.
# CP-SAT's own SIGINT handler is off too: it crashed the process (std::bad_function_call) when Ctrl-C came
# during a solve in solve()'s worker thread; the call's deadline stops the search instead (`stop_search`).
BASE_PARAMETERS: dict[str, Any] = {"cp_model_presolve": False, "catch_sigint_signal": False}
MAX_SCALED = 1e12          # largest scaled magnitude of a whole objective or cost expression
CHECK_EVERY = 8192         # variables or row entries added to the CP-SAT model between deadline checks


def solve(spec: Spec, limits: Mapping[str, float], options: dict) -> Answer:
    """Solve `spec` within `limits` with CP-SAT; see the module docstring for options and rounding."""
    opts = take_options(options, DEFAULTS, "cpsat")
    check_options(opts, spec, limits)
    deadline = opts["deadline"]
    hint = configuration_from_hint(spec, opts["hint"]) if opts["hint"] is not None else None
    scales = _scales(spec, opts["resolution"], limits)
    objective_scale = _choose_scale(spec.objective)
    passes: list[dict[str, Any]] = []

    def one_pass(rounded: Spec, caps: Mapping[str, float], start: tuple | None) -> Answer:
        model = build(rounded, caps, deadline)
        answer = _run(model, caps, start, opts, deadline)
        passes.append(answer.stats)
        return answer

    answer = solve_rounded(spec, limits, scales, one_pass, objective_scale, hint)
    answer.stats.update(
        objective_scale=objective_scale, cost_scales=scales,
        resolution={r: 1.0 / s for r, s in scales.items()},
        costs_exact={r: _integral(spec.costs[r], scales[r]) for r in limits},
        objective_exact=_integral(spec.objective, objective_scale),
        solver_status=passes[-1]["solver_status"] if passes else None, passes=len(passes))
    if len(passes) > 1:
        answer.stats["relaxation_solver_status"] = passes[0]["solver_status"]
    for key in ("variables", "rows", "conflicts", "branches", "deterministic_time"):
        if passes and key in passes[-1]:
            answer.stats[key] = passes[-1][key]
    return answer


def _run(model: LinearModel, caps: Mapping[str, float], hint: tuple | None, opts: Mapping[str, Any],
         deadline: Deadline) -> Answer:
    """One CP-SAT solve of the integral model: objective and caps are integers here."""
    cp = cp_model.CpModel()
    x = []
    for start in range(0, model.num_vars, CHECK_EVERY):     # building a large model takes seconds: keep checking
        deadline.check()
        x.extend(cp.new_bool_var("") for _ in range(start, min(model.num_vars, start + CHECK_EVERY)))
    done = 0
    for index, coef, lower, upper in model.rows():
        done += len(index)
        if done >= CHECK_EVERY:
            deadline.check()
            done = 0
        cp.add_linear_constraint(cp_model.LinearExpr.weighted_sum([x[i] for i in index], [int(c) for c in coef]),
                                 _int_or(lower, cp_model.INT_MIN), _int_or(upper, cp_model.INT_MAX))
    for r, cap in caps.items():
        cost = model.costs[r]
        nz = np.flatnonzero(cost.coef)
        # integer coefficients: the variable part fits exactly when it is at most floor(cap - constant); a cap
        # beyond CP-SAT's integers is clamped to them, which changes nothing (the part's total is under MAX_SCALED)
        room = math.floor(cap - cost.constant)
        cp.add_linear_constraint(cp_model.LinearExpr.weighted_sum([x[i] for i in nz], _ints(cost.coef[nz])),
                                 cp_model.INT_MIN, min(max(room, cp_model.INT_MIN), cp_model.INT_MAX))
    nz = np.flatnonzero(model.objective.coef)
    cp.maximize(cp_model.LinearExpr.weighted_sum([x[i] for i in nz], _ints(model.objective.coef[nz])))
    if hint is not None:
        for var, value in zip(x, model.values(*hint)):
            cp.add_hint(var, bool(value))
    solver = cp_model.CpSolver()
    _set_parameters(solver, opts, deadline)
    with deadline.hook(solver.stop_search):
        status = solver.solve(cp)
    stats: dict[str, Any] = {"solver_status": solver.status_name(status), "variables": model.num_vars,
                             "rows": model.num_rows + len(caps), "conflicts": solver.num_conflicts,
                             "branches": solver.num_branches, "deterministic_time": solver.deterministic_time}
    if status == cp_model.MODEL_INVALID:
        stats["message"] = "CP-SAT rejected the model: " + cp.validate()
        return Answer(Status.ERROR, stats=stats)
    if status == cp_model.INFEASIBLE:
        return Answer(Status.INFEASIBLE, stats=stats)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Answer(Status.TIME_LIMIT_NO_SOLUTION, stats=stats)
    choice, active = model.decode(np.array(solver.response_proto.solution, dtype=float))
    constant = model.objective.constant
    return Answer(Status.OPTIMAL if status == cp_model.OPTIMAL else Status.FEASIBLE, choice, active,
                  objective=solver.objective_value + constant, bound=solver.best_objective_bound + constant,
                  stats=stats)


def check_options(opts: Mapping[str, Any], spec: Spec, limits: Mapping[str, float]) -> None:
    """Reject bad option values before any work (parameters are tried on a throwaway solver)."""
    check_threads(opts["threads"])
    check_bool("verbose", opts["verbose"])
    if opts["hint"] is not None:
        configuration_from_hint(spec, opts["hint"])
    _set_parameters(cp_model.CpSolver(), opts, Deadline(None))
    _scales(spec, opts["resolution"], limits)


def _set_parameters(solver: Any, opts: Mapping[str, Any], deadline: Deadline) -> None:
    params = solver.parameters
    if opts["threads"] is not None:
        params.num_workers = opts["threads"]
    if deadline.limited:
        params.max_time_in_seconds = max(deadline.remaining(), 1e-3)
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


def _scales(spec: Spec, option: Any, limits: Mapping[str, float]) -> dict[str, float]:
    """Per limited resource, the scale its costs are counted in: 1 / the `resolution` asked for (which must
    keep every cost expression below MAX_SCALED units), or automatic (`_choose_scale`)."""
    if option is None:
        values = {r: None for r in limits}
    elif isinstance(option, Mapping):
        unknown = sorted(set(option) - set(limits), key=str)
        if unknown:
            raise SpecError(f"option resolution: {unknown[0]!r} is not a budgeted resource ({sorted(limits)})")
        values = {r: option.get(r) for r in limits}
    else:
        values = {r: option for r in limits}
    scales = {}
    for r, v in values.items():
        if v is None:
            scales[r] = _choose_scale(spec.costs[r])
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
            raise SpecError(f"option resolution: expected a positive cost unit (number, or resource -> number), "
                            f"got {v!r:.40} for {r!r}")
        magnitude = _magnitude(spec.costs[r])
        if magnitude / v > MAX_SCALED:
            raise SpecError(f"option resolution: {v:g} is too fine for CP-SAT on {r!r}: its costs (up to {magnitude:.3g}) "
                            f"would count over {MAX_SCALED:g} units; use at least {magnitude / MAX_SCALED:.3g}")
        scales[r] = 1.0 / float(v)
    return scales


def _magnitude(terms: tuple[Term, ...]) -> float:
    """An upper bound on the absolute total of `terms` over every configuration."""
    return sum(float(np.abs(t.table).max(initial=0.0)) for t in terms)


def _choose_scale(terms: tuple[Term, ...]) -> float:
    """The smallest power of ten making every entry integral (up to float noise) while the largest possible
    total stays below MAX_SCALED; else the finest power of ten that keeps it there."""
    magnitude = _magnitude(terms)
    if magnitude == 0:
        return 1.0
    finest = 10.0 ** math.floor(math.log10(MAX_SCALED / magnitude))
    power = 1.0
    while power <= finest:
        if all(near_integral(t.table * power).all() for t in terms):
            return power
        power *= 10.0
    return finest


def _integral(terms: tuple[Term, ...], scale: float) -> bool:
    return all(near_integral(t.table * scale).all() for t in terms)


def _ints(values: np.ndarray) -> list[int]:
    return [int(v) for v in np.round(values)]


def _int_or(value: float, default: int) -> int:
    return int(value) if math.isfinite(value) else default


register_backend("cpsat", solve, options=DEFAULTS, extra="cpsat", missing=MISSING, check=check_options,
                 features={Feature.EXACT, Feature.BOUND, Feature.HINT, Feature.PRESOLVE, Feature.THREADS,
                           Feature.TIME_LIMIT, Feature.INTERRUPT},
                 description="OR-Tools CP-SAT on the exact linearisation (exact)")
