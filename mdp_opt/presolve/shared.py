"""Work the presolve can share across many solves of one spec at different budgets (the frontier's).

    shared = SharedPresolve(spec)
    for budget in sorted(budgets):
        solve(spec, budget, presolve=shared)

One `SharedPresolve` holds what does not depend on the budget: the factor graph and its
elimination plan (built once), every Lagrangian pass already made (multipliers -> maximiser;
a pass at the same multipliers is not repeated, and the maximisers met bracket the next
budget's multiplier: the cutting-plane search of `dual.py` starts from the two nearest in cost
instead of from scratch) and the feasible configurations found so far (each is offered as an
incumbent to every later budget; one that fits is feasible there). With one limited resource it also
keeps the max-marginals of every fixing made on the whole graph: a later budget whose multipliers lie
between two of them runs its passes and its fixing on the smaller graph of the states some multiplier
in between may use (`interval.py`), and the frontier fixes every tenth budget first so that the others
lie between. None of this changes what a solve proves: every bound still comes from an exact
elimination pass at some multipliers, every incumbent is re-checked against the new limits, and the
fixing and the backend run as before.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..factor_graph import SpecGraph, TableTooLarge
from ..spec import Spec
from .fixing import bound_offset
from .interval import Endpoint, IntervalGraph

Point = tuple[np.ndarray, float, dict[str, float]]      # (assignment, value, costs)
KEPT_INTERVALS = 2      # smaller graphs of multiplier ranges kept at once (each holds its own elimination plan)


class SharedPresolve:
    """The budget-independent part of the presolve of `spec`, shared by the solves that pass it as
    `solve(..., presolve=shared)`; `stats` counts what was reused."""

    def __init__(self, spec: Spec, memory_limit: float | None = None) -> None:
        from . import PRESOLVE_MEMORY_LIMIT
        self.spec = spec
        self.memory_limit = PRESOLVE_MEMORY_LIMIT if memory_limit is None else memory_limit
        self._graph: SpecGraph | None = None
        self._too_large: str | None = None
        self._passes: dict[tuple, tuple[float, np.ndarray]] = {}
        self._maximisers: list[Point] = []          # maximisers of the passes, for brackets
        self._feasible: dict[bytes, Point] = {}     # incumbents of earlier solves
        self._endpoints: dict[str, list[Endpoint]] = {}     # one resource: max-marginals of the fixings so far
        self._intervals: dict[tuple[str, float, float], IntervalGraph] = {}
        self.stats: dict[str, Any] = {"solves": 0, "passes_run": 0, "passes_reused": 0, "interval_passes": 0,
                                      "interval_graphs": 0, "interval_fixings": 0}

    def graph(self) -> SpecGraph:
        """The spec's factor graph with its elimination plan, built on first use; raises `TableTooLarge`
        (every time) when the plan exceeds the presolve's memory limit."""
        if self._too_large is not None:
            raise TableTooLarge(self._too_large)
        if self._graph is None:
            graph = SpecGraph(self.spec, memory_limit=self.memory_limit)
            try:
                graph.plan  # noqa: B018 - builds the elimination plan, which refuses a table over the limit
            except TableTooLarge as e:
                self._too_large = str(e)
                raise
            self._graph = graph
        return self._graph

    def max_sum(self, lambdas: Mapping[str, float], value_weight: float = 1.0) -> tuple[float, np.ndarray]:
        """`graph().max_sum(lambdas, value_weight)`, remembered: the same multipliers are not eliminated twice."""
        key = (value_weight, tuple(sorted((r, float(l)) for r, l in lambdas.items() if l)))
        found = self._passes.get(key)
        if found is not None:
            self.stats["passes_reused"] += 1
            return found[0], found[1].copy()
        interval = self._interval(lambdas) if value_weight == 1.0 else None
        if interval is not None:
            value, x = interval.max_sum(interval_multiplier(lambdas, interval.resource))
            self.stats["interval_passes"] += 1
        else:
            value, x = self.graph().max_sum(lambdas, value_weight)
        self.stats["passes_run"] += 1
        self._passes[key] = (value, x.copy())
        if value_weight == 1.0:
            v, costs = self.graph().evaluate(x)
            self._maximisers.append((x.copy(), v, costs))
        return value, x

    def state_bounds(self, lambdas: Mapping[str, float], limits: Mapping[str, float], incumbent_value: float
                     ) -> list[np.ndarray]:
        """`fixing.state_bounds(graph(), lambdas, limits)`, or with one limited resource, between two multipliers
        whose bounds were computed before, bounds from their interval's smaller graph (`interval.py`) when every
        state it drops is bound below `incumbent_value`: the states kept against any value from the incumbent's up
        are then the same. Bounds computed on the whole graph are kept as endpoints of later intervals."""
        resource = _only(limits, lambdas)
        interval = self._interval(lambdas)
        offset = bound_offset(self.graph(), lambdas, limits)
        if interval is not None:
            bounds, dropped = interval.bounds(interval_multiplier(lambdas, interval.resource))
            if dropped + offset < incumbent_value:
                self.stats["interval_fixings"] += 1
                return [b + offset for b in bounds]
        graph = self.graph()
        mm = graph.max_marginals(lambdas)
        if resource is not None:
            value, costs = graph.evaluate(mm.assignment)
            lam = interval_multiplier(lambdas, resource)
            ends = self._endpoints.setdefault(resource, [])
            if all(e.lam != lam for e in ends):
                ends.append(Endpoint(lam, tuple(mm.marginals), mm.assignment.copy(), value, costs[resource]))
        return [marginal + offset for marginal in mm.marginals]

    def _interval(self, lambdas: Mapping[str, float]) -> IntervalGraph | None:
        """The smaller graph of the two endpoints nearest `lambdas` on either side (built on first use), when
        they have one multiplier and there are such endpoints."""
        nonzero = [r for r, lam in lambdas.items() if lam]
        if len(nonzero) > 1 or not self._endpoints:
            return None
        for resource, ends in list(self._endpoints.items()):    # snapshots: an abandoned solve's thread may add
            if nonzero and nonzero != [resource]:
                continue
            lam = interval_multiplier(lambdas, resource)
            below = [e for e in list(ends) if e.lam <= lam]
            above = [e for e in list(ends) if e.lam >= lam]
            if not below or not above:
                continue
            low, high = max(below, key=lambda e: e.lam), min(above, key=lambda e: e.lam)
            if low.lam == high.lam:
                continue
            key = (resource, low.lam, high.lam)
            if key not in self._intervals:
                for old in list(self._intervals)[:max(0, len(self._intervals) + 1 - KEPT_INTERVALS)]:
                    self._intervals.pop(old, None)                # the oldest first (budgets come in order)
                self._intervals[key] = IntervalGraph(self.graph(), resource, low, high)
                self.stats["interval_graphs"] += 1
            return self._intervals[key]
        return None

    def bracket(self, resource: str, limit: float) -> tuple[Point | None, Point | None]:
        """`nearest(maximisers met so far, resource, limit)`."""
        return nearest(list(self._maximisers), resource, limit)  # a snapshot: an abandoned solve's thread may add

    def incumbents(self, limits: Mapping[str, float]) -> list[Point]:
        """Feasible configurations of earlier solves that fit `limits`, best first (at most a few)."""
        fits = [p for p in list(self._feasible.values()) if all(p[2][r] <= lim for r, lim in limits.items())]
        return sorted(fits, key=lambda p: -p[1])[:3]

    def remember(self, x: np.ndarray | None, value: float) -> None:
        """Keep a feasible configuration of a solve for later budgets."""
        if x is None or not math.isfinite(value):
            return
        _, costs = self.graph().evaluate(x)
        self._feasible.setdefault(x.tobytes(), (x.copy(), value, costs))

    def remember_configuration(self, choice: Mapping[str, int], active: Mapping[str, bool], value: float) -> None:
        """`remember` for a configuration given by name (a backend's lifted answer)."""
        self.remember(self.graph().assignment(choice, active), value)


def interval_multiplier(lambdas: Mapping[str, float], resource: str) -> float:
    """The multiplier of `resource` in `lambdas` (0 when absent)."""
    return float(lambdas.get(resource, 0.0))


def _only(limits: Mapping[str, float], lambdas: Mapping[str, float]) -> str | None:
    """The one limited resource, when the other multipliers are 0; else None."""
    if len(limits) != 1:
        return None
    (resource,) = limits
    return resource if all(not lam for r, lam in lambdas.items() if r != resource) else None


def nearest(points: list[Point], resource: str, limit: float) -> tuple[Point | None, Point | None]:
    """Of `points`, the one of largest `resource` cost within `limit` and the one of least cost above it (None
    where there is none; equal costs: the higher value): each gives a cutting plane of the dual function, and
    for one resource the two nearest hull points bracket the best multiplier."""
    within = over = None
    for point in points:
        cost = point[2][resource]
        if cost <= limit and (within is None or cost > within[2][resource]
                              or (cost == within[2][resource] and point[1] > within[1])):
            within = point
        elif cost > limit and (over is None or cost < over[2][resource]
                               or (cost == over[2][resource] and point[1] > over[1])):
            over = point
    return within, over
