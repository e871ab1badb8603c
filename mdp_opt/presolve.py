"""Lagrangian presolve shared by every backend: an upper bound, an incumbent, reduced-cost fixing.

For multipliers lambda >= 0 (one per budgeted resource)

    L(lambda) = max_x  value(x) - sum_r lambda_r * (cost_r(x) - budget_r)

is an upper bound on the best feasible value, and decomposes over the factor graph,
so variable elimination computes it exactly (`factor_graph.SpecGraph`). `presolve`
minimises it over lambda (exact cutting-plane line search per resource, coordinate
sweeps for several), keeps the best feasible configuration it meets (improved by
cheap local moves) and then drops every dim choice and block state whose best
Lagrangian value (its max-marginal) is below that incumbent: no optimal configuration
uses it. The answer is proven optimal when bound and incumbent meet, proven
infeasible when a resource's minimum cost exceeds its budget; otherwise the reduced
spec goes to the backend and `Presolved.combine` maps its answer back.

"Feasible" here is exactly what `solve()` verifies: cost <= budget up to
`evaluate.within_budget`'s tolerance. Every comparison that removes something keeps
a float-rounding margin in the safe direction: when unsure, a choice is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .evaluate import budget_limit, evaluate
from .factor_graph import SpecGraph, TableTooLarge
from .linear_model import configuration_from_hint
from .result import NUMERIC_TOLERANCE, OPTIMALITY_GAP, Answer, Status, relative_gap
from .spec import Dim, Spec, Term

MAX_LINE_SEARCH_STEPS = 100
MAX_SWEEPS = 20
MAX_LOCAL_MOVES = 200
CHECKED_PAIRS = 20
# the presolve runs a dozen elimination passes; beyond this table size it would cost more than it
# saves, so it steps aside (status "skipped") and the backend gets the original spec
PRESOLVE_MEMORY_LIMIT = 256 * 1024**2


@dataclass
class Presolved:
    """What the presolve found.

    status: "optimal" (the incumbent is proven optimal), "infeasible" (proven),
        "reduced" (solve `reduced` and `combine` the answer) or "skipped" (the factor
        graph exceeds the memory limit; `reduced` is the original spec).
    bound: proven upper bound on the best feasible value (None when skipped or infeasible).
    incumbent: (choice, active, value) of the best feasible configuration found, in the
        original spec's indices, or None.
    reduced: the spec left to solve: same dim names, a subset of each dim's choices with
        sliced tables; blocks fixed active lose their gate, blocks fixed removed lose their terms.
    kept: dim name -> original indices of the reduced spec's choices.
    fixed_blocks: block name -> state, for blocks no longer in the reduced spec.
    """

    status: str
    bound: float | None
    incumbent: tuple[dict[str, int], dict[str, bool], float] | None
    reduced: Spec
    kept: dict[str, tuple[int, ...]]
    fixed_blocks: dict[str, bool]
    stats: dict[str, Any] = field(default_factory=dict)

    def lift(self, choice: Mapping[str, int], active: Mapping[str, bool] | None) -> tuple[dict[str, int], dict[str, bool]]:
        """Map a configuration of the reduced spec to the original spec's indices."""
        return {d: self.kept[d][int(k)] for d, k in choice.items()}, {**dict(active or {}), **self.fixed_blocks}

    def restrict(self, choice: Mapping[str, int], active: Mapping[str, bool]
                 ) -> tuple[dict[str, int], dict[str, bool]] | None:
        """An original configuration in the reduced spec's indices; None when it uses a removed state."""
        if any(choice[d] not in kept for d, kept in self.kept.items()):
            return None
        if any(active[b] != state for b, state in self.fixed_blocks.items()):
            return None
        return ({d: kept.index(choice[d]) for d, kept in self.kept.items()},
                {b: active[b] for b in self.reduced.block_names})

    def answer(self, out_of_time: bool = False) -> Answer:
        """The answer when the presolve decided alone (status optimal or infeasible), or, when
        `out_of_time`, its incumbent as a feasible answer (time_limit_no_solution without one)."""
        stats: dict[str, Any] = {"presolve": self.stats, "solved_by": "presolve"}
        if self.status == "infeasible":
            return Answer(Status.INFEASIBLE, stats=stats)
        if self.status == "optimal":
            choice, active, value = self.incumbent
            return Answer(Status.OPTIMAL, choice, active, objective=value, bound=self.bound, stats=stats)
        if not out_of_time:
            raise ValueError(f"presolve status {self.status!r} has no answer of its own; solve the reduced spec")
        stats["message"] = "the presolve used the whole time limit"
        if self.incumbent is None:
            return Answer(Status.TIME_LIMIT_NO_SOLUTION, bound=self.bound, stats=stats)
        choice, active, value = self.incumbent
        return Answer(Status.FEASIBLE, choice, active, objective=value, bound=self.bound, stats=stats)

    def combine(self, answer: Answer) -> Answer:
        """A backend's answer on `reduced`, mapped to the original spec, with the presolve's bound and incumbent."""
        stats = {**answer.stats, "presolve": self.stats, "solved_by": "backend"}
        status = Status(answer.status)
        bound = self.bound
        if answer.bound is not None and status is not Status.INFEASIBLE:
            bound = answer.bound if bound is None else min(bound, answer.bound)
        best = None
        if status.has_solution and answer.choice is not None:
            choice, active = self.lift(answer.choice, answer.active)
            best = (choice, active, answer.objective)
            if self.incumbent is not None and answer.objective is not None and answer.objective < self.incumbent[2]:
                # a claimed optimum a hair below the incumbent is solver arithmetic; the incumbent wins
                if status is Status.OPTIMAL and relative_gap(self.incumbent[2], answer.objective) > NUMERIC_TOLERANCE:
                    from .solve import BackendError
                    raise BackendError(f"backend claims optimal value {answer.objective!r}, but the presolve "
                                       f"found a feasible configuration worth {self.incumbent[2]!r}")
                best = self.incumbent
        elif self.incumbent is not None:
            best = self.incumbent
            stats["backend_status"] = status.value
        if best is None:
            return Answer(status, bound=bound if status is not Status.INFEASIBLE else None, stats=stats)
        choice, active, value = best
        if status is not Status.OPTIMAL:
            proven = value is not None and bound is not None and relative_gap(bound, value) <= OPTIMALITY_GAP
            status = Status.OPTIMAL if proven else Status.FEASIBLE
        return Answer(status, choice, active, objective=value, bound=bound, stats=stats)


def presolve(spec: Spec, budgets: Mapping[str, float], memory_limit: float = PRESOLVE_MEMORY_LIMIT) -> Presolved:
    """Lagrangian bound, incumbent and reduced-cost fixing for `spec` under `budgets` (resource -> number).

    One round: repeating the fixing on the reduced spec was measured to remove nothing more (the
    configurations that attain the dual bound all survive, so the reduced spec has the same bound).
    """
    start = time.perf_counter()
    identity = {d.name: tuple(range(d.size)) for d in spec.dims}
    try:
        graph = SpecGraph(spec, memory_limit=memory_limit)
    except TableTooLarge as e:
        return _finish(Presolved("skipped", None, None, spec, identity, {}), spec, {"reason": str(e)}, start)
    search = _LagrangianSearch(graph, spec, budgets)
    infeasible = search.run()
    stats: dict[str, Any] = {"lambdas": dict(search.best_lambdas), "passes": search.passes,
                             "local_moves": search.local_moves}
    if infeasible:
        return _finish(Presolved("infeasible", None, None, spec, identity, {}), spec, stats, start)
    incumbent = search.incumbent_configuration()
    if incumbent is None:
        return _finish(Presolved("reduced", search.bound, None, spec, identity, {}), spec, stats, start)
    if relative_gap(search.bound, incumbent[2]) <= OPTIMALITY_GAP:
        return _finish(Presolved("optimal", search.bound, incumbent, spec, identity, {}), spec, stats, start)
    reduced, kept, fixed = _reduce(spec, search.reduced_cost_keep(), search.incumbent)
    if not reduced.blocks and all(d.size == 1 for d in reduced.dims):
        # only the incumbent is left, and fixing keeps every optimal configuration
        return _finish(Presolved("optimal", incumbent[2], incumbent, reduced, kept, fixed), spec, stats, start)
    return _finish(Presolved("reduced", search.bound, incumbent, reduced, kept, fixed), spec, stats, start)


def solve_with_presolve(backend: Callable[[Spec, Mapping[str, float], dict], Answer], spec: Spec,
                        budgets: Mapping[str, float], options: Mapping[str, Any], accepts_hint: bool = False) -> Answer:
    """Presolve, then (unless that decided) run `backend` on the reduced spec and map its answer back.

    With `accepts_hint`, the backend gets option `hint` = {"choice", "active"} in the reduced spec's
    indices: the user's own hint when it survived the fixing, else the presolve's incumbent.
    """
    start = time.perf_counter()
    pre = presolve(spec, budgets)
    if pre.status in ("optimal", "infeasible"):
        return pre.answer()
    options = dict(options)
    if accepts_hint:
        user_hint = options.pop("hint", None)
        hint, source = None, "user"
        if user_hint is not None:
            hint = pre.restrict(*configuration_from_hint(spec, user_hint))
        if hint is None and pre.incumbent is not None:
            # every feasible configuration using a removed choice is worse than the incumbent
            hint, source = pre.restrict(*pre.incumbent[:2]), "incumbent"
        if hint is not None:
            options["hint"] = {"choice": hint[0], "active": hint[1]}
            pre.stats["hint"] = source
    if options.get("time_limit") is not None:
        remaining = options["time_limit"] - (time.perf_counter() - start)
        if remaining <= 0:
            return pre.answer(out_of_time=True)
        options["time_limit"] = remaining
    answer = backend(pre.reduced, budgets, options)
    if not isinstance(answer, Answer):
        return answer  # solve()'s verification reports the wrong type
    return pre.combine(answer)


# ---- the multiplier search ----------------------------------------------------------------

class _LagrangianSearch:
    """Minimises L(lambda) over lambda >= 0, tracking the best bound and the best feasible configuration."""

    def __init__(self, graph: SpecGraph, spec: Spec, budgets: Mapping[str, float]) -> None:
        self.graph, self.spec = graph, spec
        self.budgets = dict(budgets)
        # the largest cost solve() accepts as within budget
        self.limits = {r: budget_limit(b) for r, b in budgets.items()}
        self.bound = math.inf
        self.best_lambdas: dict[str, float] = {r: 0.0 for r in self.limits}
        self.incumbent: np.ndarray | None = None
        self.incumbent_value = -math.inf
        self.passes = 0
        self.local_moves = 0
        self._visited: set[bytes] = set()  # configurations local search has passed through
        self._factors_of: list[list[int]] = [[] for _ in graph.sizes]
        for f, scope in enumerate(graph.scopes):
            for v in scope:
                self._factors_of[v].append(f)
        self._neighbours = [sorted({u for f in fs for u in graph.scopes[f]}) for fs in self._factors_of]

    # -- points of the dual function
    def point(self, lambdas: Mapping[str, float]) -> tuple[np.ndarray, float, dict[str, float]]:
        """Maximise the Lagrangian at `lambdas`; update bound and incumbent; return (x, value, costs)."""
        value, x = self.graph.max_sum(lambdas)
        self.passes += 1
        bound = value + sum(lam * self.limits[r] for r, lam in lambdas.items()) + self.graph.rounding_margin(lambdas)
        if bound < self.bound:
            self.bound, self.best_lambdas = bound, dict(lambdas)
        v, costs = self.graph.evaluate(x)
        self.offer(x, v, costs)
        return x, v, costs

    def feasible(self, costs: Mapping[str, float]) -> bool:
        return all(costs[r] <= limit for r, limit in self.limits.items())

    def offer(self, x: np.ndarray, value: float, costs: Mapping[str, float]) -> None:
        """Keep `x` as incumbent if it is feasible and better (confirmed with the core's evaluate)."""
        if value <= self.incumbent_value or not self.feasible(costs):
            return
        choice, active = self.graph.configuration(x)
        ev = evaluate(self.spec, choice, active, self.budgets)
        if ev.feasible and ev.value > self.incumbent_value:
            self.incumbent, self.incumbent_value = x.copy(), ev.value

    def closed(self) -> bool:
        return self.incumbent is not None and relative_gap(self.bound, self.incumbent_value) <= OPTIMALITY_GAP

    def run(self) -> bool:
        """Search the multipliers; True when some resource's minimum cost proves the budgets infeasible."""
        cheapest = {}
        for r in self.limits:
            weights = {r: 1.0}
            neg_min, x = self.graph.max_sum(weights, value_weight=0.0)
            self.passes += 1
            if -neg_min - self.graph.rounding_margin(weights, 0.0) > self.limits[r]:
                return True
            v, costs = self.graph.evaluate(x)
            self.offer(x, v, costs)
            cheapest[r] = (x, v, costs)
        if not self.limits:
            self.point({})  # no budget: the unconstrained maximum is optimal
            return False
        lambdas = {r: 0.0 for r in self.limits}
        for _ in range(MAX_SWEEPS if len(self.limits) > 1 else 1):
            before = self.bound
            starts: list[np.ndarray] = []  # local search starts from configurations the last sweep met
            for r in self.limits:
                if self.closed():
                    break
                lambdas[r], met = self.line_search(r, lambdas, cheapest[r])
                starts.extend(met)
            # stop when a sweep closes less than 1% of the remaining gap (or of the bound, with no incumbent)
            remaining = self.bound - self.incumbent_value if self.incumbent is not None else abs(self.bound)
            if self.closed() or before - self.bound <= 0.01 * remaining:
                break
        if not self.closed():
            for x in starts + ([self.incumbent] if self.incumbent is not None else []):
                self.offer(*self._local_search(x))
        return False

    def line_search(self, r: str, lambdas: dict[str, float], cheapest: tuple[np.ndarray, float, dict[str, float]]
                    ) -> tuple[float, list[np.ndarray]]:
        """The lambda_r >= 0 minimising L with the other multipliers fixed (cutting planes, exact),
        and starting points for local search: the last configuration over budget r met, and all
        within it (cheap to climb from)."""
        limit = self.limits[r]

        def line(x: np.ndarray, value: float, costs: Mapping[str, float]) -> tuple[float, float, np.ndarray]:
            """(intercept, slope, x) of t -> Lagrangian value of configuration x at lambda_r = t."""
            others = sum(lam * (costs[s] - self.limits[s]) for s, lam in lambdas.items() if s != r)
            return value - others, -(costs[r] - limit), x

        trial = dict(lambdas, **{r: 0.0})
        lo = line(*self.point(trial))
        if lo[1] >= 0:
            return 0.0, [lo[2]]
        within = []
        hi = line(*cheapest)
        best_t, best_value = 0.0, lo[0]
        for _ in range(MAX_LINE_SEARCH_STEPS):
            if lo[1] >= hi[1]:
                break  # even the cheapest configuration is over budget r: no multiplier helps
            t = max(0.0, (hi[0] - lo[0]) / (lo[1] - hi[1]))
            model = lo[0] + lo[1] * t
            trial[r] = t
            new = line(*self.point(trial))
            value = new[0] + new[1] * t
            if value < best_value:
                best_t, best_value = t, value
            if value <= model + 1e-10 * max(1.0, abs(model)) + self.graph.rounding_margin(trial) or self.closed():
                break
            if new[1] < 0:
                lo = new
            else:
                hi = new
                within.append(new[2])
        return best_t, within + [lo[2]]

    # -- incumbent repair
    def _local_search(self, x: np.ndarray) -> tuple[np.ndarray, float, dict[str, float]]:
        """Greedy moves from x: while over budget, the single-variable change losing least value per
        unit of excess removed; then, while feasible, the best improving change of one or two
        variables. Returns (x, value, costs). The moves are deterministic, so a search reaching a
        configuration an earlier search visited stops there: the rest of its path was walked."""
        value, costs = self.graph.evaluate(x)
        if x.tobytes() in self._visited:
            return x, value, costs
        table = _MoveTable(self.graph, list(self.limits), x, self._factors_of, self._neighbours)
        for _ in range(MAX_LOCAL_MOVES):
            self._visited.add(table.x.tobytes())
            if self.feasible(costs):
                break
            move = self._best_repair(table, costs)
            if move is None:
                break
            table.change(*move)
            self.local_moves += 1
            value, costs = self.graph.evaluate(table.x)
        for _ in range(MAX_LOCAL_MOVES if self.feasible(costs) else 0):
            better = self._best_improvement(table, value, costs)
            if better is None:
                break
            moves, value, costs = better
            self.local_moves += 1
            for var, state in moves:
                table.change(var, state)
            if table.x.tobytes() in self._visited:
                break
            self._visited.add(table.x.tobytes())
        return table.x, value, costs

    def _best_repair(self, table: _MoveTable, costs: Mapping[str, float]) -> tuple[int, int] | None:
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

    def _best_improvement(self, table: _MoveTable, value: float, costs: Mapping[str, float]
                          ) -> tuple[list[tuple[int, int]], float, dict[str, float]] | None:
        """The best feasible improving change of one or two variables as ([(variable, state)], value,
        costs), or None.

        Candidates: every single change, and for each change its best partner on another variable
        under one surrogate budget (the resources weighted by their multipliers, or by 1/budget),
        each pair estimated as the sum of its two changes; the best few are checked exactly."""
        resources = list(self.limits)
        weights = np.array([self.best_lambdas.get(r, 0.0) or 1.0 / max(1.0, abs(self.limits[r])) for r in resources])
        variables, states, dv, dc = table.variables, table.states, table.dv, table.dc
        spend = weights @ dc
        slack = float(weights @ np.array([self.limits[r] - costs[r] for r in resources]))
        partner = _best_partners(variables, dv, spend, slack)
        # candidates 0..M-1: single moves; M..2M-1: move k - M with its partner
        gain = np.concatenate([np.where(spend <= slack, dv, -np.inf),
                               np.where(partner >= 0, dv + dv[partner], -np.inf)])
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

    # -- fixing
    def incumbent_configuration(self) -> tuple[dict[str, int], dict[str, bool], float] | None:
        if self.incumbent is None:
            return None
        choice, active = self.graph.configuration(self.incumbent)
        return choice, active, self.incumbent_value

    def reduced_cost_keep(self) -> list[np.ndarray]:
        """Per variable, a mask of the states some configuration at least as good as the incumbent may use."""
        lambdas = self.best_lambdas
        mm = self.graph.plan.max_marginals(self.graph.tables(lambdas))
        self.passes += 1
        offset = sum(lam * self.limits[r] for r, lam in lambdas.items()) + 2 * self.graph.rounding_margin(lambdas)
        keep = []
        for var, marginal in enumerate(mm.marginals):
            mask = marginal + offset >= self.incumbent_value
            mask[self.incumbent[var]] = True
            keep.append(mask)
        return keep


class _MoveTable:
    """Value and cost changes of every single-variable change from a configuration `x`, kept up
    to date as `x` changes (only the changed variable's neighbours are recomputed). Move k sets
    variable `variables[k]` to `states[k]`; a variable with n states owns n - 1 consecutive moves."""

    def __init__(self, graph: SpecGraph, resources: list[str], x: np.ndarray, factors_of: list[list[int]],
                 neighbours: list[list[int]]) -> None:
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

def _best_partners(variables: np.ndarray, gains: np.ndarray, spends: np.ndarray, slack: float) -> np.ndarray:
    """For each move j, the move i on another variable with spends[i] <= slack - spends[j] and the
    largest gains[i] (-1 when none)."""
    order = np.argsort(spends, kind="stable")
    g, v = gains[order], variables[order]
    last = np.searchsorted(spends[order], slack - spends, side="right") - 1  # partners of j: order[:last[j] + 1]
    top = _prefix_argmax(g[None, :])[0]
    partner = np.full(len(gains), -1, dtype=np.int64)
    has = last >= 0
    first = top[last[has]]
    partner[has] = np.where(v[first] != variables[has], order[first], -1)
    # where the prefix's best move is on j's own variable, take the prefix's best on another variable
    clash = np.flatnonzero(has)[v[first] == variables[has]]
    if len(clash):
        own = np.unique(variables[clash])
        others = np.where(v[None, :] == own[:, None], -np.inf, g[None, :])
        row = np.searchsorted(own, variables[clash])
        best = _prefix_argmax(others)[row, last[clash]]
        partner[clash] = np.where(others[row, best] > -np.inf, order[best], -1)
    return partner


def _prefix_argmax(values: np.ndarray) -> np.ndarray:
    """Per row and position k, the index of the first maximum of values[row, :k + 1]."""
    running = np.maximum.accumulate(values, axis=1)
    previous = np.concatenate([np.full((len(values), 1), -np.inf), running[:, :-1]], axis=1)
    positions = np.arange(values.shape[1])
    return np.maximum.accumulate(np.where(values > previous, positions, 0), axis=1)


# ---- building the reduced spec -------------------------------------------------------------

def _reduce(spec: Spec, keep: list[np.ndarray], incumbent: np.ndarray
            ) -> tuple[Spec, dict[str, tuple[int, ...]], dict[str, bool]]:
    """The spec restricted to the kept states; dim -> kept indices; blocks left with one state.

    Terms are sliced to the kept choices; a dim left with one choice is dropped from the terms
    naming it (its axis has length 1), and terms that then share dims and block are summed, so
    backends get a smaller model with the same value and costs for every configuration."""
    n_dims = len(spec.dims)
    fixed = {b: bool(np.flatnonzero(keep[n_dims + j])[0])
             for j, b in enumerate(spec.block_names) if keep[n_dims + j].sum() == 1}
    live_terms = [(r, t) for r, _, t in spec.terms() if fixed.get(t.block, True)]
    named = {d for _, t in live_terms for d in t.dims}
    kept = {}
    for i, d in enumerate(spec.dims):
        # a dim no remaining term names cannot matter: pin it to the incumbent's choice
        kept[d.name] = tuple(int(k) for k in np.flatnonzero(keep[i])) if d.name in named else (int(incumbent[i]),)

    merged: dict[tuple[str | None, frozenset[str], str | None], tuple[tuple[str, ...], np.ndarray]] = {}
    for resource, t in live_terms:
        table = t.table[np.ix_(*[kept[d] for d in t.dims])] if t.dims else t.table
        free = [a for a, d in enumerate(t.dims) if len(kept[d]) > 1]
        dims = tuple(t.dims[a] for a in free)
        table = table.reshape([table.shape[a] for a in free])
        key = (resource, frozenset(dims), None if t.block in fixed else t.block)
        if key in merged:
            first, total = merged[key]
            table = total + table.transpose([dims.index(d) for d in first])
            dims = first
        merged[key] = (dims, table)
    terms = {r: tuple(Term(dims, table, block) for (s, _, block), (dims, table) in merged.items() if s == r)
             for r in (None, *spec.costs)}
    reduced = spec.replace(
        dims=tuple(Dim(d.name, tuple(d.choices[k] for k in kept[d.name])) for d in spec.dims),
        blocks=tuple(b for b in spec.block_names if b not in fixed),
        objective=terms.pop(None), costs=terms)
    return reduced, kept, fixed


def _finish(pre: Presolved, spec: Spec, stats: dict[str, Any], start: float) -> Presolved:
    pre.stats = {
        "status": pre.status,
        "bound": pre.bound,
        "incumbent": None if pre.incumbent is None else pre.incumbent[2],
        **stats,
        "choices_total": sum(d.size for d in spec.dims),
        "choices_kept": sum(d.size for d in pre.reduced.dims),
        "choices_fixed": sum(d.size for d in spec.dims) - sum(d.size for d in pre.reduced.dims),
        "blocks_total": len(spec.blocks),
        "blocks_fixed": len(pre.fixed_blocks),
        "time": time.perf_counter() - start,
    }
    return pre
