"""Greedy repair and improvement of a configuration of the factor graph (the presolve's incumbent search).

From a configuration, `LocalSearch.climb` first repairs it while it is over some limit (the
single-variable change losing least value per unit of excess removed), then, while it is
feasible, takes the best improving change of one or two variables. The moves are
deterministic, so a climb reaching a configuration an earlier climb passed through stops
there: the rest of its path was walked.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..deadline import Deadline
from ..factor_graph import SpecGraph

MAX_LOCAL_MOVES = 200
CHECKED_PAIRS = 20


class LocalSearch:
    """Climbs from configurations of `graph` under `limits` (resource -> largest cost allowed)."""

    def __init__(self, graph: SpecGraph, limits: Mapping[str, float], deadline: Deadline | None = None) -> None:
        self.graph, self.limits = graph, dict(limits)
        self.deadline = deadline or Deadline(None)
        self.moves = 0
        self._visited: set[bytes] = set()
        self._factors_of: list[list[int]] = [[] for _ in graph.sizes]
        for f, scope in enumerate(graph.scopes):
            for v in scope:
                self._factors_of[v].append(f)
        self._neighbours = [sorted({u for f in fs for u in graph.scopes[f]}) for fs in self._factors_of]

    def feasible(self, costs: Mapping[str, float]) -> bool:
        return all(costs[r] <= limit for r, limit in self.limits.items())

    def climb(self, x: np.ndarray, weights: Mapping[str, float]) -> tuple[np.ndarray, float, dict[str, float]]:
        """Repair, then improve `x`; returns (x, value, costs). `weights` (resource -> multiplier, 0 for
        none) weigh the resources when pairs of moves are matched under one surrogate budget."""
        value, costs = self.graph.evaluate(x)
        if x.tobytes() in self._visited:
            return x, value, costs
        table = MoveTable(self.graph, list(self.limits), x, self._factors_of, self._neighbours)
        for _ in range(MAX_LOCAL_MOVES):
            self._visited.add(table.x.tobytes())
            if self.feasible(costs) or self.deadline.expired:
                break
            move = self._best_repair(table, costs)
            if move is None:
                break
            table.change(*move)
            self.moves += 1
            value, costs = self.graph.evaluate(table.x)
        for _ in range(MAX_LOCAL_MOVES if self.feasible(costs) else 0):
            if self.deadline.expired:
                break
            better = self._best_improvement(table, value, costs, weights)
            if better is None:
                break
            moves, value, costs = better
            self.moves += 1
            for var, state in moves:
                table.change(var, state)
            if table.x.tobytes() in self._visited:
                break
            self._visited.add(table.x.tobytes())
        return table.x, value, costs

    def _best_repair(self, table: "MoveTable", costs: Mapping[str, float]) -> tuple[int, int] | None:
        """The (variable, state) change losing least value per unit of (normalised) excess cost removed."""
        resources = list(self.limits)
        limits = np.array([self.limits[r] for r in resources])[:, None]
        scale = np.maximum(1.0, np.abs(limits))
        now = np.array([costs[r] for r in resources])[:, None]
        variables, states, dv, dc = table.variables, table.states, table.dv, table.dc
        gain = (np.maximum(0.0, now - limits) / scale).sum() - (np.maximum(0.0, now + dc - limits) / scale).sum(axis=0)
        score = np.where(gain > 1e-12, dv / np.maximum(gain, 1e-12), -np.inf)
        if not len(score) or score.max() == -np.inf:
            return None
        best = int(np.argmax(score))
        return int(variables[best]), int(states[best])

    def _best_improvement(self, table: "MoveTable", value: float, costs: Mapping[str, float],
                          multipliers: Mapping[str, float]
                          ) -> tuple[list[tuple[int, int]], float, dict[str, float]] | None:
        """The best feasible improving change of one or two variables as ([(variable, state)], value,
        costs), or None.

        Candidates: every single change, and for each change its best partner on another variable
        under one surrogate budget (the resources weighted by their multipliers, or by 1/limit),
        each pair estimated as the sum of its two changes; the best few are checked exactly."""
        resources = list(self.limits)
        weights = np.array([multipliers.get(r, 0.0) or 1.0 / max(1.0, abs(self.limits[r])) for r in resources])
        variables, states, dv, dc = table.variables, table.states, table.dv, table.dc
        spend = weights @ dc
        slack = float(weights @ np.array([self.limits[r] - costs[r] for r in resources]))
        singles = np.where(spend <= slack, dv, -np.inf)
        partner = best_partners(variables, dv, spend, slack, (singles, CHECKED_PAIRS))
        # candidates 0..M-1: single moves; M..2M-1: move k - M with its partner
        gain = np.concatenate([singles, np.where(partner >= 0, dv + dv[partner], -np.inf)])
        top = np.argpartition(gain, -CHECKED_PAIRS)[-CHECKED_PAIRS:] if len(gain) > CHECKED_PAIRS else np.arange(len(gain))
        tiny = 1e-12 * max(1.0, abs(value))
        for k in top[np.argsort(gain[top], kind="stable")[::-1]]:
            if not gain[k] > tiny:
                break
            moves = [k] if k < len(dv) else [k - len(dv), partner[k - len(dv)]]
            change = [(int(variables[j]), int(states[j])) for j in moves]
            y = table.x.copy()
            for var, state in change:
                y[var] = state
            new_value, new_costs = self.graph.evaluate(y)
            if new_value > value + tiny and self.feasible(new_costs):
                return change, new_value, new_costs
        return None


class MoveTable:
    """Value and cost changes of every single-variable change from a configuration `x`, kept up
    to date as `x` changes (only the changed variable's neighbours are recomputed). Move k sets
    variable `variables[k]` to `states[k]`; a variable with n states owns n - 1 consecutive moves."""

    def __init__(self, graph: SpecGraph, resources: list[str], x: np.ndarray, factors_of: Sequence[list[int]],
                 neighbours: Sequence[list[int]]) -> None:
        self.graph, self.resources, self.factors_of, self.neighbours = graph, resources, factors_of, neighbours
        self.x = x.copy()
        counts = np.array(graph.sizes) - 1
        self.start = np.concatenate([[0], np.cumsum(counts)])
        self.variables = np.repeat(np.arange(len(x)), counts)
        self.states = np.zeros(len(self.variables), dtype=np.int64)
        self.dv = np.zeros(len(self.variables))
        self.dc = np.zeros((len(resources), len(self.variables)))
        for var in range(len(x)):
            self._update(var)

    def _update(self, var: int) -> None:
        g = self.graph
        dv = np.zeros(g.sizes[var])
        dc = np.zeros((len(self.resources), g.sizes[var]))
        for f in self.factors_of[var]:
            at = tuple(slice(None) if u == var else int(self.x[u]) for u in g.scopes[f])
            dv += g.value_tables[f][at]
            for i, r in enumerate(self.resources):
                if g.cost_tables[r][f] is not None:
                    dc[i] += g.cost_tables[r][f][at]
        now = self.x[var]
        others = np.flatnonzero(np.arange(len(dv)) != now)
        span = slice(self.start[var], self.start[var + 1])
        self.states[span] = others
        self.dv[span] = (dv - dv[now])[others]
        self.dc[:, span] = (dc - dc[:, now:now + 1])[:, others]

    def change(self, var: int, state: int) -> None:
        self.x[var] = state
        for u in self.neighbours[var]:
            self._update(u)


def best_partners(variables: np.ndarray, gains: np.ndarray, spends: np.ndarray, slack: float,
                  wanted: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """For each move j, the move i on another variable with spends[i] <= slack - spends[j] and the
    largest gains[i] (-1 when none).

    `wanted`: (gains of the caller's other candidates, count) when the caller keeps only the `count` best of
    those and of the pairs: a move whose allowed moves' best is on its own variable (its partner costs a search
    of its own) gets -1 instead when even that best could not lift its pair to the count-th best gain already
    known, so that pair could never be kept (measured on a 10,000-choice ResNet: 22 such variables a call, each
    a masked pass over 11,000 moves)."""
    order = np.argsort(spends, kind="stable")
    g, v = gains[order], variables[order]
    last = np.searchsorted(spends[order], slack - spends, side="right") - 1  # partners of j: order[:last[j] + 1]
    top = prefix_argmax(g[None, :])[0]
    partner = np.full(len(gains), -1, dtype=np.int64)
    has = last >= 0
    first = top[last[has]]
    partner[has] = np.where(v[first] != variables[has], order[first], -1)
    # where the prefix's best move is on j's own variable, take the prefix's best on another variable
    clash = np.flatnonzero(has)[v[first] == variables[has]]
    if len(clash) and wanted is not None:
        candidates, count = wanted
        found = partner >= 0
        known = np.concatenate([candidates, gains[found] + gains[partner[found]]])
        if len(known) >= count:
            floor = np.partition(known, len(known) - count)[len(known) - count]
            # the best allowed move's gain bounds the best allowed on another variable
            clash = clash[gains[clash] + g[top[last[clash]]] >= floor]
    if len(clash):
        own = np.unique(variables[clash])
        others = np.where(v[None, :] == own[:, None], -np.inf, g[None, :])
        row = np.searchsorted(own, variables[clash])
        best = prefix_argmax(others)[row, last[clash]]
        partner[clash] = np.where(others[row, best] > -np.inf, order[best], -1)
    return partner


def prefix_argmax(values: np.ndarray) -> np.ndarray:
    """Per row and position k, the index of the first maximum of values[row, :k + 1]."""
    running = np.maximum.accumulate(values, axis=1)
    previous = np.concatenate([np.full((len(values), 1), -np.inf), running[:, :-1]], axis=1)
    positions = np.arange(values.shape[1])
    return np.maximum.accumulate(np.where(values > previous, positions, 0), axis=1)
