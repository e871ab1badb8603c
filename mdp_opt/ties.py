"""Ties: among configurations of equal value, prefer the one that keeps more.

Several configurations often share the optimal value: channels and blocks whose importance is zero
can be dropped or kept at no loss, and a solver returns whichever it meets first. A pruning tool
should then keep them (at a 100% budget, keep everything: the pruned model must equal the original).
`keep_more` takes a verified optimal configuration and moves it to one that keeps more without
lowering its value by even one unit in the last place: a move is taken only when the core's exact
evaluation (`evaluate`, exactly rounded sums) gives a value >= the value before and every cost stays
within its limit. First the unpruned configuration itself is tried; then single moves that raise a
dim's kept count or bring a block back, the largest step first, until none is left. The value never
changes, so an optimal answer stays optimal with the same proof.
"""

from __future__ import annotations

from typing import Mapping

from .deadline import Deadline
from .evaluate import evaluate
from .spec import Spec

MAX_MOVES = 10_000


def keep_score(spec: Spec, choice: Mapping[str, int], active: Mapping[str, bool]) -> int:
    """How much a configuration keeps: the sum of its choice indices and active blocks."""
    return sum(choice.values()) + sum(bool(a) for a in active.values())


def keep_more(spec: Spec, limits: Mapping[str, float], choice: Mapping[str, int], active: Mapping[str, bool],
              deadline: Deadline | None = None) -> tuple[dict[str, int], dict[str, bool], int]:
    """A configuration of at least the same exact value, within `limits`, that keeps at least as much;
    and the number of moves made (0 when nothing more could be kept).

    Each candidate move is first estimated from the few terms it changes (a float sum with a generous
    rounding margin); only a move the estimate cannot rule out is evaluated exactly, and only the exact
    evaluation accepts a move."""
    deadline = deadline or Deadline(None)
    choice, active = dict(choice), dict(active)
    now = evaluate(spec, choice, active)
    value = now.value
    estimate = _MoveEstimate(spec, limits, now.value, now.costs)

    def acceptable(c: Mapping[str, int], a: Mapping[str, bool]) -> bool:
        ev = evaluate(spec, c, a)
        ok = ev.value >= value and all(ev.costs[r] <= limit for r, limit in limits.items())
        if ok:
            estimate.now = (ev.value, ev.costs)
        return ok

    full_choice, full_active = spec.full_configuration()
    if (full_choice, full_active) == (choice, active):
        return choice, active, 0
    if acceptable(full_choice, full_active):
        return full_choice, full_active, 1
    moves = 0
    improved = True
    while improved and moves < MAX_MOVES and not deadline.expired:
        improved = False
        for d in spec.dims:                       # raise a kept count: to the largest choice, else one step
            for k in sorted({d.size - 1, choice[d.name] + 1}, reverse=True):
                if not choice[d.name] < k < d.size:
                    continue
                trial = {**choice, d.name: k}
                if estimate.may_fit(choice, active, d.name, k, None, value) and acceptable(trial, active):
                    choice, improved, moves = trial, True, moves + 1
                    break
        for b in spec.block_names:                # bring a removed block back
            if not active[b] and estimate.may_fit(choice, active, None, None, b, value) \
                    and acceptable(choice, {**active, b: True}):
                active, improved, moves = {**active, b: True}, True, moves + 1
    return choice, active, moves


class _MoveEstimate:
    """The value and costs after one move (a dim's choice changed, or a block brought back), estimated from
    the terms the move touches; `may_fit` is False only when the move surely lowers the value or breaks a limit."""

    def __init__(self, spec: Spec, limits: Mapping[str, float], value: float, costs: Mapping[str, float]) -> None:
        self.limits = dict(limits)
        self.now = (value, dict(costs))
        self.by_dim: dict[str, list] = {d: [] for d in spec.dim_names}
        self.by_block: dict[str, list] = {b: [] for b in spec.block_names}
        for resource, _, term in spec.terms():
            for d in term.dims:
                self.by_dim[d].append((resource, term))
            if term.block is not None:
                self.by_block[term.block].append((resource, term))

    def may_fit(self, choice: Mapping[str, int], active: Mapping[str, bool], dim: str | None, k: int | None,
                block: str | None, value: float) -> bool:
        delta: dict[str | None, float] = {}
        size: dict[str | None, float] = {}
        if dim is not None:
            new = {**choice, dim: k}
            for resource, t in self.by_dim[dim]:
                if t.block is None or active[t.block]:
                    a = float(t.table[tuple(new[n] for n in t.dims)])
                    b = float(t.table[tuple(choice[n] for n in t.dims)])
                    delta[resource] = delta.get(resource, 0.0) + a - b
                    size[resource] = size.get(resource, 0.0) + abs(a) + abs(b)
        else:
            for resource, t in self.by_block[block]:
                a = float(t.table[tuple(choice[n] for n in t.dims)])
                delta[resource] = delta.get(resource, 0.0) + a
                size[resource] = size.get(resource, 0.0) + abs(a)
        now_value, now_costs = self.now
        margin = 1e-9 * (abs(now_value) + abs(value) + size.get(None, 0.0)) + 1e-300
        if now_value + delta.get(None, 0.0) < value - margin:
            return False
        for r, limit in self.limits.items():
            margin = 1e-9 * (abs(now_costs[r]) + abs(limit) + size.get(r, 0.0)) + 1e-300
            if now_costs[r] + delta.get(r, 0.0) > limit + margin:
                return False
        return True
