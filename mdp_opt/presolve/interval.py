"""Passes for a range of multipliers on a smaller graph: the states no multiplier in the range can use are dropped.

With one limited resource r, the Lagrangian value of the best configuration using a state s,

    m_s(lambda) = max over x using s of  value(x) - lambda * cost_r(x),

is a maximum of lines in lambda, so it is convex: between two multipliers lo < hi it never exceeds
max(m_s(lo), m_s(hi)). The best value of all, M(lambda), is at least the value of either maximiser
met at lo and hi (each is a line in lambda), so at least the least value LB of the higher of those
two lines over [lo, hi]. A state with max(m_s(lo), m_s(hi)) < LB is used by no maximiser at any
multiplier in [lo, hi]. `IntervalGraph` drops those states once (`fixing.reduce_spec`) and then:

- `max_sum(lam)`: a pass over the smaller graph, lifted to the whole spec, is a maximiser of the whole
  graph at lam (every configuration using a dropped state is worth less than LB <= M(lam));
- `bounds(lam)`: per state of the whole spec, an upper bound on m_s(lam): the smaller graph's max-marginal
  for the states it keeps (or the dropped states' bound P, if higher: a configuration using a dropped
  state is worth at most P) and the chord between m_s(lo) and m_s(hi) for the dropped ones.

A frontier's budgets between two already fixed (whose max-marginals `SharedPresolve` keeps as endpoints)
run their line search and fixing here. Measured on an 11,328-choice ResNet: between the multipliers whose
maximisers cost 45% and 55% of the full latency, 94% of the states are kept, yet a pass took 10 ms instead
of 35 ms (blocks fixed on and a few states fewer in the largest tables shrink them several times), and the
smaller graph took 0.03 s to build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..factor_graph import SpecGraph
from .fixing import lift_assignment, reduce_spec


@dataclass(frozen=True)
class Endpoint:
    """The max-marginals of the whole graph at multiplier `lam` of one resource, with a maximiser `x` and its
    value and cost (the line lam -> value - lam * cost lies under M)."""

    lam: float
    marginals: tuple[np.ndarray, ...]
    x: np.ndarray
    value: float
    cost: float

    def line(self, lam: float) -> float:
        return self.value - lam * self.cost


class IntervalGraph:
    """The graph of the states some multiplier of `resource` in [low.lam, high.lam] may use (see the module)."""

    def __init__(self, graph: SpecGraph, resource: str, low: Endpoint, high: Endpoint) -> None:
        if not low.lam < high.lam:
            raise ValueError(f"interval: expected low.lam < high.lam, got {low.lam} and {high.lam}")
        self.graph, self.resource, self.low, self.high = graph, resource, low, high
        self.margin = 4 * graph.rounding_margin({resource: high.lam})
        self.floor = self._least_of_best() - self.margin            # LB, less the passes' float error
        self.keep = [np.maximum(a, b) >= self.floor for a, b in zip(low.marginals, high.marginals)]
        for v, mask in enumerate(self.keep):       # the two maximisers' own states, whatever the float rounding
            mask[low.x[v]] = mask[high.x[v]] = True
        self.sub, self.kept, self.fixed = reduce_spec(graph.spec, self.keep, low.x)
        self.sub_graph = SpecGraph(self.sub, memory_limit=graph._memory_limit)
        self.sub_graph.plan  # noqa: B018 - no larger than the whole graph's, which fits
        n = len(graph.spec.dims)
        self._sub_var = list(range(n)) + [None] * len(graph.spec.blocks)
        position = {b: n + j for j, b in enumerate(self.sub.block_names)}
        for j, b in enumerate(graph.spec.block_names):
            self._sub_var[n + j] = position.get(b)

    def covers(self, lam: float) -> bool:
        return self.low.lam <= lam <= self.high.lam

    def _least_of_best(self) -> float:
        """min over [lo, hi] of max(low's line, high's line): a lower bound on M there."""
        lo, hi = self.low, self.high
        points = [lo.lam, hi.lam]
        if lo.cost != hi.cost:
            cross = (hi.value - lo.value) / (hi.cost - lo.cost)
            if lo.lam < cross < hi.lam:
                points.append(cross)
        return min(max(lo.line(t), hi.line(t)) for t in points)

    def max_sum(self, lam: float) -> tuple[float, np.ndarray]:
        """(M(lam), a maximiser of the whole graph); lam must be covered."""
        value, x = self.sub_graph.max_sum({self.resource: lam})
        return value, lift_assignment(self.graph, self.sub_graph, x, self.kept, self.fixed)

    def bounds(self, lam: float) -> tuple[list[np.ndarray], float]:
        """(per variable and state of the whole graph, an upper bound on m_s(lam); the bound P of the dropped
        states) at a covered lam: see the module. A state the smaller graph keeps has its exact max-marginal
        wherever that is at least P."""
        lo, hi = self.low, self.high
        w = (lam - lo.lam) / (hi.lam - lo.lam)
        chords = [(1 - w) * a + w * b + self.margin for a, b in zip(lo.marginals, hi.marginals)]
        dropped = max((float(c[~k].max()) for c, k in zip(chords, self.keep) if not k.all()), default=-np.inf)
        mm = self.sub_graph.max_marginals({self.resource: lam})
        out = []
        for v, (chord, keep) in enumerate(zip(chords, self.keep)):
            bound = chord                           # a fresh array of its own
            sub = self._sub_var[v]
            if sub is None:                         # a block fixed in the smaller graph: its kept state
                bound[keep] = mm.value             # is in every configuration there
            elif v >= len(self.graph.spec.dims):     # a block both of whose states are kept
                bound[keep] = mm.marginals[sub]
            elif len(self.kept[self.graph.variables[v]]) == 1:
                bound[keep] = mm.marginals[sub][0]  # one state left (or pinned: no term left names the dim)
            else:
                bound[np.asarray(self.kept[self.graph.variables[v]])] = mm.marginals[sub]
            bound[keep] = np.maximum(bound[keep], dropped)
            out.append(bound)
        return out, dropped
