"""Cost rounding as a reduction, for backends that count in integer units (CP-SAT) or on a grid (`dp`).

`round_costs(spec, limits, scales, direction)` multiplies each resource's cost tables by its
scale and rounds them to integers, *up* (every configuration within the rounded limit fits the
true one: answers stay feasible, values found are achievable) or *down* (every truly feasible
configuration fits the rounded limit: the problem is a relaxation, so its bound holds for the
true one). Entries already integral after scaling, up to float noise, are left exact, and when
every entry is, the rounding changes nothing (`exact`). An `objective_scale` also rounds the
objective up to integers, so a bound of the rounded problem still bounds the true one.

`solve_rounded` runs the passes a backend needs: one when the rounding is exact; otherwise
the rounded-down relaxation (its bound is valid; its configuration, when it fits the true
limits, is optimal) and, only if that is not enough, the rounded-up restriction for a feasible
configuration. Every configuration is valued and checked on the true spec in `lift`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

from .evaluate import evaluate
from .result import OPTIMALITY_GAP, Answer, Status, relative_gap
from .spec import Spec, Term

_INTEGRAL_ULPS = 16 * np.finfo(float).eps
DIRECTIONS = ("up", "down")

Configuration = tuple[dict[str, int], dict[str, bool]]
# solve(spec, limits, hint) -> Answer: one pass of a backend on a (rounded) problem
PassFn = Callable[[Spec, Mapping[str, float], "Configuration | None"], Answer]


def near_integral(values: np.ndarray) -> np.ndarray:
    """Entries within float noise (16 ulps) of an integer."""
    return np.abs(values - np.round(values)) <= _INTEGRAL_ULPS * np.maximum(1.0, np.abs(values))


def _rounded(table: np.ndarray, scale: float, direction: str) -> tuple[np.ndarray, bool]:
    scaled = table * scale
    integral = near_integral(scaled)
    rounded = np.where(integral, np.round(scaled), np.ceil(scaled) if direction == "up" else np.floor(scaled))
    return rounded, bool(integral.all())


@dataclass
class RoundedCosts:
    """A spec whose costs (and optionally objective) are scaled and rounded (a `Reduction`).

    `scales` maps each resource in `limits` to its scale (None: left as it is); `exact` is True
    when no cost entry changed beyond scaling, so exactly the same configurations fit (a rounded
    objective only loosens the bound, which `lift` compares with the true value)."""

    original: Spec
    original_limits: dict[str, float]
    direction: str
    scales: dict[str, float | None]
    objective_scale: float | None
    spec: Spec
    limits: dict[str, float]
    exact: bool
    stats: dict[str, Any] = field(default_factory=dict)

    def fits(self, choice: Mapping[str, int], active: Mapping[str, bool]) -> tuple[bool, float]:
        """(whether the configuration fits the true limits, its true value)."""
        ev = evaluate(self.original, choice, active)
        return all(ev.costs[r] <= limit for r, limit in self.original_limits.items()), ev.value

    def at(self, limits: Mapping[str, float]) -> "RoundedCosts":
        """The same rounded spec under other true limits (their rounded forms alongside)."""
        return replace(self, original_limits=dict(limits), limits=_scaled_limits(limits, self.scales))

    def lift(self, answer: Answer) -> Answer:
        """The answer in true terms: its value re-evaluated on the original spec, its bound kept where it is
        valid (exact rounding, or costs rounded down). Status `error` (with a message) when there is no
        configuration to return: one that does not fit the true limits (expected of a rounded-down pass),
        or none within the rounded-up limits although the true problem may have one."""
        status = Status(answer.status)
        stats = {**answer.stats, "rounding": self.stats}
        bound_valid = self.exact or self.direction == "down"
        bound = None
        if answer.bound is not None and bound_valid and status is not Status.INFEASIBLE:
            bound = answer.bound / self.objective_scale if self.objective_scale else answer.bound
        if status is Status.INFEASIBLE:
            if bound_valid:           # infeasible exactly, or even with costs rounded down: infeasible for real
                return Answer(Status.INFEASIBLE, stats=stats)
            return Answer(Status.ERROR, stats={**stats, "message": (
                "no configuration fits the budget with costs rounded up to the resolution, though one may exist; "
                "pass a finer resolution (or none)")})
        if not status.has_solution or answer.choice is None:
            return Answer(status, bound=bound, stats=stats)
        choice = {d: int(k) for d, k in answer.choice.items()}
        active = {b: bool(a) for b, a in (answer.active or {}).items()}
        fits, value = self.fits(choice, active)
        if not fits:
            return Answer(Status.ERROR, bound=bound, stats={**stats, "message": (
                f"the configuration of the costs rounded {self.direction} does not fit the true limits")})
        if bound is not None:
            bound = max(bound, value)
        proven = bound is not None and relative_gap(bound, value) <= OPTIMALITY_GAP
        return Answer(Status.OPTIMAL if proven else Status.FEASIBLE, choice, active, value, bound, stats)


def _scaled_limits(limits: Mapping[str, float], scales: Mapping[str, float | None]) -> dict[str, float]:
    """Limits times their scale (a limit without a scale is left as it is)."""
    return {r: limit * scales[r] if scales.get(r) is not None else limit for r, limit in limits.items()}


def _rounded_terms(terms: tuple[Term, ...], scale: float, direction: str) -> tuple[tuple[Term, ...], bool]:
    """The terms scaled and rounded. A constant term (no dims, no block) is only scaled: it is the same for
    every configuration, so rounding it would change no answer but would blur the values and the limit."""
    exact = True
    out = []
    for t in terms:
        if not t.dims and t.block is None:
            out.append(Term((), t.table * scale))
            continue
        table, integral = _rounded(t.table, scale, direction)
        exact &= integral
        out.append(Term(t.dims, table, t.block))
    return tuple(out), exact


def round_costs(spec: Spec, limits: Mapping[str, float], scales: Mapping[str, float | None], direction: str,
                objective_scale: float | None = None) -> RoundedCosts:
    """Apply the rounding: costs of resource r times `scales[r]`, rounded `direction` ("up" or "down"),
    constant terms only scaled; limits times the same scale; the objective times `objective_scale`, rounded
    up, when given. Every term but the constants is then integral."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
    costs: dict[str, tuple[Term, ...]] = {}
    costs_exact: dict[str, bool] = {}
    for r, terms in spec.costs.items():
        scale = scales.get(r) if r in limits else None
        if scale is None:
            costs[r] = terms
            continue
        costs[r], costs_exact[r] = _rounded_terms(terms, scale, direction)
    objective, objective_exact = spec.objective, True
    if objective_scale is not None:
        objective, objective_exact = _rounded_terms(spec.objective, objective_scale, "up")
    exact = all(costs_exact.values())      # the same configurations fit: one pass decides
    new_limits = _scaled_limits(limits, scales)
    rounded_spec = spec.replace(costs=costs, objective=objective, budgets={})
    stats = {"direction": direction, "exact": exact, "scales": {r: scales.get(r) for r in limits},
             "costs_exact": costs_exact, "objective_scale": objective_scale, "objective_exact": objective_exact}
    return RoundedCosts(spec, dict(limits), direction, {r: scales.get(r) for r in limits}, objective_scale,
                        rounded_spec, new_limits, exact, stats)


def solve_rounded(spec: Spec, limits: Mapping[str, float], scales: Mapping[str, float | None], solve: PassFn,
                  objective_scale: float | None = None, hint: Configuration | None = None) -> Answer:
    """The answer of `solve` on `spec` with costs rounded at `scales` (see the module docstring).

    One pass when the rounding is exact; otherwise `answer_from_passes`."""
    up = round_costs(spec, limits, scales, "up", objective_scale)
    if up.exact:
        return up.lift(solve(up.spec, up.limits, hint))
    down = round_costs(spec, limits, scales, "down", objective_scale)
    return answer_from_passes(down, up, lambda start: solve(down.spec, down.limits, start),
                              lambda start: solve(up.spec, up.limits, start), hint)


def answer_from_passes(down: RoundedCosts, up: RoundedCosts, solve_down: Callable[[Any], Answer],
                       solve_up: Callable[[Any], Answer], hint: Configuration | None = None) -> Answer:
    """The true answer from the rounded-down pass (its bound holds; its configuration, when it fits the true
    limits, is optimal) and, only when that is not enough, the rounded-up pass (a feasible configuration),
    started from the first pass's configuration: the best of the two with the rounded-down bound. Each
    `solve_*(start)` solves its reduction's problem from the starting configuration `start` (or None)."""
    raw = solve_down(hint)
    relaxed = down.lift(raw)
    if relaxed.status in (Status.INFEASIBLE, Status.OPTIMAL):
        return relaxed
    start = (raw.choice, raw.active) if raw.choice is not None else hint
    restricted = up.lift(solve_up(start))
    stats = {"bound_pass": relaxed.stats, "configuration_pass": restricted.stats}
    candidates = [a for a in (relaxed, restricted) if a.status.has_solution]
    bound = relaxed.bound
    if not candidates:
        status = restricted.status if restricted.status is Status.ERROR else Status.TIME_LIMIT_NO_SOLUTION
        message = restricted.stats.get("message")
        return Answer(status, bound=bound, stats={**stats, **({"message": message} if message else {})})
    best = max(candidates, key=lambda a: a.objective)
    if bound is not None:
        bound = max(bound, best.objective)
    proven = bound is not None and relative_gap(bound, best.objective) <= OPTIMALITY_GAP
    return Answer(Status.OPTIMAL if proven else Status.FEASIBLE, best.choice, best.active, best.objective, bound,
                  stats)
