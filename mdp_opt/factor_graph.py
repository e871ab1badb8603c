"""Exact max-sum variable elimination over small discrete factor graphs (numpy only).

A factor graph has variables `0..n-1` with `sizes[v]` states and factors given by
their scopes (tuples of distinct variable indices) and tables (one axis per scope
variable, in scope order). `EliminationPlan` fixes an elimination order and the
layout of every intermediate table once; its `max_sum` and `max_marginals` then run
on any tables of those shapes, so a Lagrangian search reuses one plan for every
multiplier. `SpecGraph` is the factor graph of a `Spec`: dims and blocks are the
variables, and its tables are `objective - sum_r lambda_r * cost_r`.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, replace
from typing import Iterator, Mapping, Sequence

import numpy as np

from .spec import Spec

HEURISTICS = ("min-fill", "min-degree")
DEFAULT_MEMORY_LIMIT = 2 * 1024**3  # bytes for one intermediate table
# a clique table larger than this many entries is summed and maximised in slices of about this size, each
# still in the CPU's cache: a 256 x 256 x 256 clique took 21 ms built whole, 8.3 ms in 4 MB slices (measured)
SLICE_ENTRIES = 2**19
SMALL_TABLE = 2**12         # tables up to this many entries take their maximum by a second reduction, not a gather


class TableTooLarge(MemoryError):
    """Eliminating a variable would build a table larger than the memory limit."""


def elimination_order(sizes: Sequence[int], scopes: Sequence[Sequence[int]],
                      heuristic: str = "min-fill") -> list[int]:
    """An order eliminating every variable, chosen greedily.

    Args:
        sizes: state count of each variable `0..n-1`.
        scopes: the factors' scopes, as sequences of variable indices.
        heuristic: "min-fill" (fewest fill-in edges, ties by min weighted degree) or
            "min-degree" (fewest neighbours, ties by min weighted degree). The weighted
            degree is the size of the table eliminating the variable creates; remaining
            ties go to the lowest index, so the order is deterministic.
    """
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic: {heuristic!r} is not one of {list(HEURISTICS)}")
    sizes = _check_sizes(sizes)
    n = len(sizes)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for i, scope in enumerate(scopes):
        for v in scope:
            if not 0 <= v < n:
                raise ValueError(f"scopes[{i}]: variable {v} is not in 0..{n - 1}")
            neighbours[v].update(scope)
    for v in range(n):
        neighbours[v].discard(v)

    def weight(v: int) -> int:
        return math.prod(sizes[u] for u in neighbours[v]) * sizes[v]

    def fill(v: int) -> int:
        """Pairs of v's neighbours not yet adjacent to each other."""
        near = neighbours[v]
        return sum(len(near - neighbours[a]) - 1 for a in near) // 2

    def key(v: int) -> tuple[int, int, int]:
        return (fill(v) if heuristic == "min-fill" else len(neighbours[v]), weight(v), v)

    keys = {v: key(v) for v in range(n)}
    order: list[int] = []
    while keys:
        v = min(keys, key=keys.__getitem__)
        near = neighbours[v]
        affected = set(near)
        for u in near:
            neighbours[u].discard(v)
            for w in near - neighbours[u] - {u}:  # a fill-in edge u-w changes the fill of their common neighbours
                if u < w:
                    affected |= neighbours[u] & neighbours[w]
            neighbours[u] |= near - {u}
        neighbours[v] = set()
        del keys[v]
        order.append(v)
        for u in affected:
            if u in keys:
                keys[u] = key(u)
    return order


@dataclass(frozen=True)
class MaxMarginals:
    """Result of `EliminationPlan.max_marginals`.

    `value` is the max-sum optimum, `assignment` one maximiser (state per variable),
    `marginals[v][s]` the best total over all assignments with variable v in state s.
    """

    value: float
    assignment: np.ndarray
    marginals: list[np.ndarray]


@dataclass(frozen=True)
class _Step:
    """Elimination of one variable: its clique table is the sum of its inputs."""

    var: int
    shape: tuple[int, ...]                                 # clique axes; `var` is the last one
    factors: tuple[tuple[int, tuple[int, ...]], ...]       # (factor index, shape broadcasting into the clique)
    messages: tuple[tuple[int, tuple[int, ...]], ...]      # (earlier step, shape broadcasting into the clique)
    separator: tuple[int, ...]                             # clique variables but `var`, in clique order
    parent: int | None                                     # step that receives this step's message
    parent_axes: tuple[int, ...]                           # parent clique axes not in `separator`
    gate_axis: int | None = None                           # a separator axis at whose state 0 every input is 0
    folds: tuple[tuple[int, tuple[int, ...]], ...] = ()    # inputs as summed (`_fold_plan`): (lead, added into it)


@dataclass(frozen=True)
class Combination:
    """A factor table given as sum_i weight_i * table_i (tables of one shape), summed only where a step
    needs it: `SpecGraph` passes objective - lambda * cost this way, so a pass never builds the weighted
    table of a factor at its own size (for a gated factor, twice what its step uses)."""

    terms: tuple[tuple[float, np.ndarray], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.terms[0][1].shape

    def reshape(self, shape: Sequence[int]) -> Combination:
        return Combination(tuple((w, t.reshape(shape)) for w, t in self.terms))

    def __getitem__(self, index: tuple) -> Combination:
        return Combination(tuple((w, t[index]) for w, t in self.terms))

    def materialise(self) -> np.ndarray:
        """The weighted sum as one new array."""
        (w, t), rest = self.terms[0], self.terms[1:]
        table = np.multiply(t, w)
        for w, t in rest:
            if w == 1.0:
                table += t
            else:
                table += w * t
        return table


def _fold_plan(shapes: Sequence[tuple[int, ...]], size: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """How a step's inputs (their broadcast `shapes`, into a clique of `size` entries) are summed before the clique
    is built: each input smaller than the clique is added into the first larger-or-equal input (also smaller than
    the clique) whose axes cover its own, at that input's size. A clique over (stage, in, out) receiving 72 block
    messages over `stage` alone then adds them at 64 entries each and broadcasts their sum once, instead of 72
    additions over the whole clique (a quarter of the additions of a pass over a ResNet with a 72-block stage).
    Returns (lead input, inputs added into it) per summed part, larger parts first. The sum is the same up to
    rounding, which every bound's margin covers; shapes are static, so this is planned once per step."""
    out: list[tuple[int, list[int]]] = []
    for k in sorted(range(len(shapes)), key=lambda k: -math.prod(shapes[k])):    # stable: ties keep their order
        host = None
        if math.prod(shapes[k]) < size:
            host = next((g for g, (lead, _) in enumerate(out) if math.prod(shapes[lead]) < size and
                         all(b == 1 or a == b for a, b in zip(shapes[lead], shapes[k]))), None)
        if host is None:
            out.append((k, []))
        else:
            out[host][1].append(k)
    return tuple((lead, tuple(added)) for lead, added in out)


class EliminationPlan:
    """Elimination order and table layout for factors with fixed scopes, reusable across tables.

    Args:
        sizes: state count of each variable.
        scopes: one scope per factor (distinct variable indices; may be empty for a constant).
        order: elimination order (a permutation of all variables); default `elimination_order`.
        heuristic: passed to `elimination_order` when `order` is not given.
        memory_limit: bytes allowed for one intermediate table; a larger one raises `TableTooLarge`
            here, before any computation.
        names: variable names used in error messages.
        zero_at: per factor, variables of its scope at whose state 0 the factor's table is 0 everywhere
            (a block's gate: the block removed adds nothing). A step whose inputs all vanish at state 0
            of one separator variable computes only the other states: half the work of a gated block.
            The tables given to `max_sum`/`max_marginals` must keep that promise.

    Tables passed to `max_sum`/`max_marginals` whose scope is sorted by `canonical` (the
    scope order of `self.scopes`) are used without copying; others are transposed.
    """

    def __init__(self, sizes: Sequence[int], scopes: Sequence[Sequence[int]], order: Sequence[int] | None = None,
                 heuristic: str = "min-fill", memory_limit: float = DEFAULT_MEMORY_LIMIT,
                 names: Sequence[str] | None = None, zero_at: Sequence[Sequence[int]] | None = None) -> None:
        self.sizes = _check_sizes(sizes)
        n = len(self.sizes)
        self.names = list(names) if names is not None else [f"variable {v}" for v in range(n)]
        self.scopes = [tuple(int(v) for v in s) for s in scopes]
        for i, s in enumerate(self.scopes):
            if len(set(s)) != len(s) or any(not 0 <= v < n for v in s):
                raise ValueError(f"scopes[{i}]: {s} must name distinct variables in 0..{n - 1}")
        self.order = list(order) if order is not None else elimination_order(self.sizes, self.scopes, heuristic)
        if sorted(self.order) != list(range(n)):
            raise ValueError(f"order: expected a permutation of 0..{n - 1}, got {self.order}")
        self.memory_limit = memory_limit
        rank = {v: i for i, v in enumerate(self.order)}
        # canonical axis order: later-eliminated variables first, so each step's variable is its last axis
        self._rank = rank
        self._perms = [tuple(sorted(range(len(s)), key=lambda a, s=s: -rank[s[a]])) for s in self.scopes]
        self._zero_at = [frozenset(z) & frozenset(s) for z, s in zip(zero_at, self.scopes)] if zero_at is not None \
            else [frozenset()] * len(self.scopes)
        self.steps = self._build_steps()

    def canonical(self, scope: Sequence[int]) -> tuple[int, ...]:
        """`scope` in this plan's axis order (later-eliminated variables first)."""
        return tuple(sorted(scope, key=lambda v: -self._rank[v]))

    def _build_steps(self) -> list[_Step]:
        pending_factors: dict[int, list[int]] = {}
        for f, s in enumerate(self.scopes):
            if s:
                pending_factors.setdefault(min(s, key=self._rank.__getitem__), []).append(f)
        pending_messages: dict[int, list[int]] = {}
        separators: list[tuple[int, ...]] = []
        message_zero_at: list[frozenset[int]] = []   # per step, variables at whose state 0 its message is 0
        steps: list[_Step] = []
        for i, v in enumerate(self.order):
            inputs = [self.canonical(self.scopes[f]) for f in pending_factors.get(v, [])]
            inputs += [separators[j] for j in pending_messages.get(v, [])]
            zero = [self._zero_at[f] for f in pending_factors.get(v, [])]
            zero += [message_zero_at[j] for j in pending_messages.get(v, [])]
            common = frozenset.intersection(*zero) - {v} if zero else frozenset()
            message_zero_at.append(common)
            clique = self.canonical(set().union({v}, *inputs))
            entries = math.prod(self.sizes[u] for u in clique)
            if entries * 8 > self.memory_limit:
                raise TableTooLarge(
                    f"eliminating {self.names[v]} needs a table over {len(clique)} variables "
                    f"({' x '.join(str(self.sizes[u]) for u in clique)} = {entries:,} entries, "
                    f"{_bytes(entries * 8)}), above the memory limit of {_bytes(self.memory_limit)}; "
                    "raise memory_limit or use a backend that does not eliminate variables")
            position = {u: a for a, u in enumerate(clique)}

            def broadcast(scope: tuple[int, ...]) -> tuple[int, ...]:
                shape = [1] * len(clique)
                for u in scope:
                    shape[position[u]] = self.sizes[u]
                return tuple(shape)

            separator = clique[:-1]
            separators.append(separator)
            if separator:
                pending_messages.setdefault(separator[-1], []).append(i)
            factors = tuple((f, broadcast(self.canonical(self.scopes[f]))) for f in pending_factors.get(v, []))
            messages = tuple((j, broadcast(separators[j])) for j in pending_messages.get(v, []))
            steps.append(_Step(
                var=v, shape=tuple(self.sizes[u] for u in clique), factors=factors, messages=messages,
                separator=separator, parent=None, parent_axes=(),
                gate_axis=min((position[u] for u in common), default=None),
                folds=_fold_plan([shape for _, shape in factors + messages], entries)))
        for j, step in enumerate(steps):
            for child, _ in step.messages:
                clique = steps[j].separator + (steps[j].var,)
                sep = set(steps[child].separator)
                steps[child] = replace(steps[child], parent=j,
                                        parent_axes=tuple(a for a, u in enumerate(clique) if u not in sep))
        return steps

    # ---- running -----------------------------------------------------------------------
    def _canonical_tables(self, tables: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
        if len(tables) != len(self.scopes):
            raise ValueError(f"tables: expected {len(self.scopes)} tables (one per scope), got {len(tables)}")
        out, constant = [], 0.0
        for f, (t, perm) in enumerate(zip(tables, self._perms)):
            t = np.asarray(t, dtype=np.float64)
            expected = tuple(self.sizes[v] for v in self.scopes[f])
            if t.shape != expected:
                raise ValueError(f"tables[{f}]: shape {t.shape} does not match its scope's sizes {expected}")
            if not self.scopes[f]:
                constant += float(t)
            out.append(t if perm == tuple(range(len(perm))) else t.transpose(perm))
        return out, constant

    def _inputs(self, step: _Step, tables: list[np.ndarray], messages: list[np.ndarray]) -> list[np.ndarray]:
        """The step's factors and messages, shaped to broadcast into its clique, summed as `step.folds` says."""
        parts = ([tables[f].reshape(shape) for f, shape in step.factors]
                 + [messages[j].reshape(shape) for j, shape in step.messages])
        out: list[np.ndarray | Combination] = []
        for lead, added in step.folds:
            if not added:
                out.append(parts[lead])
                continue
            table = parts[lead].materialise() if isinstance(parts[lead], Combination) else np.array(parts[lead])
            for k in added:
                table += parts[k].materialise() if isinstance(parts[k], Combination) else parts[k]
            out.append(table)
        return out

    @staticmethod
    def _sum(parts: list[np.ndarray | Combination], shape: tuple[int, ...], writable: bool) -> np.ndarray:
        """The sum of `parts` broadcast to `shape` (a read-only view of a lone array unless `writable`).

        A `Combination` part as large as the result is summed term by term into it (its weighted table is
        never built on its own); a smaller one is summed at its own size first."""
        size = math.prod(shape)
        terms: list[tuple[float, np.ndarray]] = []
        for part in parts:
            if not isinstance(part, Combination):
                terms.append((1.0, part))
            elif math.prod(part.shape) < size:  # cheaper summed at its own size, then broadcast once
                terms.append((1.0, part.materialise()))
            else:
                terms.extend(part.terms)
        if not terms:
            return np.zeros(shape)
        if len(terms) == 1 and terms[0][0] == 1.0:
            table = np.broadcast_to(terms[0][1], shape)
            return table.copy() if writable else table
        weighted = [(w, t) for w, t in terms if w != 1.0]
        plain = [t for w, t in terms if w == 1.0]
        if weighted:
            table = np.empty(shape)
            np.multiply(weighted[0][1], weighted[0][0], out=table)
            for w, t in weighted[1:]:
                table += w * t
        else:
            table = np.add(plain[0], plain[1])
            if table.shape != shape:
                table = np.broadcast_to(table, shape).copy()
            plain = plain[2:]
        for t in plain:
            table += t
        return table

    def _eliminate(self, step: _Step, tables: list[np.ndarray], messages: list[np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(message, argmax) of one step: the clique maximised over its last axis. With a gate axis, only
        the gate's other states are built; at state 0 the message is 0 and the choice 0."""
        parts = self._inputs(step, tables, messages)
        a = step.gate_axis
        if a is None:
            return self._maximise(parts, step.shape)
        on = (slice(None),) * a + (slice(1, None),)
        message_on, best_on = self._maximise([p[on] if p.shape[a] > 1 else p for p in parts],
                                             step.shape[:a] + (step.shape[a] - 1,) + step.shape[a + 1:])
        message = np.zeros(step.shape[:-1])
        best = np.zeros(step.shape[:-1], dtype=np.int64)
        message[on] = message_on
        best[on] = best_on
        return message, best

    @staticmethod
    def _slicing(shape: tuple[int, ...]) -> tuple[int, int] | None:
        """(axis, rows) to build a table of `shape` over SLICE_ENTRIES entries `rows` at a time along `axis`, its
        longest axis but the last; None to build it whole."""
        axis = max(range(len(shape) - 1), key=lambda x: shape[x], default=None)
        if axis is None:
            return None
        rows = max(1, SLICE_ENTRIES * shape[axis] // math.prod(shape))
        return None if rows >= shape[axis] else (axis, rows)

    @staticmethod
    def _slices(parts: list[np.ndarray | Combination], shape: tuple[int, ...], axis: int, rows: int
                ) -> Iterator[tuple[tuple[slice, ...], list[np.ndarray | Combination], tuple[int, ...]]]:
        """Per slice of the table: its index, `parts` cut to it, its shape. Each weighted table smaller than the
        whole is summed once first, as `_sum` does for the whole table, so that the slices add exactly what
        the whole table would, in the same order."""
        size = math.prod(shape)
        parts = [p.materialise() if isinstance(p, Combination) and math.prod(p.shape) < size else p for p in parts]
        for start in range(0, shape[axis], rows):
            here = (slice(None),) * axis + (slice(start, start + rows),)
            yield (here, [p[here] if p.shape[axis] > 1 else p for p in parts],
                   shape[:axis] + (min(rows, shape[axis] - start),) + shape[axis + 1:])

    @classmethod
    def _maximise(cls, parts: list[np.ndarray | Combination], shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(max, argmax) over the last axis of the sum of `parts` broadcast to `shape`, a large table slice by
        slice (`_slicing`), never whole."""
        slicing = cls._slicing(shape)
        if slicing is None:
            table = cls._sum(parts, shape, writable=False)
            best = table.argmax(axis=-1)
            if table.size <= SMALL_TABLE:     # a second reduction costs less than take_along_axis's overhead
                return table.max(axis=-1), best
            return np.take_along_axis(table, best[..., None], axis=-1)[..., 0], best
        message = np.empty(shape[:-1])
        best = np.empty(shape[:-1], dtype=np.int64)
        for here, cut, sub_shape in cls._slices(parts, shape, *slicing):
            message[here], best[here] = cls._maximise(cut, sub_shape)
        return message, best

    def _upward(self, tables: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Messages (max over each step's variable) and argmax tables, in elimination order."""
        messages: list[np.ndarray] = []
        choices: list[np.ndarray] = []
        for step in self.steps:
            message, best = self._eliminate(step, tables, messages)
            choices.append(best)
            messages.append(message)
        return messages, choices

    def _backtrack(self, choices: list[np.ndarray]) -> np.ndarray:
        assignment = np.zeros(len(self.sizes), dtype=np.int64)
        for step, best in zip(reversed(self.steps), reversed(choices)):
            assignment[step.var] = best[tuple(assignment[u] for u in step.separator)]
        return assignment

    def max_sum(self, tables: Sequence[np.ndarray]) -> tuple[float, np.ndarray]:
        """(max over assignments of the sum of the tables, one maximising assignment)."""
        return self._max_sum(*self._canonical_tables(tables))

    def _max_sum(self, canonical: list[np.ndarray], constant: float,
                 upward: tuple[list[np.ndarray], list[np.ndarray]] | None = None) -> tuple[float, np.ndarray]:
        messages, choices = upward or self._upward(canonical)
        value = constant + sum(float(messages[i]) for i, s in enumerate(self.steps) if s.parent is None)
        return value, self._backtrack(choices)

    def max_marginals(self, tables: Sequence[np.ndarray]) -> MaxMarginals:
        """Max-sum optimum, a maximiser, and for every variable and state the best total using that state.

        An upward (elimination) pass and a downward pass over the elimination tree; the
        downward message to a step removes its own upward message from the parent's belief.
        """
        return self._max_marginals(*self._canonical_tables(tables))

    def _max_marginals(self, canonical: Sequence[np.ndarray | Combination], constant: float,
                       upward: tuple[list[np.ndarray], list[np.ndarray]] | None = None) -> MaxMarginals:
        messages, choices = upward or self._upward(canonical)
        roots = [i for i, s in enumerate(self.steps) if s.parent is None]
        root_values = {i: float(messages[i]) for i in roots}
        total = constant + sum(root_values.values())
        downward: list[np.ndarray | None] = [None] * len(self.steps)
        marginals: list[np.ndarray] = [np.empty(0)] * len(self.sizes)
        for i in reversed(range(len(self.steps))):
            step = self.steps[i]
            if step.gate_axis is not None:
                marginals[step.var] = self._gated_downward(i, canonical, messages, downward)
                continue
            if step.parent is None:  # the best of every other component and the constants
                extra = np.full((1,) * len(step.shape), total - root_values[i])
            else:
                extra = downward[i].reshape(step.shape[:-1] + (1,))
            marginals[step.var], maxima = self._belief_maxima(self._inputs(step, canonical, messages), extra,
                                                              step.shape, self._child_axes(step))
            for (j, _), message in zip(step.messages, self._child_messages(step, messages, maxima)):
                downward[j] = message
        return MaxMarginals(total, self._backtrack(choices), marginals)

    @classmethod
    def _belief_maxima(cls, parts: list[np.ndarray | Combination], extra: np.ndarray, shape: tuple[int, ...],
                       reductions: Sequence[tuple[int, ...]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Of the belief sum(parts) + extra (broadcast to `shape`): its max over all axes but the last, and its
        max over each tuple of axes in `reductions`; a large belief slice by slice (`_slicing`), never whole
        (maxima of slices combine exactly)."""
        slicing = cls._slicing(shape)
        if slicing is None:
            belief = cls._sum(parts, shape, writable=True)
            belief += extra
            return belief.reshape(-1, shape[-1]).max(axis=0), [belief.max(axis=axes) for axes in reductions]
        axis = slicing[0]
        marginal = np.full(shape[-1], -np.inf)
        maxima = [np.full(tuple(n for x, n in enumerate(shape) if x not in axes), -np.inf) for axes in reductions]
        for here, cut, sub_shape in cls._slices([*parts, extra], shape, *slicing):
            part_marginal, part_maxima = cls._belief_maxima(cut[:-1], cut[-1], sub_shape, reductions)
            np.maximum(marginal, part_marginal, out=marginal)
            for out, part, axes in zip(maxima, part_maxima, reductions):
                if axis in axes:
                    np.maximum(out, part, out=out)
                else:  # the slice's own rows
                    out[(slice(None),) * (axis - sum(1 for x in axes if x < axis)) + (here[axis],)] = part
        return marginal, maxima

    def _child_axes(self, step: _Step) -> list[tuple[int, ...]]:
        """The distinct sets of axes the downward messages of `step`'s children maximise over."""
        return list(dict.fromkeys(self.steps[j].parent_axes for j, _ in step.messages))

    def _child_messages(self, step: _Step, messages: list[np.ndarray], maxima: list[np.ndarray],
                        index: tuple = ()) -> list[np.ndarray]:
        """Each child's downward message from the belief's `maxima` over `_child_axes(step)` (of the belief's part
        `index`): max over its axes of (belief - its upward message) is the belief's max over them minus that
        message, which is constant along them (exactly: rounding is monotone)."""
        by_axes = dict(zip(self._child_axes(step), maxima))
        out = []
        for j, child_shape in step.messages:
            axes = self.steps[j].parent_axes
            message = messages[j].reshape(child_shape)[index]
            out.append(by_axes[axes] - message.reshape(tuple(n for x, n in enumerate(message.shape) if x not in axes)))
        return out

    def _gated_downward(self, i: int, tables: list[np.ndarray], messages: list[np.ndarray],
                        downward: list[np.ndarray | None]) -> np.ndarray:
        """The downward pass of a gated step (never a root: the gate is a separator variable): its variable's
        max-marginals, and its children's downward messages stored in `downward`.

        At the gate's state 0 every input is 0, so the belief there is the parent's downward message alone
        (constant along the step's variable, and every child's message, which names the gate, is 0 there):
        only the gate's other states are built, as in `_eliminate`."""
        step = self.steps[i]
        a, shape = step.gate_axis, step.shape
        on = (slice(None),) * a + (slice(1, None),)
        off = (slice(None),) * a + (slice(0, 1),)
        parent = downward[i].reshape(shape[:-1] + (1,))
        inputs = [p[on] if p.shape[a] > 1 else p for p in self._inputs(step, tables, messages)]
        marginal_on, maxima = self._belief_maxima(inputs, parent[on], shape[:a] + (shape[a] - 1,) + shape[a + 1:],
                                                  self._child_axes(step))
        belief_off = parent[off]
        marginal = np.maximum(marginal_on, belief_off.max())
        for (j, _), message_on in zip(step.messages, self._child_messages(step, messages, maxima, on)):
            axes = self.steps[j].parent_axes
            gate = a - sum(1 for x in axes if x < a)  # the gate's axis in the child's separator
            out = np.empty(tuple(n for x, n in enumerate(shape) if x not in axes))
            out[(slice(None),) * gate + (slice(1, None),)] = message_on
            out[(slice(None),) * gate + (slice(0, 1),)] = belief_off.max(axis=axes)  # its variable's axis broadcasts
            downward[j] = out
        return marginal


class SpecGraph:
    """The factor graph of a spec, its terms merged into few factors.

    Variables are the spec's dims (states = choice indices) followed by its blocks
    (state 0 removed, 1 active). The presolve, the `dp` backend and the frontier all work on
    this one graph: `scopes`, `value_tables` and `cost_tables` (per resource, None where a
    factor has no cost of it). A term gated by block b becomes a factor over its dims
    and b, equal to the term's table when b = 1 and to 0 when b = 0. Terms are summed
    into as few factors as possible: one per scope that is not inside another scope
    (plus one for the unblocked constants), each term added into the smallest such scope
    holding its own.
    """

    def __init__(self, spec: Spec, memory_limit: float = DEFAULT_MEMORY_LIMIT, heuristic: str = "min-fill") -> None:
        self.spec = spec
        self._last_upward: tuple[tuple, tuple | None] = ((), None)   # (multipliers, upward messages) of the last pass
        self.variables = list(spec.dim_names) + list(spec.block_names)
        self.sizes = [d.size for d in spec.dims] + [2] * len(spec.blocks)
        self.resources = tuple(spec.costs)
        index = {name: i for i, name in enumerate(spec.dim_names)}  # dim and block names may coincide
        block_index = {name: len(spec.dims) + j for j, name in enumerate(spec.block_names)}
        groups: dict[frozenset[int], list[tuple[str | None, tuple[int, ...], np.ndarray, int | None]]] = {}
        for resource, _, term in spec.terms():
            scope = tuple(index[d] for d in term.dims)
            gate = None if term.block is None else block_index[term.block]
            groups.setdefault(frozenset(scope + ((gate,) if gate is not None else ())), []).append(
                (resource, scope, term.table, gate))
        groups = self._absorb(groups)
        self._order = elimination_order(self.sizes, [tuple(s) for s in groups], heuristic)
        self._memory_limit = memory_limit
        rank = {v: i for i, v in enumerate(self._order)}
        scopes = [tuple(sorted(s, key=lambda v: -rank[v])) for s in groups]
        self.scopes = scopes
        self.value_tables: list[np.ndarray] = []
        self.cost_tables: dict[str, list[np.ndarray | None]] = {r: [] for r in self.resources}
        self.zero_at: list[tuple[int, ...]] = []  # per factor, the blocks whose removal (state 0) zeroes it
        value_scale, cost_scale = 0.0, {r: 0.0 for r in self.resources}
        for scope, members in zip(scopes, groups.values()):
            shape = tuple(self.sizes[v] for v in scope)
            # each resource's sum is stored only over the axes its terms name (and their gates) and broadcast to
            # the factor's shape as a read-only view: an importance vector merged into an attention factor
            # stays a vector, not a copy per (embedding, heads, head dim)
            named: dict[str | None, set[int]] = {}
            for resource, term_scope, _, gate in members:
                named.setdefault(resource, set()).update(term_scope, () if gate is None else (gate,))
            sums = {r: np.zeros([self.sizes[v] if v in axes else 1 for v in scope]) for r, axes in named.items()}
            for resource, term_scope, table, gate in members:
                # a gated term is added into its block's active half only: the removed half stays 0, never written
                axes = sorted(range(len(term_scope)), key=lambda a: scope.index(term_scope[a]))
                inside = table.transpose(axes).reshape(
                    [self.sizes[v] if v in term_scope else 1 for v in scope if v != gate])
                sums[resource][tuple(1 if v == gate else slice(None) for v in scope)] += inside
            value = sums.get(None, np.zeros([1] * len(scope)))
            value_scale += float(np.abs(value).max())
            self.value_tables.append(np.broadcast_to(value, shape))
            for r in self.resources:
                cost = sums.get(r)
                if cost is not None:
                    cost_scale[r] += float(cost.max())
                self.cost_tables[r].append(None if cost is None else np.broadcast_to(cost, shape))
            gates = {gate for *_, gate in members}
            self.zero_at.append(tuple(gates) if len(gates) == 1 and None not in gates else ())
        self._constants = [f for f, scope in enumerate(scopes) if not scope]
        self._value_scale, self._cost_scale = value_scale, cost_scale

    @functools.cached_property
    def plan(self) -> EliminationPlan:
        """The elimination plan (built on first use; raises `TableTooLarge` beyond the memory limit)."""
        return EliminationPlan(self.sizes, self.scopes, self._order, memory_limit=self._memory_limit,
                               names=self.variables, zero_at=self.zero_at)

    def _absorb(self, groups: dict[frozenset[int], list]) -> dict[frozenset[int], list]:
        """Move each group of terms into the smallest group whose scope strictly contains its scope."""
        size = {scope: (math.prod(self.sizes[v] for v in scope), sorted(scope)) for scope in groups}
        target = {}
        for scope in groups:
            supersets = [other for other in groups if scope and scope < other]
            if supersets:
                target[scope] = min(supersets, key=size.__getitem__)
        merged: dict[frozenset[int], list] = {}
        for scope, members in groups.items():
            while scope in target:
                scope = target[scope]
            merged.setdefault(scope, []).extend(members)
        return merged

    def tables(self, lambdas: Mapping[str, float], value_weight: float = 1.0) -> list[np.ndarray]:
        """Per factor: value_weight * objective - sum_r lambdas[r] * cost_r."""
        return [self.table(f, lambdas, value_weight) for f in range(len(self.value_tables))]

    def table(self, f: int, lambdas: Mapping[str, float], value_weight: float = 1.0) -> np.ndarray:
        """Factor f of `tables` (the value table itself, not a copy, when no multiplier applies)."""
        return self._sum_terms(self.combination(f, lambdas, value_weight))

    def combination(self, f: int, lambdas: Mapping[str, float], value_weight: float = 1.0) -> np.ndarray | Combination:
        """Factor f of `tables` as the elimination takes it: the value table, or a `Combination`."""
        terms = [(-lam, self.cost_tables[r][f]) for r, lam in lambdas.items()
                 if lam and self.cost_tables[r][f] is not None]
        if not terms and value_weight == 1.0:
            return self.value_tables[f]
        if value_weight != 0.0 or not terms:
            terms.append((value_weight, self.value_tables[f]))
        return Combination(tuple(terms))

    @staticmethod
    def _sum_terms(table: np.ndarray | Combination) -> np.ndarray:
        return table.materialise() if isinstance(table, Combination) else table

    def max_sum(self, lambdas: Mapping[str, float], value_weight: float = 1.0) -> tuple[float, np.ndarray]:
        """(max over assignments of the weighted tables, a maximising assignment); see `tables`.

        Each factor's weighted table is summed into its step's table, never built on its own: building them
        first cost more than the pass itself on large specs."""
        tables = [self.combination(f, lambdas, value_weight) for f in range(len(self.value_tables))]
        constant = sum(float(self._sum_terms(tables[f])) for f in self._constants)
        upward = self.plan._upward(tables)
        self._last_upward = (self._pass_key(lambdas, value_weight), upward)
        return self.plan._max_sum(tables, constant, upward)

    def max_marginals(self, lambdas: Mapping[str, float]) -> MaxMarginals:
        """`EliminationPlan.max_marginals` of `tables(lambdas)`, its factors passed as in `max_sum`. The upward
        half is not repeated when the last `max_sum` was at these multipliers (the presolve's fixing runs
        at the multipliers of its best bound, most often its last pass)."""
        tables = [self.combination(f, lambdas) for f in range(len(self.value_tables))]
        constant = sum(float(self._sum_terms(tables[f])) for f in self._constants)
        key, upward = self._last_upward
        return self.plan._max_marginals(tables, constant, upward if key == self._pass_key(lambdas, 1.0) else None)

    @staticmethod
    def _pass_key(lambdas: Mapping[str, float], value_weight: float) -> tuple:
        return value_weight, tuple(sorted((r, float(lam)) for r, lam in lambdas.items()))

    def rounding_margin(self, lambdas: Mapping[str, float], value_weight: float = 1.0) -> float:
        """A safe bound on the float error of one elimination pass over `tables(lambdas, value_weight)`."""
        scale = abs(value_weight) * self._value_scale + sum(abs(l) * self._cost_scale[r] for r, l in lambdas.items())
        return 1e-11 * scale + 1e-12

    def evaluate(self, assignment: np.ndarray) -> tuple[float, dict[str, float]]:
        """(value, resource -> cost) of an assignment (one state per variable)."""
        value = 0.0
        costs = {r: 0.0 for r in self.resources}
        for f, scope in enumerate(self.scopes):
            at = tuple(int(assignment[v]) for v in scope)
            value += float(self.value_tables[f][at])
            for r in self.resources:
                cost = self.cost_tables[r][f]
                if cost is not None:
                    costs[r] += float(cost[at])
        return value, costs

    def configuration(self, assignment: np.ndarray) -> tuple[dict[str, int], dict[str, bool]]:
        """(dim name -> choice index, block name -> active) of an assignment."""
        n = len(self.spec.dims)
        return ({d: int(assignment[i]) for i, d in enumerate(self.spec.dim_names)},
                {b: bool(assignment[n + j]) for j, b in enumerate(self.spec.block_names)})

    def assignment(self, choice: Mapping[str, int], active: Mapping[str, bool]) -> np.ndarray:
        """The assignment of a configuration (the inverse of `configuration`; a block missing from `active`
        is active)."""
        return np.array([int(choice[d]) for d in self.spec.dim_names]
                        + [int(bool(active.get(b, True))) for b in self.spec.block_names], dtype=np.int64)


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    out = []
    for v, s in enumerate(sizes):
        try:
            size = operator.index(s)
        except TypeError:
            size = 0
        if isinstance(s, (bool, np.bool_)) or size < 1:
            raise ValueError(f"sizes[{v}]: expected a positive integer state count, got {s!r}")
        out.append(size)
    return out


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"
