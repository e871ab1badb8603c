"""The Lagrangian dual: an upper bound on the best feasible value, and feasible configurations met on the way.

For multipliers lambda >= 0 (one per limited resource)

    L(lambda) = max_x  value(x) - sum_r lambda_r * (cost_r(x) - limit_r)

bounds the best feasible value from above and decomposes over the factor graph, so variable
elimination computes it exactly. `LagrangianSearch.run` minimises it over lambda (an exact
cutting-plane line search for one resource; Kelley's cutting planes over all of them at once for
several, `master.py`), keeps the best
feasible configuration it meets (confirmed with the core's `evaluate`, then improved by
`LocalSearch`) and the multipliers of the best bound.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..deadline import Deadline
from ..evaluate import evaluate
from ..factor_graph import SpecGraph
from ..result import OPTIMALITY_GAP, relative_gap
from ..spec import Spec
from .local_search import LocalSearch
from .master import envelope_minimum
from .shared import Point, SharedPresolve, nearest
from .warm import WARM_START_MIN_CHOICES

MAX_LINE_SEARCH_STEPS = 100
MAX_PLANE_PASSES = 500     # several resources: passes of the cutting-plane search (measured: 20-60 to the minimum)
BOX = 1e3                  # several resources: multipliers stay below BOX * (largest value) per unit of relative cost
CLIMB_STARTS = 3
GAP_SHARE = 0.05    # one resource: the line search stops once the bound can improve by at most this share of the gap
FRONTIER_GAP_SHARE = 0.01   # the same within a frontier (a `SharedPresolve`) of a large spec (see `settled`)


class LagrangianSearch:
    """Minimises L(lambda) over lambda >= 0, tracking the best bound and the best feasible configuration."""

    def __init__(self, graph: SpecGraph, spec: Spec, limits: Mapping[str, float], deadline: Deadline | None = None,
                 shared: SharedPresolve | None = None, seeds: Sequence[Point] = (), tolerance: float = 1e-10,
                 polish: bool = True, cutoff: float = -math.inf) -> None:
        """`shared`: passes and maximisers of earlier searches on the same graph (other limits) to reuse.
        `seeds`: configurations of the graph (with their value and costs) to start from: offered as incumbents,
        one within every limit stands in for the cheapest-configuration passes, and with one limited resource
        the two nearest the limit start the line search (see `presolve.warm`).
        `tolerance`: the line search stops when a pass lies within this fraction of the cutting-plane model.
        `polish`: improve the incumbent by local search at the end.
        `cutoff`: a value known to be attained elsewhere (probing's incumbent): the search stops once its bound
        is below it, since nothing here can then beat it."""
        self.graph, self.spec, self.shared = graph, spec, shared
        self.seeds, self.tolerance, self.polish, self.cutoff = list(seeds), tolerance, polish, cutoff
        self.points: list[Point] = []       # every maximiser met, with its value and costs
        self.limits = dict(limits)
        self.deadline = deadline or Deadline(None)
        self.bound = math.inf
        self.best_lambdas: dict[str, float] = {r: 0.0 for r in self.limits}
        self.incumbent: np.ndarray | None = None
        self.incumbent_value = -math.inf
        self.passes = 0
        self.local = LocalSearch(graph, self.limits, self.deadline)
        # see `settled`: None where the line search always runs to its tolerance
        large = sum(d.size for d in spec.dims) >= WARM_START_MIN_CHOICES
        self.gap_share = GAP_SHARE if shared is None else FRONTIER_GAP_SHARE if large else None

    # -- points of the dual function
    def point(self, lambdas: Mapping[str, float]) -> tuple[np.ndarray, float, dict[str, float]]:
        """Maximise the Lagrangian at `lambdas`; update bound and incumbent; return (x, value, costs)."""
        value, x = self._max_sum(lambdas)
        self.passes += 1
        bound = value + sum(lam * self.limits[r] for r, lam in lambdas.items()) + self.graph.rounding_margin(lambdas)
        if bound < self.bound:
            self.bound, self.best_lambdas = bound, dict(lambdas)
        v, costs = self.graph.evaluate(x)
        self.points.append((x, v, costs))
        self.offer(x, v, costs)
        return x, v, costs

    def _max_sum(self, lambdas: Mapping[str, float], value_weight: float = 1.0) -> tuple[float, np.ndarray]:
        if self.shared is not None:
            return self.shared.max_sum(lambdas, value_weight)
        return self.graph.max_sum(lambdas, value_weight)

    def offer(self, x: np.ndarray, value: float, costs: Mapping[str, float]) -> None:
        """Keep `x` as incumbent if it is feasible and better (confirmed with the core's evaluate)."""
        if value <= self.incumbent_value or not self.local.feasible(costs):
            return
        choice, active = self.graph.configuration(x)
        ev = evaluate(self.spec, choice, active)
        if ev.value > self.incumbent_value and self.local.feasible(ev.costs):
            self.incumbent, self.incumbent_value = x.copy(), ev.value

    def closed(self) -> bool:
        """True when nothing is left to search: the incumbent is proven optimal, or the bound is below `cutoff`."""
        if self.bound < self.cutoff:
            return True
        return self.incumbent is not None and relative_gap(self.bound, self.incumbent_value) <= OPTIMALITY_GAP

    def settled(self, improvable: float) -> bool:
        """One limited resource, `polish` on: True when the bound can improve by at most `improvable` (its
        distance to the cutting-plane model's minimum) and that is at most GAP_SHARE of the gap to the incumbent
        (FRONTIER_GAP_SHARE within a frontier, and only from WARM_START_MIN_CHOICES choices, where a full pass
        stops being cheap). Passes on a large spec cost far more than the fixing loses to so small a rest:
        measured on a 41,920-choice ResNet at 70% and 90%, 3 full passes instead of 7 and 5, with 515 and 411
        choices left instead of 195 and 411. In a frontier a multiplier found exactly brackets the next budgets, so
        the share is smaller there: 100 points of a 10,000-choice ResNet ran 331 full passes instead of 608 in 0.92x
        the time (0.05: 210 passes, no faster), 30 points of ResNet-152 x64 0.87x with dp; of a 2,064-choice ViT-H,
        1.1-1.3x slower with every backend, hence the threshold. The bound stays proven: it is a pass's value,
        whatever multiplier it was at."""
        return (self.gap_share is not None and self.polish and len(self.limits) == 1 and self.incumbent is not None
                and improvable <= self.gap_share * (self.bound - self.incumbent_value))

    def run(self) -> bool:
        """Search the multipliers; True when some resource's minimum cost proves the limits infeasible.

        Stops early (with the bound and incumbent found so far) when the deadline passes."""
        for seed in self.seeds:
            self.offer(*seed)
        fits = [p for p in self.seeds if self.local.feasible(p[2])]
        cheapest = {r: max(fits, key=lambda p: p[1]) for r in self.limits} if fits else {}
        for r in self.limits if not fits else ():  # a configuration within every limit proves them feasible
            weights = {r: 1.0}
            neg_min, x = self._max_sum(weights, value_weight=0.0)
            self.passes += 1
            if -neg_min - self.graph.rounding_margin(weights, 0.0) > self.limits[r]:
                return True
            v, costs = self.graph.evaluate(x)
            self.points.append((x, v, costs))
            self.offer(x, v, costs)
            cheapest[r] = (x, v, costs)
        if not self.limits:
            self.point({})  # no budget: the unconstrained maximum is optimal
            return False
        starts: list[np.ndarray] = []       # local search starts from configurations the search met
        if not (self.closed() or self.deadline.expired):
            if len(self.limits) == 1:
                (r,) = self.limits
                _, starts = self.line_search(r, {r: 0.0}, cheapest[r])
            else:
                starts = self.cutting_planes()
        if self.polish and not self.closed():
            for x in self.best_starts(starts + ([self.incumbent] if self.incumbent is not None else [])):
                if self.deadline.expired or self.closed():
                    break
                self.offer(*self.local.climb(x, self.best_lambdas))
        return False

    def cutting_planes(self) -> list[np.ndarray]:
        """Several resources: Kelley's method. Each pass's maximiser is a plane under L; the next multipliers
        minimise the planes' upper envelope (`envelope_minimum`), until that minimum is within the tolerance of
        the best bound (the bound is then the dual's minimum). Returns local-search starts: every maximiser met.

        Coordinate line searches were used before: on ResNet-152 with three resources they stopped after 353
        passes 30 above the dual's minimum (a non-smooth function stalls coordinate descent); this took 31."""
        names = list(self.limits)
        limit = np.array([self.limits[r] for r in names])
        self.points.extend(self.seeds)      # any configuration's plane lies under L
        if not self.points:
            self.point({r: 0.0 for r in names})
        for _ in range(MAX_PLANE_PASSES):
            if self.closed() or self.deadline.expired:
                break
            values = np.array([v for _, v, _ in self.points])
            costs = np.array([[c[r] for r in names] for _, _, c in self.points])
            # per resource, excess in units of the limit (or of the costs, for a limit near 0)
            unit = np.maximum(np.abs(limit), np.abs(costs).max(axis=0))
            unit[unit == 0] = 1.0
            box = np.full(len(names), BOX * max(1.0, float(np.abs(values).max())))
            scaled, model = envelope_minimum(values, (costs - limit) / unit, box)
            lambdas = dict(zip(names, (scaled / unit).tolist()))
            if self.bound - model <= self.tolerance * max(1.0, abs(model)) + self.graph.rounding_margin(lambdas):
                break
            self.point(lambdas)
        return [x for x, _, _ in self.points]

    def best_starts(self, starts: list[np.ndarray]) -> list[np.ndarray]:
        """The CLIMB_STARTS (per limited resource) distinct starts of highest Lagrangian value at the best
        multipliers, best first:
        climbs from far below the limit were measured to take most of the local search's time and never
        to give the incumbent."""
        scored = {}
        for x in starts:
            value, costs = self.graph.evaluate(x)
            scored[x.tobytes()] = (value - sum(lam * (costs[r] - self.limits[r]) for r, lam in self.best_lambdas.items()), x)
        return [x for _, x in sorted(scored.values(), key=lambda item: -item[0])[:CLIMB_STARTS * len(self.limits)]]

    def line_search(self, r: str, lambdas: dict[str, float], cheapest: tuple[np.ndarray, float, dict[str, float]]
                    ) -> tuple[float, list[np.ndarray]]:
        """The lambda_r >= 0 minimising L with the other multipliers fixed (cutting planes, exact),
        and starting points for local search: the last configuration over limit r met, and all
        within it (cheap to climb from)."""
        limit = self.limits[r]

        def line(x: np.ndarray, value: float, costs: Mapping[str, float]) -> tuple[float, float, np.ndarray]:
            """(intercept, slope, x) of t -> Lagrangian value of configuration x at lambda_r = t."""
            others = sum(lam * (costs[s] - self.limits[s]) for s, lam in lambdas.items() if s != r)
            return value - others, -(costs[r] - limit), x

        trial = dict(lambdas, **{r: 0.0})
        near_within = near_over = None
        if len(self.limits) == 1:
            # start from the seeds and the maximisers of earlier searches nearest in cost on either side of the
            # limit: each is a valid cutting plane (some configuration's line), and for one resource they are
            # adjacent hull points
            earlier = [p for p in self.shared.bracket(r, limit) if p is not None] if self.shared is not None else []
            near_within, near_over = nearest(self.seeds + earlier, r, limit)
        if near_over is None:
            lo = line(*self.point(trial))
            if lo[1] >= 0:
                return 0.0, [lo[2]]
            best_t, best_value = 0.0, lo[0]
        else:
            lo, best_t, best_value = line(*near_over), 0.0, math.inf
        hi = line(*(near_within or cheapest))
        within = [] if near_within is None else [near_within[0]]
        for _ in range(MAX_LINE_SEARCH_STEPS):
            if lo[1] >= hi[1] or self.deadline.expired:
                break  # even the cheapest configuration is over limit r: no multiplier helps
            t = max(0.0, (hi[0] - lo[0]) / (lo[1] - hi[1]))
            model = lo[0] + lo[1] * t
            trial[r] = t
            new = line(*self.point(trial))
            value = new[0] + new[1] * t
            if value < best_value:
                best_t, best_value = t, value
            if value <= model + self.tolerance * max(1.0, abs(model)) + self.graph.rounding_margin(trial) or self.closed():
                break
            if self.settled(best_value - model):
                break
            if new[1] < 0:
                lo = new
            else:
                hi = new
                within.append(new[2])
        return best_t, within + [lo[2]]

    def hull_difference(self) -> np.ndarray | None:
        """With one limited resource, where the maximisers met nearest the limit on either side differ (the
        variables the bound's gap lies in); None with several resources or without both."""
        if len(self.limits) != 1:
            return None
        (r, limit), = self.limits.items()
        within, over = nearest(self.points, r, limit)
        return None if within is None or over is None else within[0] != over[0]

    def incumbent_configuration(self) -> tuple[dict[str, int], dict[str, bool], float] | None:
        if self.incumbent is None:
            return None
        choice, active = self.graph.configuration(self.incumbent)
        return choice, active, self.incumbent_value
