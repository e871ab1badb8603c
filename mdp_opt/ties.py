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
    and the number of moves made (0 when nothing more could be kept)."""
    deadline = deadline or Deadline(None)
    choice, active = dict(choice), dict(active)
    value = evaluate(spec, choice, active).value

    def acceptable(c: Mapping[str, int], a: Mapping[str, bool]) -> bool:
        ev = evaluate(spec, c, a)
        return ev.value >= value and all(ev.costs[r] <= limit for r, limit in limits.items())

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
                if acceptable(trial, active):
                    choice, improved, moves = trial, True, moves + 1
                    break
        for b in spec.block_names:                # bring a removed block back
            if not active[b] and acceptable(choice, {**active, b: True}):
                active, improved, moves = {**active, b: True}, True, moves + 1
    return choice, active, moves
