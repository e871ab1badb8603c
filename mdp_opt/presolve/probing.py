"""Probing: a stronger fixing where the Lagrangian bound is loose, by splitting the spec on a shared variable.

The duality gap of a pruning spec comes mostly from the few dims that many terms share (a stage's residual
width, a ViT's embedding): with one of them fixed the blocks decouple, and the Lagrangian bound of what is
left is far tighter. So when the fixing leaves many choices or the gap is large, `probe` takes a variable to
split on (`branching_variable`: with one limited resource, one the maximisers nearest the limit on either side
disagree on; of those, the one the most terms name or gate) and, for each of its surviving states c (best
bound first), runs the Lagrangian search of the spec with that variable fixed to c. The search bounds every
configuration using c, finds feasible configurations (often better than the incumbent: the branch is easier)
and, where the branch stays open, its own reduced-cost fixing. A state whose bound is below the best
incumbent is dropped; every other variable keeps the union of what the open branches keep.

Nothing optimal is lost: a configuration at least as good as the final incumbent uses some state c, whose
branch bound is at least its value, so that branch is open and its fixing keeps every state of it. The
new bound is the largest bound of an open branch (or the incumbent's value when none is open).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..deadline import Deadline
from ..evaluate import evaluate
from ..factor_graph import SpecGraph
from ..spec import Spec
from .dual import LagrangianSearch
from .fixing import lift_assignment, reduce_spec, states_to_keep

PROBE_MIN_CHOICES = 1_000   # probe when the fixing leaves at least this many dim choices,
PROBE_MIN_GAP = 1e-3        # or when the relative gap (bound - incumbent) / bound is at least this


@dataclass
class Probed:
    """What probing found: per variable of the spec's graph, the states to keep; the best incumbent (assignment
    and value, possibly improved); the new bound; `stats` for the presolve's report."""

    keep: list[np.ndarray]
    incumbent: np.ndarray
    incumbent_value: float
    bound: float
    stats: dict[str, Any] = field(default_factory=dict)


def open_choices(spec: Spec, keep: list[np.ndarray]) -> int:
    """The kept choices of the dims that matter: those named by a term whose block is not fixed removed."""
    removed = {b for j, b in enumerate(spec.block_names) if not keep[len(spec.dims) + j][1]}
    named = {d for _, _, t in spec.terms() if t.block not in removed for d in t.dims}
    return sum(int(keep[i].sum()) for i, d in enumerate(spec.dims) if d.name in named)


def branching_variable(graph: SpecGraph, keep: list[np.ndarray], differ: np.ndarray | None = None) -> int | None:
    """The variable of `graph` (dim or block) to split on: of those with more than one kept state (and, when
    `differ` is given, where it is True: where the configurations on either side of the limit disagree), the one
    naming or gating the most terms (ties: more kept states, then the first); None when there is none."""
    spec = graph.spec
    dim_index = {name: i for i, name in enumerate(spec.dim_names)}       # dim and block names may coincide
    block_index = {name: len(spec.dims) + j for j, name in enumerate(spec.block_names)}
    shared: Counter[int] = Counter()
    for _, _, t in spec.terms():
        shared.update(dim_index[d] for d in t.dims)
        if t.block is not None:
            shared[block_index[t.block]] += 1
    candidates = [v for v, m in enumerate(keep) if m.sum() > 1 and shared[v] and (differ is None or differ[v])]
    if not candidates:
        return None
    return max(candidates, key=lambda v: (shared[v], int(keep[v].sum()), -v))


def probe(graph: SpecGraph, limits: Mapping[str, float], keep: list[np.ndarray], bounds: list[np.ndarray],
          incumbent: np.ndarray, incumbent_value: float, differ: np.ndarray | None = None,
          deadline: Deadline | None = None) -> Probed | None:
    """Split `graph.spec` (restricted to `keep`) on its `branching_variable`, as the module docstring says.

    `differ`: where the search's configurations nearest the limit on either side differ (see
    `branching_variable`), or None.
    `bounds`: per variable and state, the fixing's upper bounds (`fixing.state_bounds`), used to order the
    branches and to drop a state without searching it once the incumbent passes its bound.
    Returns None when there is no variable to split on or the deadline passes first."""
    deadline = deadline or Deadline(None)
    spec = graph.spec
    v = branching_variable(graph, keep, differ)
    if v is None:
        return None
    best, best_value = incumbent.copy(), incumbent_value
    branches: list[tuple[float, int, list[np.ndarray]]] = []    # open so far: (bound, state, keep)
    searched = passes = 0
    for c in sorted(np.flatnonzero(keep[v]), key=lambda c: -bounds[v][c]):
        if bounds[v][c] < best_value:
            break                                   # the rest are worse still: sorted by bound
        if deadline.expired:
            return None
        branch = [m.copy() for m in keep]
        branch[v][:] = False
        branch[v][c] = True
        pin = np.array([int(np.flatnonzero(m)[0]) for m in branch])
        sub, kept, fixed = reduce_spec(spec, branch, pin)
        sub_graph = SpecGraph(sub)
        search = LagrangianSearch(sub_graph, sub, limits, deadline, cutoff=best_value)
        infeasible = search.run()
        searched += 1
        passes += search.passes
        if deadline.expired:
            return None
        if infeasible:
            continue
        if search.incumbent is not None and search.incumbent_value > best_value:
            best, best_value = _better(graph, limits, lift_assignment(graph, sub_graph, search.incumbent, kept, fixed),
                                       best, best_value)
        if search.bound < best_value:
            continue
        sub_keep = states_to_keep(sub_graph, search.best_lambdas, limits, search.incumbent, best_value)
        passes += 1
        branches.append((search.bound, int(c), _lift_masks(spec, branch, sub, sub_keep, kept, fixed)))
    open_branches = [b for b in branches if b[0] >= best_value]
    new_keep = [np.zeros_like(m) for m in keep]
    for _, _, masks in open_branches:
        for union, mask in zip(new_keep, masks):
            union |= mask
    for var, state in enumerate(best):
        new_keep[var][state] = True
    bound = max([best_value] + [b[0] for b in open_branches])
    return Probed(new_keep, best, best_value, bound, {
        "variable": graph.variables[v], "states": int(keep[v].sum()), "searched": searched,
        "open": len(open_branches), "passes": passes})


def _better(graph: SpecGraph, limits: Mapping[str, float], x: np.ndarray, best: np.ndarray, best_value: float
            ) -> tuple[np.ndarray, float]:
    """`x` and its value when the core's evaluation on the whole spec confirms it feasible and better than
    `best` (a branch's sums are merged tables, which may round differently), else `best` unchanged."""
    ev = evaluate(graph.spec, *graph.configuration(x))
    if ev.value > best_value and all(ev.costs[r] <= limit for r, limit in limits.items()):
        return x, ev.value
    return best, best_value


def _lift_masks(spec: Spec, branch: list[np.ndarray], sub: Spec, sub_keep: list[np.ndarray],
                kept: Mapping[str, tuple[int, ...]], fixed: Mapping[str, bool]) -> list[np.ndarray]:
    """A branch's kept states as masks over the whole spec's states. A dim the branch's terms no longer name
    (pinned by `reduce_spec`) keeps the branch's whole mask: any of its choices is as good as another."""
    sub_dim = {name: i for i, name in enumerate(sub.dim_names)}
    sub_block = {name: len(sub.dims) + j for j, name in enumerate(sub.block_names)}
    masks = []
    for i, d in enumerate(spec.dims):
        if len(kept[d.name]) == 1 and branch[i].sum() > 1:
            masks.append(branch[i].copy())          # pinned: unnamed by the branch's terms
            continue
        mask = np.zeros(d.size, dtype=bool)
        mask[np.asarray(kept[d.name])[sub_keep[sub_dim[d.name]]]] = True
        masks.append(mask)
    for j, b in enumerate(spec.block_names):
        mask = np.zeros(2, dtype=bool)
        if b in fixed:
            mask[int(fixed[b])] = True
        else:
            mask[:] = sub_keep[sub_block[b]]
        masks.append(mask)
    return masks
