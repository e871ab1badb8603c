"""The `dp` backend: exact dynamic programming over the spec's factor graph, numpy only.

It works on the core's factor graph (`mdp_opt.factor_graph.SpecGraph`, the one the presolve
uses): variables are the dims (choice indices) and the blocks (0 removed, 1 active), factors the
terms merged by scope. Where a plain max-sum message holds one number per state of its scope, a
message here holds, per state, the **Pareto set** of (costs, value) pairs of everything eliminated
into it: no budget axis and no rounding, so answers are exact on any data (floats included). The
variable eliminated next is the one whose elimination builds the fewest candidate pairs given the
messages' actual sizes, plus the joint states of its scope (ties broken by
`mdp_opt.factor_graph.elimination_order`'s min-fill order):
a Pareto set's size is not its table size, and eliminating a block's inner dims before the residual
dim they hang from keeps the large sets out of the many-state joins. Three prunings keep the sets
small:

- dominance: a pair costing at least as much as another in every limited resource and worth no
  more is dropped;
- limit: a pair whose cost plus the least possible cost of every factor not yet added exceeds the
  limit is dropped;
- value: a feasible incumbent and multipliers lam >= 0 (one limited resource: from a cheap first
  pass with costs rounded up to 1/256 of the limit; several: from the core's Lagrangian search,
  `mdp_opt.presolve.dual`); a pair is dropped when value - lam.cost + lam.limits plus, for every
  other live message, its best value - lam.cost stays below the incumbent (a Lagrangian bound on
  anything the pair can become), or when its shortfall from the best candidate of its state
  (in value - lam.cost) exceeds what that state's max-marginal at lam leaves above the incumbent
  (the same bound conditioned on the state; one max-marginal pass gives it for every variable).
  With several resources the multipliers are the Lagrangian dual's minimiser (the search's cutting planes
  reach it exactly). The pruning takes several rows of multipliers too (a pair is dropped when any row's
  bound rules it out): the first pass uses the minimiser alone, the deeper ones a star of rows around it
  (`_star`), which rules out sooner the pairs heavy in one resource. And the passes aim at falling targets: a first
  pass keeps only what can reach a value just below the bound, and finds (and proves) the optimum when
  it is that good; else the target moves down, towards the incumbent (`_solve_by_targets`).

The dominance filters live in `mdp_opt.backends.pareto` (with two resources the survivors form a staircase
searched by bisection; with three, survivors sealed into merge-sort trees of dominance maxima).

The last join is never built: the best pair within a limit is found by binary search in one of
its two sets, so the final sets answer every budget at once: the backend's one-pass frontier
(`Feature.FRONTIER`, used by `mdp_opt.frontier`). Every stored pair keeps links to the pairs it
was made of, so the configuration behind any point is recovered by walking the links down.

Options (`solve(..., backend="dp", **options)`):
- `resolution`: None (default, exact) or a positive number (or resource -> number): costs are
  rounded to multiples of it through the core's rounding reduction (`mdp_opt.rounding`), which
  merges near-equal costs and shrinks the sets; a rounded-down pass gives a proven bound, and the
  answer is `optimal` when it is also feasible on the true costs or meets a rounded-up pass.
- `memory_cap`: bytes the stored sets may take (default 2 GiB); beyond it a `StateTooLarge`
  error names the size reached.
- `hint`: a starting configuration (a Result, or {"choice": {dim: index}, "active": {block: bool}}; the
  presolve passes its incumbent): the Lagrangian search for value pruning starts from it, so with one
  resource too the multiplier and incumbent come from that search instead of the coarse pass. Ignored
  with `resolution`.
- `time_limit`: seconds; when reached the status is `feasible` with the best configuration known
  (the coarse pass's with one resource and no hint; else the Lagrangian search's, or a better one a
  target pass found), `time_limit_no_solution` without one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mdp_opt.backend import Feature, FrontierUnavailable, check_number, register_backend, take_options
from mdp_opt.backends.pareto import CHUNK_PAIRS, fits, pareto
from mdp_opt.deadline import Deadline
from mdp_opt.evaluate import configuration_from_hint
from mdp_opt.factor_graph import SpecGraph, elimination_order
from mdp_opt.presolve.dual import LagrangianSearch
from mdp_opt.result import Answer, Status
from mdp_opt.rounding import answer_from_passes, round_costs, solve_rounded
from mdp_opt.spec import Spec, SpecError

DEFAULT_MEMORY_CAP = 2 * 1024**3
DEFAULTS: dict[str, Any] = {"resolution": None, "memory_cap": DEFAULT_MEMORY_CAP, "hint": None}
COARSE_CELLS = 256              # the incumbent for value pruning comes from costs rounded up to budget/this
HINT_SAMPLES = 33               # budgets at which that coarse front is read to choose the multiplier

Best = tuple[float, dict[str, int], dict[str, bool]]   # value, choice indices, block states


class StateTooLarge(SpecError):
    """The DP's Pareto sets would exceed the memory cap."""


class TooManyCandidates(FrontierUnavailable):
    """A pass would build more candidate pairs than its `max_candidates` allows (see `pareto_front`)."""


class _TimeUp(Exception):
    pass


# a pass with `max_candidates` gives up early when, after at least PROJECTION_AFTER of its eliminations, the
# candidates built so far, scaled to all of them, exceed PROJECTION_FACTOR times its allowance (a 10,000-choice
# ResNet's one-pass frontier attempt built 250,000 pairs per elimination from the start: it gives up at
# elimination 8 of 259, in 0.5 s; after 10% of them it gave up at 26 in 1.9 s, and without the projection at 80).
# Most passes build the bulk of their pairs in the last joins, so the projection under-estimates them and does not
# stop a pass that fits (on the real instances' frontier passes it is under 1% of the allowance after a quarter of
# the eliminations; all four still run their frontier in one pass).
PROJECTION_AFTER = 0.03
PROJECTION_FACTOR = 3.0


# ---- Pareto messages -----------------------------------------------------------------------

@dataclass(eq=False)
class _Node:
    """A message: for every state of `scope` (flat index over `shape`), a Pareto set of (cost, value) pairs.

    Pairs are sorted by state. `links[i][p]` is the index, in `children[i]`, of the pair that pair `p` was
    built from; a leaf (no children) is a term table and its state is the assignment of its scope.
    """

    scope: tuple[int, ...]
    shape: tuple[int, ...]
    state: np.ndarray
    cost: np.ndarray          # (pairs, resources)
    value: np.ndarray
    least_cost: np.ndarray    # per resource, sum over the leaves below of their least cost
    children: tuple["_Node", ...] = ()
    links: tuple[np.ndarray, ...] = ()

    @property
    def pairs(self) -> int:
        return len(self.value)

    @property
    def nbytes(self) -> int:
        return self.state.nbytes + self.cost.nbytes + self.value.nbytes + sum(a.nbytes for a in self.links)


class _Eliminator:
    """Runs variable elimination on Pareto messages under per-resource cost caps."""

    def __init__(self, sizes: Sequence[int], leaves: list[_Node], caps: np.ndarray, memory_cap: float,
                 deadline: Deadline, names: Sequence[str], max_candidates: float | None = None,
                 pruning: tuple[Any, float] | None = None,
                 marginals: tuple[list[np.ndarray], float] | None = None) -> None:
        self.sizes = list(sizes)
        self.names = names
        self.caps = caps          # limits: a pair costing more can never fit
        self.total_least = np.sum([leaf.least_cost for leaf in leaves], axis=0) if leaves else np.zeros(len(caps))
        self.memory_cap = memory_cap
        self.deadline = deadline
        self.stored = 0
        self.largest = 0
        self.candidates = 0
        self.joint_states = 0     # states of the joins' scopes (each costs a few array entries, pairs or not)
        self.max_candidates = max_candidates
        self.leaves = [self._store(self._pruned_leaf(leaf)) for leaf in leaves]
        # value pruning: with multipliers lam >= 0 (one per resource; 0 where the cap is infinite) and a target
        # value (a feasible configuration's, or one aimed at), a pair can only lead to one reaching it if
        # value - lam.cost + lam.caps + (the sum over the other pool messages of their best value - lam.cost)
        # does (a Lagrangian bound); `pruning[0]` may hold several rows of multipliers: each gives a bound
        self.pruning = None
        if pruning is not None:
            lam = _multiplier_rows(pruning[0], len(caps))
            finite = np.isfinite(caps)
            if np.all(lam >= 0) and np.all(lam[:, ~finite] == 0):
                self.pruning = (lam, float(pruning[1]))
        # per multiplier row: lam . caps over the finite caps
        self.budget = (self.pruning[0][:, np.isfinite(caps)] @ caps[np.isfinite(caps)] if self.pruning
                       else np.zeros(1))
        # per variable and state, the best Lagrangian value (at the pruning multipliers) of any whole configuration
        # using it, and a float-rounding margin for comparing with it (see `combine`)
        self.marginals = marginals if self.pruning is not None else None
        self.reduced: dict[_Node, np.ndarray] = {}     # per multiplier row; nodes hash by identity
        self.pool_reduced = sum(self._reduced(leaf) for leaf in self.leaves) if self.pruning else np.zeros(1)
        self.pruned_by_value = 0

    def run(self, order: Sequence[int]) -> "_Top":
        """Eliminate every variable, the next one being the cheapest given the messages' actual sizes
        (estimated pairs built), ties broken by `order`. The last join is left to `_Top`, which answers
        budget queries without building the final set when there is one resource."""
        pool = list(self.leaves)
        rank = {v: i for i, v in enumerate(order)}
        remaining = {v for f in pool for v in f.scope}
        last: tuple[list[_Node], int | None] | None = None
        eliminations = len(remaining)
        while remaining:
            if any(f.pairs == 0 for f in pool):
                break
            var = min(remaining, key=lambda v: (self._work(pool, v), rank[v]))
            remaining.discard(var)
            bucket = [f for f in pool if var in f.scope]
            pool = [f for f in pool if var not in f.scope]
            bucket = self._join_smallest(bucket, 2)
            if remaining:
                pool.append(self.combine(bucket, var))
                self._check_projection(eliminations - len(remaining), eliminations)
            else:
                last = (bucket, var)
        empty = [f for f in pool + (last[0] if last else []) if f.pairs == 0]
        if empty:
            # nothing survives: every configuration breaks a limit or cannot beat the incumbent
            return _Top(empty[:1], None, 1, self.caps, self._check_time)
        if last is None:
            parts, drop = self._join_smallest(pool, 2), None
        else:
            # the last variable's bucket and the finished components, smallest joined first, down to two
            (parts, drop) = last
            parts = self._join_smallest(parts + pool, 2)
        if not parts:
            zeros = np.zeros((1, len(self.caps)))
            parts = [_Node((), (), np.zeros(1, dtype=np.int64), zeros, np.zeros(1), np.zeros(len(self.caps)))]
        return _Top(parts, drop, self.sizes[drop] if drop is not None else 1, self.caps, self._check_time)

    def _state_floor(self, kept: list[int]) -> np.ndarray:
        """Per multiplier row and state of the new node's scope `kept`: incumbent - lam.caps - (an upper bound on
        the best whole configuration's Lagrangian value using that state: the least max-marginal of its
        variables), minus a rounding margin."""
        per_variable, total = self.marginals
        shape = tuple(self.sizes[v] for v in kept)
        best = np.repeat(total[:, None], math.prod(shape), axis=1)
        if kept:
            coords = np.unravel_index(np.arange(best.shape[1]), shape)
            for axis, v in enumerate(kept):
                best = np.minimum(best, per_variable[v][:, coords[axis]])
        incumbent = self.pruning[1]
        margin = 1e-9 * (1.0 + abs(incumbent) + np.abs(self.budget) + np.abs(total))
        return (incumbent - margin - self.budget)[:, None] - best

    @staticmethod
    def _completable(reduced: np.ndarray, state: np.ndarray, state_floor: np.ndarray) -> np.ndarray:
        """Which candidate pairs may still lead to a configuration better than the incumbent, by the
        max-marginal bound: any whole configuration extending pair p (node state s) has Lagrangian value
        at most reduced(p) - reduced(q) + max-marginal(s) for any other sub-configuration q of the node's
        factors with the same state s (both extend by the same rest), q here being the best candidate of
        this block with state s (any real sub-configuration gives a valid bound). One multiplier row:
        `reduced` and `state_floor` at that row."""
        best = np.full(len(state_floor), -np.inf)
        np.maximum.at(best, state, reduced)
        return reduced - best[state] >= state_floor[state]

    def _reduced(self, node: _Node) -> np.ndarray:
        """Per multiplier row, max over the node's pairs of value - lam * cost (-inf when it has none), remembered."""
        if node not in self.reduced:
            lam = self.pruning[0]
            self.reduced[node] = (np.max(node.value[:, None] - node.cost @ lam.T, axis=0) if node.pairs
                                  else np.full(len(lam), -math.inf))
        return self.reduced[node]

    def _join_smallest(self, nodes: list[_Node], count: int) -> list[_Node]:
        """Join the two smallest nodes (no variable dropped) until at most `count` are left."""
        nodes = list(nodes)
        while len(nodes) > count:
            nodes.sort(key=lambda f: f.pairs)
            nodes = [self.combine(nodes[:2], None)] + nodes[2:]
        return nodes

    def _work(self, pool: list[_Node], var: int) -> float:
        """Estimated work to eliminate `var`: the pairs built (joint states times the product of mean set sizes)
        plus the joint states themselves, each of which costs a few array entries whatever its pairs (with a
        target near the bound the sets are nearly empty, and counting pairs alone chose joins over 2^10 states
        that built under 1,000 pairs but took a second)."""
        bucket = [f for f in pool if var in f.scope]
        scope = set().union(*(f.scope for f in bucket))
        states = float(math.prod(self.sizes[v] for v in scope))
        work = states
        for f in bucket:
            work *= f.pairs / math.prod(f.shape)
        return work + states

    def _pruned_leaf(self, leaf: _Node) -> _Node:
        ok = fits(leaf.cost + (self.total_least - leaf.least_cost), self.caps)
        if ok.all():
            return leaf
        return _Node(leaf.scope, leaf.shape, leaf.state[ok], leaf.cost[ok], leaf.value[ok], leaf.least_cost)

    def _store(self, node: _Node) -> _Node:
        self.stored += node.nbytes
        self.largest = max(self.largest, node.pairs)
        if self.stored > self.memory_cap:
            where = ", ".join(self.names[v] for v in node.scope) or "the whole spec"
            raise StateTooLarge(f"spec: the dp backend's Pareto sets reached {_size(self.stored)} "
                                f"({node.pairs} pairs in the message over [{where}]), over memory_cap="
                                f"{_size(self.memory_cap)}; raise memory_cap, pass a coarser "
                                "resolution=, or use the cpsat/milp backend")
        return node

    def _check_projection(self, done: int, total: int) -> None:
        """Raise TooManyCandidates when the pairs built in `done` of `total` eliminations, scaled to all of them,
        pass PROJECTION_FACTOR times `max_candidates` (after at least PROJECTION_AFTER of them)."""
        if (self.max_candidates is not None and done >= PROJECTION_AFTER * total
                and self.candidates * total / done > PROJECTION_FACTOR * self.max_candidates):
            raise TooManyCandidates(f"the pass would need about {self.candidates * total / done:.3g} candidate pairs "
                                    f"({self.candidates} in {done} of {total} eliminations), more than "
                                    f"{self.max_candidates:.0f}")

    def _check_time(self) -> None:
        if self.deadline.expired:
            raise _TimeUp

    def combine(self, parts: list[_Node], drop: int | None) -> _Node:
        """The message of the sum of `parts`, with variable `drop` (if any) maximised out."""
        self._check_time()
        union = sorted(set().union(*(p.scope for p in parts)))
        kept = [v for v in union if v != drop]
        axes = kept + ([drop] if drop is not None else [])
        shape = tuple(self.sizes[v] for v in axes)
        states = math.prod(shape)
        self.joint_states += states
        coords = np.unravel_index(np.arange(states), shape) if shape else ()
        starts, counts = [], []
        for p in parts:
            s = (np.ravel_multi_index(tuple(coords[axes.index(v)] for v in p.scope), p.shape) if p.scope
                 else np.zeros(states, dtype=np.int64))
            bounds = np.searchsorted(p.state, np.arange(math.prod(p.shape) + 1))
            starts.append(bounds[:-1][s])
            counts.append(np.diff(bounds)[s])
        per_state = np.prod(counts, axis=0) if states else np.zeros(0, dtype=np.int64)
        ends = np.cumsum(per_state)
        total = int(ends[-1]) if states else 0
        self.candidates += total
        if self.max_candidates is not None and self.candidates > self.max_candidates:
            raise TooManyCandidates(f"the pass needs more than {self.max_candidates:.0f} candidate pairs")
        new_state = np.arange(states) // (self.sizes[drop] if drop is not None else 1)
        least = np.sum([p.least_cost for p in parts], axis=0)
        slack = self.caps - (self.total_least - least)
        floor = None        # least value - lam * cost a pair needs to possibly beat the incumbent
        if self.pruning is not None:
            lam, incumbent = self.pruning
            with np.errstate(invalid="ignore"):      # nan when an empty message is in the pool: no pruning then
                outside = self.pool_reduced - sum(self._reduced(p) for p in parts)
            margin = 1e-9 * (1.0 + abs(incumbent) + np.abs(self.budget) + np.abs(outside))
            if np.all(np.isfinite(outside)):
                floor = incumbent - margin - self.budget - outside
        state_floor = self._state_floor(kept) if floor is not None and self.marginals is not None else None
        chunks = []
        for lo in range(0, total, CHUNK_PAIRS):
            self._check_time()
            k = np.arange(lo, min(total, lo + CHUNK_PAIRS))
            u = np.searchsorted(ends, k, side="right")
            rest = k - (ends[u] - per_state[u])
            links = [None] * len(parts)
            for i in range(len(parts) - 1, -1, -1):
                links[i] = starts[i][u] + rest % counts[i][u]
                rest = rest // counts[i][u]
            cost = sum(p.cost[link] for p, link in zip(parts, links))
            value = sum(p.value[link] for p, link in zip(parts, links))
            ok = fits(cost, slack)
            if floor is not None:
                promising = ok.copy()
                for row, lam in enumerate(self.pruning[0]):
                    self._check_time()           # a row's test over a full chunk takes about 0.1 s
                    reduced = value - cost @ lam
                    promising &= reduced >= floor[row]
                    if state_floor is not None:
                        promising &= self._completable(reduced, new_state[u], state_floor[row])
                self.pruned_by_value += int(np.count_nonzero(ok & ~promising))
                ok = promising
            state = new_state[u[ok]]
            keep = pareto(state, cost[ok], value[ok], self._check_time)
            chunks.append((state[keep], cost[ok][keep], value[ok][keep], [link[ok][keep] for link in links]))
        if chunks:
            state = np.concatenate([c[0] for c in chunks])
            cost = np.concatenate([c[1] for c in chunks])
            value = np.concatenate([c[2] for c in chunks])
            links = [np.concatenate([c[3][i] for c in chunks]) for i in range(len(parts))]
            if len(chunks) > 1:
                keep = pareto(state, cost, value, self._check_time)
                state, cost, value, links = state[keep], cost[keep], value[keep], [a[keep] for a in links]
        else:
            state, cost, value = np.zeros(0, dtype=np.int64), np.zeros((0, len(self.caps))), np.zeros(0)
            links = [np.zeros(0, dtype=np.int64) for _ in parts]
        kept_shape = tuple(self.sizes[v] for v in kept)
        node = _Node(tuple(kept), kept_shape, state, cost, value, least, tuple(parts), tuple(links))
        if self.pruning is not None:
            with np.errstate(invalid="ignore"):
                self.pool_reduced = self.pool_reduced - sum(self._reduced(p) for p in parts) + self._reduced(node)
        return self._store(node)


@dataclass
class _Top:
    """The last join, unbuilt: one node (empty scope), or two nodes whose scopes lie within {drop}.

    `best(budget)` finds the best pair of the two within a budget of the single resource by binary
    search in the second node's staircase (its values increase with cost), never building the
    product; with several resources it checks the pairs of pairs by brute force in blocks (still never
    building the product's Pareto set); with one node it scans the node.
    """

    parts: list[_Node]
    drop: int | None
    states: int
    caps: np.ndarray
    check: Callable[[], None] = lambda: None     # raises to stop (the pass's deadline)

    @property
    def pairs(self) -> int:
        return sum(p.pairs for p in self.parts)

    def _segment(self, node: _Node, u: int) -> slice:
        s = u if node.scope else 0
        lo, hi = np.searchsorted(node.state, [s, s + 1])
        return slice(int(lo), int(hi))

    def cheapest(self) -> float | None:
        """The least cost (first resource) of any configuration within the other resources' caps."""
        if len(self.parts) == 2 and len(self.caps) > 1:
            found = self._best_pairs(self.caps, lambda cost, value: -cost[..., 0])
            return None if found is None else -found[0]
        costs = [sum(float(p.cost[self._segment(p, u), 0].min(initial=math.inf)) for p in self.parts)
                 for u in range(self.states)]
        least = min(costs)
        return None if math.isinf(least) else least

    def best(self, limit: float) -> tuple[float, list[tuple[_Node, int]]] | None:
        """(value, [(node, pair)]) of the best configuration costing at most `limit`, None if none does."""
        limit = min(limit, self.caps[0])
        if len(self.parts) == 1:
            (node,) = self.parts
            ok = np.flatnonzero(node.cost[:, 0] <= limit)
            if len(ok) == 0:
                return None
            p = int(ok[np.argmax(node.value[ok])])
            return float(node.value[p]), [(node, p)]
        if len(self.caps) > 1:
            caps = self.caps.copy()
            caps[0] = limit
            found = self._best_pairs(caps, lambda cost, value: value)
            return None if found is None else (self._value(found[1]), found[1])
        first, second = self.parts
        found = None
        for u in range(self.states):
            a, b = self._segment(first, u), self._segment(second, u)
            j = np.searchsorted(second.cost[b, 0], limit - first.cost[a, 0], side="right") - 1
            ok = np.flatnonzero(j >= 0)
            if len(ok) == 0:
                continue
            totals = first.value[a][ok] + second.value[b][j[ok]]
            k = int(np.argmax(totals))
            if found is None or totals[k] > found[0]:
                found = (float(totals[k]), [(first, a.start + int(ok[k])), (second, b.start + int(j[ok[k]]))])
        return found

    @staticmethod
    def _value(points: list[tuple[_Node, int]]) -> float:
        return float(sum(node.value[p] for node, p in points))

    def _best_pairs(self, caps: np.ndarray, score: Callable[[np.ndarray, np.ndarray], np.ndarray]
                    ) -> tuple[float, list[tuple[_Node, int]]] | None:
        """Several resources, two parts: of the pairs of pairs (one of each part, same state of `drop`) whose
        summed costs are within `caps` in every resource, the one of highest `score(cost, value)` (additive:
        the score of a sum is the sum of the scores), and its score. Checked by brute force in blocks (never
        building the product's Pareto set, whose dominance filter in several dimensions costs far more),
        best bound first: a first-part pair is bounded by its score plus, per resource, the best score of the
        second-part pairs within that resource's cap alone (the least of these), and the blocks stop once a
        bound cannot beat the best pair found."""
        first, second = self.parts
        found = None
        for u in range(self.states):
            a, b = self._segment(first, u), self._segment(second, u)
            b_cost, b_value = second.cost[b], second.value[b]
            if len(b_value) == 0 or a.stop == a.start:
                continue
            a_cost = first.cost[a]
            bound = score(a_cost, first.value[a]) + self._best_within(b_cost, score(b_cost, b_value),
                                                                      caps - a_cost)
            order = np.argsort(-bound, kind="stable")
            order = order[np.isfinite(bound[order])]
            rows = max(1, CHUNK_PAIRS // (len(b_value) * len(caps)))
            for lo in range(0, len(order), rows):
                self.check()
                if found is not None and bound[order[lo]] <= found[0]:
                    break
                pick = a.start + order[lo:lo + rows]
                cost = first.cost[pick, None, :] + b_cost[None, :, :]
                value = first.value[pick, None] + b_value[None, :]
                scored = np.where(fits(cost, caps), score(cost, value), -np.inf)
                i, j = np.unravel_index(int(np.argmax(scored)), scored.shape)
                if np.isfinite(scored[i, j]) and (found is None or scored[i, j] > found[0]):
                    found = (float(scored[i, j]), [(first, int(pick[i])), (second, b.start + int(j))])
        return found

    @staticmethod
    def _best_within(cost: np.ndarray, scores: np.ndarray, room: np.ndarray) -> np.ndarray:
        """Per row of `room` (room left per resource), the least over resources of the best of `scores` among the
        pairs whose cost in that resource alone fits (-inf where none does): a bound on the best pair that fits
        in every resource at once."""
        best = np.full(len(room), np.inf)
        for r in range(cost.shape[1]):
            order = np.argsort(cost[:, r], kind="stable")
            running = np.maximum.accumulate(scores[order])
            last = np.searchsorted(cost[order, r], room[:, r], side="right") - 1
            best = np.minimum(best, np.where(last >= 0, running[np.maximum(last, 0)], -np.inf))
        return best


def _configuration_of(points: list[tuple[_Node, int]]) -> dict[int, int]:
    """variable -> state of the configuration behind the given pairs (walking their links to the leaves)."""
    assignment: dict[int, int] = {}
    stack = list(points)
    while stack:
        node, p = stack.pop()
        if not node.children:
            if node.scope:
                for v, s in zip(node.scope, np.unravel_index(int(node.state[p]), node.shape)):
                    assignment[v] = int(s)
            continue
        stack.extend((child, int(link[p])) for child, link in zip(node.children, node.links))
    return assignment


# ---- the spec's factor graph as Pareto leaves ---------------------------------------------------

def _multiplier_rows(multipliers: Any, resources: int) -> np.ndarray:
    """Value pruning's multipliers as rows (one multiplier per resource each): a number or a vector gives one row."""
    lam = np.asarray(multipliers, dtype=np.float64)
    return np.atleast_2d(np.broadcast_to(lam, lam.shape[:-1] + (resources,)) if lam.ndim else
                         np.full(resources, float(lam))).copy()


def _leaves(graph: SpecGraph, resources: Sequence[str]) -> list[_Node]:
    """One leaf per factor of the core's factor graph: per joint state of its scope, one (costs, value) pair
    (a cost column per resource in `resources`)."""
    leaves = []
    for f, scope in enumerate(graph.scopes):
        order = sorted(range(len(scope)), key=lambda a: scope[a])
        ordered = tuple(scope[a] for a in order)
        shape = tuple(graph.sizes[v] for v in ordered)
        states = math.prod(shape)
        value = np.transpose(graph.value_tables[f], order).reshape(states)
        cost = np.zeros((states, max(1, len(resources))))
        for column, r in enumerate(resources):
            table = graph.cost_tables[r][f]
            if table is not None:
                cost[:, column] = np.transpose(table, order).reshape(states)
        leaves.append(_Node(ordered, shape, np.arange(states, dtype=np.int64), cost, value, cost.min(axis=0)))
    return leaves


def _configuration(graph: SpecGraph, assignment: Mapping[int, int]) -> tuple[dict[str, int], dict[str, bool]]:
    """The configuration of a partial assignment; a variable in no factor keeps its largest choice (or stays
    active): it changes nothing."""
    n = len(graph.spec.dims)
    full = [assignment.get(v, size - 1 if v < n else 1) for v, size in enumerate(graph.sizes)]
    return graph.configuration(np.array(full, dtype=np.int64))


# ---- passes ---------------------------------------------------------------------------------------

@dataclass
class Front:
    """The outcome of one DP pass: the best value, and its configuration, within every limit of its first
    resource up to the pass's cap (the other limits enforced), read from the final Pareto sets. Limits and
    costs are in the units of the spec the pass ran on."""

    stats: dict[str, Any]
    _graph: SpecGraph = field(repr=False)
    _top: _Top = field(repr=False)

    def cheapest(self) -> float | None:
        """The least cost of the first resource of any configuration within the other limits (None if none)."""
        return self._top.cheapest()

    def best(self, limit: float) -> Best | None:
        """(value, choice indices, block states) of a best configuration costing at most `limit`, or None."""
        found = self._top.best(limit)
        if found is None:
            return None
        choice, active = _configuration(self._graph, _configuration_of(found[1]))
        return found[0], choice, active


def pareto_front(spec: Spec, limits: Mapping[str, float], *, memory_cap: float = DEFAULT_MEMORY_CAP,
                 deadline: Deadline | None = None, max_candidates: float | None = None,
                 pruning: tuple[float, float] | None = None) -> Front:
    """One DP pass over `spec` with every resource in `limits` capped; the front is over the first one.

    Args:
        limits: resource -> largest cost allowed (math.inf for no cap); the first resource is the front's axis.
        memory_cap: bytes the stored sets may take (StateTooLarge beyond).
        deadline: raises TimeoutError once it passes.
        max_candidates: give up (raise TooManyCandidates) before building more candidate pairs than this in
            total, a measure of the pass's work; None for no limit.
        pruning: (multiplier, value of a feasible configuration) for value pruning (one resource only).
    """
    try:
        return _pass(spec, limits, memory_cap, deadline or Deadline(None), max_candidates, pruning)
    except _TimeUp:
        raise TimeoutError(f"the dp pass over {spec.name or 'the spec'} exceeded its time limit") from None


def _pass(spec: Spec, limits: Mapping[str, float], memory_cap: float, deadline: Deadline,
          max_candidates: float | None = None, pruning: tuple[Any, float] | None = None,
          graph: SpecGraph | None = None, marginals: tuple[list[np.ndarray], np.ndarray] | None = None) -> Front:
    """The Pareto pass over `spec` (`graph`: its factor graph, when already built; `marginals`: the
    `_pruning_marginals` of the pruning's multipliers, when already computed)."""
    start = time.perf_counter()
    graph = graph or SpecGraph(spec)
    resources = list(limits)
    leaves = _leaves(graph, resources)
    order = elimination_order(graph.sizes, [leaf.scope for leaf in leaves])
    caps = np.array([float(limits[r]) for r in resources] or [math.inf], dtype=np.float64)
    if marginals is None and pruning is not None and np.all(np.asarray(pruning[0], dtype=np.float64) >= 0):
        marginals = _pruning_marginals(graph, resources, _multiplier_rows(pruning[0], len(caps)))
    engine = _Eliminator(graph.sizes, leaves, caps, memory_cap, deadline, graph.variables, max_candidates, pruning,
                         marginals)
    top = engine.run(order)
    stats = {"largest_message_pairs": engine.largest, "candidate_pairs": engine.candidates,
             "joint_states": engine.joint_states,
             "stored_mib": round(engine.stored / 2**20, 2), "dp_seconds": round(time.perf_counter() - start, 4)}
    if engine.pruning is not None:
        stats["value_pruning"] = {"multipliers": dict(zip(resources, map(float, engine.pruning[0][0]))),
                                  "multiplier_rows": len(engine.pruning[0]),
                                  "incumbent": engine.pruning[1],
                                  "pairs_pruned": engine.pruned_by_value}
    return Front(stats, graph, top)


def _pruning_marginals(graph: SpecGraph, resources: Sequence[str], rows: np.ndarray
                       ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per variable, the max-marginals at every multiplier row (rows x states), and per row the best value, each
    plus a float-rounding margin: one max-marginal pass per row, the same for every target of a solve."""
    per_row = []
    for row in rows:
        lambdas = {r: float(lam) for r, lam in zip(resources, row)}
        mm = graph.max_marginals(lambdas)
        margin = 2 * graph.rounding_margin(lambdas)
        per_row.append(([m + margin for m in mm.marginals], mm.value + margin))
    return ([np.stack([r[0][v] for r in per_row]) for v in range(len(graph.sizes))],
            np.array([r[1] for r in per_row]))


def exact_answer(best: Best | None, stats: dict[str, Any]) -> Answer:
    """The answer of an unrounded pass: its best within the limit is optimal; none at all means infeasible."""
    if best is None:
        return Answer(Status.INFEASIBLE, stats=stats)
    value, choice, active = best
    return Answer(Status.OPTIMAL, choice, active, value, value, stats)


# ---- the backend --------------------------------------------------------------------------------

def solve(spec: Spec, limits: Mapping[str, float], options: dict) -> Answer:
    """Backend entry point (see the module docstring for the options)."""
    opts = take_options(options, DEFAULTS, "dp")
    memory_cap = _memory_cap(opts["memory_cap"])
    deadline = opts["deadline"]
    scales = _scales(spec, opts["resolution"], limits)
    first = next(iter(limits), None)
    message = f"time limit {opts['time_limit']} s reached before the DP finished"
    incumbent: list[Best] = []          # the best feasible configuration known so far, for a stop
    try:
        if not any(scales.values()):
            hint = configuration_from_hint(spec, opts["hint"]) if opts["hint"] is not None else None
            graph = SpecGraph(spec)     # one graph: the pass's max-marginals reuse the search's last pass

            def exact_pass(pruning: tuple[Any, float] | None = None) -> Answer:
                front = _pass(spec, limits, memory_cap, deadline, pruning=pruning, graph=graph)
                return exact_answer(front.best(limits[first] if first else math.inf), front.stats)
            if len(limits) == 1 and hint is None:
                coarse = _coarse_incumbent(spec, limits, memory_cap, deadline)
                if coarse is not None:
                    incumbent.append(coarse[1])
                return exact_pass(None if coarse is None else (coarse[0], coarse[1][0]))
            searched = _lagrangian_incumbent(spec, limits, deadline, hint, graph)
            if searched is None:
                return exact_pass()
            incumbent.append(searched[2])
            if len(limits) == 1:
                # one resource: the search's incumbent is most often the optimum already (measured on ResNet-152,
                # ViT-H and a 10,000-choice ResNet at 30-90%: falling targets ran 2-5 passes where one does)
                multipliers, _, (value, _, _) = searched
                return exact_pass((multipliers, value))
            return _solve_by_targets(spec, limits, graph, memory_cap, deadline, *searched, incumbent)

        def one_pass(rounded: Spec, caps: Mapping[str, float], hint: Any) -> Answer:
            front = _pass(rounded, caps, memory_cap, deadline)
            return exact_answer(front.best(caps[first]), front.stats)
        return solve_rounded(spec, limits, scales, one_pass)
    except _TimeUp:
        if not incumbent:
            return Answer(Status.TIME_LIMIT_NO_SOLUTION, stats={"message": message})
        value, choice, active = incumbent[-1]      # a configuration within every limit
        return Answer(Status.FEASIBLE, choice, active, value, stats={
            "message": message + "; the configuration is the " + (
                "coarse pass's (costs rounded up)" if len(limits) == 1 and opts["hint"] is None
                else "best one the Lagrangian search and the passes found")})


# The passes with a multiplier search's bound aim at a target first: a pass pruning every pair that cannot reach
# `bound - gap / TARGET_START` finds the optimum when it is that good (and then proves it: nothing better
# survives a pruning that keeps everything reaching the target), else a better incumbent or nothing; the
# target then moves TARGET_GROWTH times farther from the bound, down to the incumbent. A pass's work grows
# steeply with its distance to the bound, and the search's incumbent is often far below the optimum (ResNet-50
# with three resources: the optimum lies 336 below the bound, the incumbent 1,288), so the passes cost about
# as much as the one at the optimum's own distance.
TARGET_START = 16.0
TARGET_GROWTH = 2.0
STAR_SPREAD = 0.1           # see `_star` (0.03 and 0.3 built more pairs on ResNet-152's core with three resources)


def _solve_by_targets(spec: Spec, limits: Mapping[str, float], graph: SpecGraph, memory_cap: float,
                      deadline: Deadline, multipliers: np.ndarray, bound: float, best: Best,
                      incumbent: list[Best]) -> Answer:
    """Exact passes with value pruning against falling targets (see TARGET_START), with the search's best
    `multipliers`; `best` is a feasible configuration, `bound` a proven
    bound on every feasible value, `incumbent` gets every better configuration found (the answer at a stop)."""
    limit = limits[next(iter(limits))]
    gap = bound - best[0]
    rows = multipliers[np.newaxis]
    marginals = _pruning_marginals(graph, list(limits), rows)
    around = _star(multipliers)
    step = gap / TARGET_START if gap > 0 else math.inf        # no gap (or a bound a hair below): one final pass
    targets = []
    while True:
        target = bound - step
        final = not target > best[0]
        front = _pass(spec, limits, memory_cap, deadline, pruning=(rows, best[0] if final else target),
                      graph=graph, marginals=marginals)
        found = front.best(limit)
        targets.append({"target": best[0] if final else target, "found": None if found is None else found[0],
                        "rows": len(rows),
                        **{k: front.stats[k] for k in ("candidate_pairs", "joint_states", "dp_seconds")}})
        stats = {**front.stats, "targets": targets}
        if found is not None and (final or found[0] >= target):
            return exact_answer(found if found[0] >= best[0] else best, stats)
        if final:
            # nothing reaching the incumbent survived but the incumbent itself: it is optimal
            return exact_answer(best, stats)
        if found is not None and found[0] > best[0]:
            best = found
            incumbent.append(found)
        step *= TARGET_GROWTH
        if len(rows) == 1 and len(around):
            # the deeper passes prune with the star of rows around the best multipliers too (its max-marginals
            # cost one pass per row, more than a first pass near the bound gains from them)
            more = _pruning_marginals(graph, list(limits), around)
            rows = np.vstack([rows, around])
            marginals = ([np.vstack(pair) for pair in zip(marginals[0], more[0])],
                         np.concatenate([marginals[1], more[1]]))


def _star(multipliers: np.ndarray) -> np.ndarray:
    """Rows of multipliers for value pruning around the search's best: it with each positive multiplier times
    1 + STAR_SPREAD and divided by it (no rows when every multiplier is 0). Every row's bound is valid and a pair is
    pruned when any row rules it out; a pair heavy in one resource is ruled out sooner by a row weighing that
    resource more (ResNet-152's core with three resources: the pass aiming 190 below the bound took 33-41 s with
    the star, and had not finished after 100 s without it)."""
    rows = []
    for r in np.flatnonzero(multipliers > 0):
        for factor in (1 + STAR_SPREAD, 1 / (1 + STAR_SPREAD)):
            row = multipliers.copy()
            row[r] *= factor
            rows.append(row)
    return np.array(rows).reshape(-1, len(multipliers))


def _lagrangian_incumbent(spec: Spec, limits: Mapping[str, float], deadline: Deadline,
                          hint: tuple[dict[str, int], dict[str, bool]] | None = None, graph: SpecGraph | None = None
                          ) -> tuple[np.ndarray, float, Best] | None:
    """(multipliers, proven bound, a feasible configuration) for value pruning (several resources, or a hint),
    from the core's Lagrangian search (`mdp_opt.presolve.dual`) on this spec, started from the hint: its best
    multipliers, its bound and its incumbent; None when it has no feasible configuration or a limit is infinite."""
    if not limits or not all(math.isfinite(v) for v in limits.values()):
        return None
    graph = graph or SpecGraph(spec)
    seeds = []
    if hint is not None:
        x = graph.assignment(*hint)
        seeds.append((x, *graph.evaluate(x)))
    # a hint (the presolve's incumbent, already improved by its local search) needs no polishing here
    search = LagrangianSearch(graph, spec, limits, deadline, seeds=seeds, polish=hint is None)
    if search.run():
        return None            # infeasible: the exact pass says so
    found = search.incumbent_configuration()
    if found is None:
        return None
    choice, active, value = found
    return np.array([search.best_lambdas[r] for r in limits]), search.bound, (value, choice, active)


def _coarse_incumbent(spec: Spec, limits: Mapping[str, float], memory_cap: float,
                      deadline: Deadline) -> tuple[float, Best] | None:
    """(multiplier, a feasible configuration) for value pruning, from a cheap pass with the single limited
    resource's costs rounded up to 1/COARSE_CELLS of the limit; None where it does not apply."""
    if len(limits) != 1:
        return None
    (resource, limit), = limits.items()
    if not math.isfinite(limit) or limit <= 0:
        return None
    reach = max(limit, min(2 * limit, spec.full_cost(resource)))
    scale = COARSE_CELLS / limit
    coarse = round_costs(spec, {resource: reach}, {resource: scale}, "up")
    if coarse.exact:
        return None            # costs already this coarse: the exact pass is as cheap
    front = _pass(coarse.spec, coarse.limits, memory_cap, deadline)

    def best_at(budget: float) -> Best | None:
        return front.best(math.floor(budget * scale))
    best, cheapest = best_at(limit), front.cheapest()
    if best is None or cheapest is None:
        return None
    # the multiplier minimising the coarse front's Lagrangian bound max_k (v_k - lam * b_k) + lam * limit,
    # over the front sampled at budgets b_k on both sides of the limit
    samples = [(b, found[0]) for b in np.linspace(cheapest / scale, reach, HINT_SAMPLES)
               if (found := best_at(b)) is not None]
    b_k, v_k = np.array(samples).T

    def bound(lam: float) -> float:
        return float(np.max(v_k - lam * b_k) + lam * limit)
    candidates = [0.0] + [(v_k[j] - v_k[i]) / (b_k[j] - b_k[i]) for i in range(len(b_k)) for j in range(len(b_k))
                          if b_k[i] < limit < b_k[j]]
    return float(min(candidates, key=bound)), best


# ---- the one-pass frontier (Feature.FRONTIER) -----------------------------------------------------

# One solve() with presolve costs about as much as building this many candidate pairs in a DP pass (measured
# on mdp-rn101-step00: a solve ~0.1 s, a pass ~5M pairs/s; its 100-point pass needs 18.4M pairs, 3.7 s, where
# 100 solves take 10-18 s): the one-pass frontier is tried with a budget of this many pairs per point, else
# each budget is solved alone.
PAIRS_PER_SOLVE = 200_000


class OnePassFront:
    """The optimal answer at every limit of one resource from one DP pass (two with a rounding resolution:
    rounded up for configurations, rounded down for bounds), the other limits enforced."""

    def __init__(self, spec: Spec, resource: str, others: Mapping[str, float], cap: float | None, points: int,
                 options: Mapping[str, Any]) -> None:
        opts = take_options(options, DEFAULTS, "dp")
        memory_cap = _memory_cap(opts["memory_cap"])
        deadline = opts["deadline"]
        self.resource, self.others = resource, dict(others)
        limits = {resource: math.inf if cap is None else float(cap), **self.others}
        self.scales = _scales(spec, opts["resolution"], limits)
        work = PAIRS_PER_SOLVE * points
        try:
            if not any(self.scales.values()):
                self.up, self.down = None, None
                self.front = _pass(spec, limits, memory_cap, deadline, work)
                return
            self.up = round_costs(spec, limits, self.scales, "up")
            self.down = round_costs(spec, limits, self.scales, "down")
            self.front = _pass(self.up.spec, self.up.limits, memory_cap, deadline, work)
            self.down_front = _pass(self.down.spec, self.down.limits, memory_cap, deadline, work)
        except _TimeUp:
            raise TimeoutError(f"the dp pass over {spec.name or 'the spec'} exceeded time_limit="
                               f"{opts['time_limit']:.3g} s") from None

    def cheapest(self) -> float | None:
        """The least cost of the resource of any configuration within the other limits (None if none)."""
        least = self.front.cheapest()
        scale = self.scales.get(self.resource)
        return None if least is None else least / scale if scale else least

    def answer(self, limit: float) -> Answer:
        """The answer at a limit of the resource (a `budgets.budget_limit`)."""
        stats = {**self.front.stats}
        if self.up is None:
            return exact_answer(self.front.best(limit), stats)
        limits = {self.resource: limit, **self.others}
        up, down = self.up.at(limits), self.down.at(limits)
        return answer_from_passes(
            down, up, lambda _: exact_answer(self.down_front.best(down.limits[self.resource]), stats),
            lambda _: exact_answer(self.front.best(up.limits[self.resource]), stats))


# ---- options --------------------------------------------------------------------------------------

def _size(n: float) -> str:
    """A byte count for people: 512 B, 1.50 MiB, 2.00 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def _memory_cap(memory_cap: Any) -> float:
    return check_number("memory_cap", memory_cap, 0.0, low_open=True)


# rounded costs stay exact integers in floating point below this many units
MAX_UNITS = 2.0**53


def _scales(spec: Spec, resolution: Any, limits: Mapping[str, float]) -> dict[str, float | None]:
    """resource -> the scale of its rounding (1 / resolution), None where no rounding is asked for."""
    if resolution is None:
        wanted = {}
    elif isinstance(resolution, Mapping):
        wanted = dict(resolution)
        unknown = sorted(set(wanted) - set(spec.costs), key=str)
        if unknown:
            raise SpecError(f"option resolution.{unknown[0]}: not a resource of the spec ({sorted(spec.costs)})")
    else:
        wanted = {r: resolution for r in limits}
    out: dict[str, float | None] = {}
    for r in limits:
        res = wanted.get(r)
        if res is not None and (isinstance(res, bool) or not isinstance(res, (int, float))
                                or not (math.isfinite(res) and res > 0)):
            raise SpecError(f"option resolution: expected None or a positive number, got {res!r:.40} for {r!r}")
        if res is not None:
            magnitude = sum(float(np.abs(t.table).max(initial=0.0)) for t in spec.costs[r])
            if magnitude / res > MAX_UNITS:
                raise SpecError(f"option resolution: {res:g} is too fine for {r!r} (costs up to {magnitude:.3g} would "
                                f"count over 2**53 units); use at least {magnitude / MAX_UNITS:.3g}, or None (exact)")
        out[r] = None if res is None else 1.0 / float(res)
    return out


def check_options(opts: Mapping[str, Any], spec: Spec, limits: Mapping[str, float]) -> None:
    """Reject bad option values before any work."""
    _memory_cap(opts["memory_cap"])
    _scales(spec, opts["resolution"], limits)
    if opts.get("hint") is not None:
        configuration_from_hint(spec, opts["hint"])


register_backend("dp", solve, options=DEFAULTS, frontier=OnePassFront, check=check_options,
                 features={Feature.EXACT, Feature.BOUND, Feature.HINT, Feature.PRESOLVE, Feature.FRONTIER,
                           Feature.TIME_LIMIT, Feature.INTERRUPT},
                 description="dynamic programming over the factor graph, numpy only (exact)")
