"""Meet a budget on *measured* cost: re-solve under adjusted budgets until the answer measures within it.

A spec's latency tables are a model; the pruned network is what is timed. When a configuration
measures over budget, the budget given to the solver is tightened by the ratio measured / predicted
and the spec is solved again; when it measures under, the budget is loosened the same way to use the
slack; once answers on both sides are known, the budget between them is bisected. Every answer is
verified like any `solve()` result, and the most valuable one that measured within the target is
returned.

    import mdp_opt
    fit = mdp_opt.solve_measured(spec, "50%", measure=lambda r: measure_latency(handle.apply(r), x))
    fit.within, fit.measured, fit.result

This module is framework-neutral: `measure(result)` is any callable returning the measured cost in
the spec's units (e.g. milliseconds for a calibrated latency spec).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

from .budgets import BudgetLike, default_resource, resolve_budgets, within_budget
from .result import Result
from .solve import solve
from .spec import Spec, SpecError

# Stop bisecting when the adjusted budgets on both sides of the target are this close (relative to it).
DEFAULT_TOLERANCE = 0.005
DEFAULT_MAX_ROUNDS = 8


@dataclass(frozen=True)
class MeasuredRound:
    """One solve of the search: the budget given to the solver, what came back, and what it measured."""

    budget: float
    status: str
    predicted: float | None     # the answer's cost in the spec
    measured: float | None      # None when there was no answer, or it was measured in an earlier round
    objective: float | None


@dataclass(frozen=True)
class MeasuredFit:
    """The outcome of `fit_measured` / `solve_measured`.

    `result` is the most valuable answer that measured within `target`. When none did, `within` is
    False and `result` is the answer that measured lowest, or the last solve's result (infeasible)
    when the model had no answer at any budget tried.
    """

    result: Result
    target: float
    measured: float | None
    within: bool
    rounds: tuple[MeasuredRound, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: within, target, measured, the result (as `Result.to_dict`) and every round."""
        return {"within": self.within, "target": self.target, "measured": self.measured,
                "result": self.result.to_dict(), "rounds": [asdict(r) for r in self.rounds]}

    def summary(self) -> str:
        head = (f"measured {self.measured:.6g} against target {self.target:.6g}: "
                f"{'within' if self.within else 'NOT within'} after {len(self.rounds)} solves"
                if self.measured is not None else f"no answer to measure ({self.result.status.value})")
        lines = [head] + [f"  budget {r.budget:.6g}: {r.status}"
                          + ("" if r.predicted is None else f", predicted {r.predicted:.6g}")
                          + ("" if r.measured is None else f", measured {r.measured:.6g}") for r in self.rounds]
        return "\n".join(lines)


def fit_measured(pick: Callable[[float], Result], measure: Callable[[Result], float], target: float,
                 resource: str, *, max_rounds: int = DEFAULT_MAX_ROUNDS, tolerance: float = DEFAULT_TOLERANCE,
                 ceiling: float | None = None) -> MeasuredFit:
    """Search the budget handed to `pick` for the most valuable answer whose measured cost is <= `target`.

    Args:
        pick: budget -> verified Result (e.g. a `solve` at that budget for `resource`); its
            `costs[resource]` is the predicted cost.
        measure: Result -> measured cost, in the same units as `target`.
        target: the budget the measured cost must meet.
        resource: the cost the budget applies to.
        max_rounds: the most solves (and measurements).
        tolerance: stop when the budgets known to give answers within and over the target are
            closer than this fraction of the target.
        ceiling: a budget at which `pick` has an answer if it ever has one (e.g. the full cost);
            when the model finds no answer at the target, the budget is doubled up to it, since
            the measured cost may be lower than the model's.
    """
    if not (isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target) and target > 0):
        raise SpecError(f"target: expected a positive finite number, got {target!r}")
    if not (isinstance(max_rounds, int) and not isinstance(max_rounds, bool) and max_rounds >= 1):
        raise SpecError(f"max_rounds: expected an integer >= 1, got {max_rounds!r}")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise SpecError(f"tolerance: expected a fraction in (0, 1), got {tolerance!r}")
    if ceiling is not None and not (isinstance(ceiling, (int, float)) and math.isfinite(ceiling) and ceiling > 0):
        raise SpecError(f"ceiling: expected a positive finite budget or None, got {ceiling!r}")
    search = _Search(float(target), tolerance, ceiling)
    budget: float | None = float(target)
    result = None
    while budget is not None and len(search.rounds) < max_rounds:
        result = pick(budget)
        if not result.has_solution:
            search.no_answer(budget, result)
        else:
            if resource not in result.costs:
                raise SpecError(f"resource: {resource!r} is not a cost of the answers `pick` returns "
                                f"({sorted(result.costs)})")
            key = (tuple(sorted(result.kept.items())), tuple(sorted(result.active.items())))
            if key in search.measured_of:   # the same configuration again: not measured twice
                search.repeat(budget, result, result.costs[resource], key)
                if not search.bracketed:
                    break                   # a step by measured / predicted would ask for the same budget again
            else:
                search.answer(budget, result, result.costs[resource], _checked_measurement(measure(result)), key)
        budget = search.next_budget(budget)
    if search.best is not None:
        return MeasuredFit(search.best[0], float(target), search.best[1], True, tuple(search.rounds))
    if search.closest is not None:
        return MeasuredFit(search.closest[0], float(target), search.closest[1], False, tuple(search.rounds))
    return MeasuredFit(result, float(target), None, False, tuple(search.rounds))


class _Search:
    """The bracket of `fit_measured`: what is known about the budgets tried so far."""

    def __init__(self, target: float, tolerance: float, ceiling: float | None) -> None:
        self.target, self.tolerance, self.ceiling = target, tolerance, ceiling
        self.rounds: list[MeasuredRound] = []
        self.measured_of: dict[tuple, float] = {}          # configuration -> its measured cost
        self.best: tuple[Result, float] | None = None      # the most valuable answer measured within
        self.closest: tuple[Result, float] | None = None   # the answer measured lowest
        self.low: float | None = None    # the largest budget with no answer or an answer measured within
        self.over: float | None = None   # the smallest predicted cost of an answer measured over the target
        self.last: tuple[float, float] | None = None   # (predicted, measured) of the latest round

    def no_answer(self, budget: float, result: Result) -> None:
        self.rounds.append(MeasuredRound(budget, result.status.value, None, None, None))
        self.raise_low(budget)
        self.last = None

    @property
    def bracketed(self) -> bool:
        return self.low is not None and self.over is not None

    def raise_low(self, budget: float) -> None:
        self.low = budget if self.low is None else max(self.low, budget)

    def repeat(self, budget: float, result: Result, predicted: float, key: tuple) -> None:
        """A configuration measured before came back at `budget`: what it measured then holds for `budget`."""
        self.rounds.append(MeasuredRound(budget, result.status.value, predicted, None, result.objective))
        if within_budget(self.measured_of[key], self.target):
            self.raise_low(budget)

    def answer(self, budget: float, result: Result, predicted: float, measured: float, key: tuple) -> None:
        self.rounds.append(MeasuredRound(budget, result.status.value, predicted, measured, result.objective))
        self.measured_of[key] = measured
        self.last = (predicted, measured)
        if self.closest is None or measured < self.closest[1]:
            self.closest = (result, measured)
        if within_budget(measured, self.target):
            if self.best is None or result.objective > self.best[0].objective:
                self.best = (result, measured)
            self.raise_low(budget)
        else:
            self.over = predicted if self.over is None else min(self.over, predicted)

    def next_budget(self, budget: float) -> float | None:
        """The next budget to try, or None to stop."""
        if self.bracketed:                                       # bisect
            if self.over - self.low <= self.tolerance * self.target:
                return None
            return (self.low + self.over) / 2
        if self.last is None:                                    # no answer yet: loosen towards the ceiling
            if self.best is not None or (self.ceiling is not None and budget >= self.ceiling):
                return None
            return 2 * budget if self.ceiling is None else min(2 * budget, self.ceiling)
        predicted, measured = self.last
        if measured == 0:
            return 2 * budget                                    # fits, with no ratio to scale by
        if predicted == 0:
            return None                                          # over, and nothing cheaper to ask for
        return predicted * self.target / measured                # scale by measured / predicted


def solve_measured(spec: Spec, budget: BudgetLike, measure: Callable[[Result], float], *, resource: str | None = None,
                   max_rounds: int = DEFAULT_MAX_ROUNDS, tolerance: float = DEFAULT_TOLERANCE,
                   **solve_options: Any) -> MeasuredFit:
    """`solve` so that the answer's *measured* cost of `resource` meets the budget (see `fit_measured`).

    Args:
        spec, budget: as for `solve`; the budget of `resource` (default: the resource a bare budget
            refers to) is the target for the measured cost, other budgets are kept as they are.
        measure: Result -> the configuration's measured cost in the spec's units, e.g.
            `lambda r: measure_latency(handle.apply(r), example_input)` for a calibrated latency spec.
        solve_options: passed to every `solve` (backend, time_limit, presolve, backend options).
    """
    if not callable(measure):
        raise SpecError(f"measure: expected a callable Result -> measured cost, got {type(measure).__name__}")
    resource = resource if resource is not None else default_resource(spec, "resource")
    if resource not in spec.costs:
        raise SpecError(f"resource: {resource!r} is not in the spec's costs ({sorted(spec.costs)})")
    budgets = resolve_budgets(spec, budget)
    if resource not in budgets:
        raise SpecError(f"budget: no budget for {resource!r}; give one, e.g. budget={{'{resource}': '50%'}}")
    return fit_measured(lambda b: solve(spec, {**budgets, resource: b}, **solve_options), measure,
                        budgets[resource], resource, max_rounds=max_rounds, tolerance=tolerance,
                        ceiling=spec.full_cost(resource))


def _checked_measurement(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"measure: expected a finite cost >= 0 for the configuration, got {value!r}")
    return float(value)
