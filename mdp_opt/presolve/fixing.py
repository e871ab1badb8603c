"""Reduced-cost fixing: drop every choice no configuration better than the incumbent can use, and slice the spec.

A forward-backward (max-marginal) pass at the best multipliers gives, for every dim choice
and block state, the best Lagrangian value of any configuration using it; that value bounds
every feasible configuration using it. A state whose bound is below the incumbent's value is
never optimal, so it is dropped (a float-rounding margin keeps the doubtful ones).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..factor_graph import SpecGraph
from ..spec import Dim, Spec, Term


def state_bounds(graph: SpecGraph, lambdas: Mapping[str, float], limits: Mapping[str, float]) -> list[np.ndarray]:
    """Per variable and state, an upper bound on the value of every feasible configuration using that state
    (its max-marginal at `lambdas`, plus `bound_offset`)."""
    mm = graph.max_marginals(lambdas)
    offset = bound_offset(graph, lambdas, limits)
    return [marginal + offset for marginal in mm.marginals]


def bound_offset(graph: SpecGraph, lambdas: Mapping[str, float], limits: Mapping[str, float]) -> float:
    """What turns a max-marginal at `lambdas` into a bound on feasible values: the multipliers' share of the limits
    and a float-rounding margin."""
    return sum(lam * limits[r] for r, lam in lambdas.items()) + 2 * graph.rounding_margin(lambdas)


def states_to_keep(graph: SpecGraph, lambdas: Mapping[str, float], limits: Mapping[str, float],
                   incumbent: np.ndarray | None, incumbent_value: float) -> list[np.ndarray]:
    """Per variable, a mask of the states some configuration at least as good as the incumbent may use
    (the incumbent's own states are always kept; `incumbent` may be None when only its value is known)."""
    return keep_masks(state_bounds(graph, lambdas, limits), incumbent, incumbent_value)


def keep_masks(bounds: list[np.ndarray], incumbent: np.ndarray | None, incumbent_value: float) -> list[np.ndarray]:
    """`states_to_keep` from the `state_bounds` already computed."""
    keep = []
    for var, bound in enumerate(bounds):
        mask = bound >= incumbent_value
        if incumbent is not None:
            mask[incumbent[var]] = True
        keep.append(mask)
    return keep


def reduce_spec(spec: Spec, keep: list[np.ndarray], incumbent: np.ndarray
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


def lift_assignment(graph: SpecGraph, sub_graph: SpecGraph, x: np.ndarray, kept: Mapping[str, tuple[int, ...]],
                    fixed: Mapping[str, bool]) -> np.ndarray:
    """An assignment of a reduced spec's graph (`reduce_spec`'s `kept` and `fixed`) as one of the whole spec's."""
    choice, active = sub_graph.configuration(x)
    return graph.assignment({d: kept[d][k] for d, k in choice.items()}, {**active, **fixed})
