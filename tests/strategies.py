"""Hypothesis strategies for small random specs with every feature, small enough for brute force.

`specs()` draws dims with 1-4 choices, 0-2 blocks, objective and cost terms of arity 0-3 (some gated by a
block), 1-2 resources, negative objective entries; `problems()` adds budgets, from infeasible to loose,
as absolute numbers, percentage strings or None (the spec's own).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from mdp_opt import Dim, Spec, Term
from mdp_opt.evaluate import count_configurations


@st.composite
def specs(draw, max_dims: int = 4, max_choices: int = 4, max_blocks: int = 2, max_resources: int = 2,
          integer: bool | None = None, max_configurations: int = 20_000) -> Spec:
    """A valid random spec whose configuration count stays brute-forceable."""
    n_dims = draw(st.integers(1, max_dims))
    dims = []
    for i in range(n_dims):
        size = draw(st.integers(1, max_choices))
        start = draw(st.integers(1, 4))
        steps = draw(st.lists(st.integers(1, 8), min_size=size - 1, max_size=size - 1))
        choices = [start]
        for s in steps:
            choices.append(choices[-1] + s)
        dims.append(Dim(f"d{i}", tuple(choices)))
    blocks = [f"b{j}" for j in range(draw(st.integers(0, max_blocks)))]
    integer = draw(st.booleans()) if integer is None else integer
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    sizes = {d.name: d.size for d in dims}
    names = list(sizes)

    def table(scope: tuple[str, ...], low: float, high: float) -> np.ndarray:
        shape = tuple(sizes[n] for n in scope)
        values = rng.uniform(low, high, size=shape)
        if integer:
            values = np.round(values)
        # importance/latency grow with width along each axis, as in real specs (not required by the format)
        for axis in range(len(shape)):
            values = np.sort(values, axis=axis)
        return values

    def terms(low: float, high: float, min_terms: int) -> list[Term]:
        out = []
        for _ in range(draw(st.integers(min_terms, n_dims + 2))):
            arity = draw(st.integers(0, min(3, n_dims)))
            scope = tuple(draw(st.permutations(names))[:arity])
            block = draw(st.sampled_from([None] + blocks)) if blocks else None
            out.append(Term(scope, table(scope, low, high), block))
        return out

    objective = terms(-2.0, 10.0, 1)
    n_resources = draw(st.integers(1, max_resources))
    costs = {r: terms(0.0, 10.0, 1) for r in ["latency", "params"][:n_resources]}
    spec = Spec(dims=tuple(dims), objective=tuple(objective), costs=costs, blocks=tuple(blocks), name=f"random-{seed}")
    if count_configurations(spec) > max_configurations:
        # shrink to fixed dims rather than reject, so generation never stalls
        dims = [Dim(d.name, d.choices[:1]) if i else d for i, d in enumerate(dims)]
        keep = {d.name: d.size for d in dims}

        def cut(t: Term) -> Term:
            return Term(t.dims, t.table[tuple(slice(0, keep[n]) for n in t.dims)], t.block)
        spec = Spec(dims=tuple(dims), objective=tuple(cut(t) for t in objective),
                    costs={r: tuple(cut(t) for t in ts) for r, ts in costs.items()}, blocks=tuple(blocks),
                    name=spec.name)
    return spec


@st.composite
def budgets_for(draw, spec: Spec):
    """A budget argument for solve(): per resource a fraction of the full cost (0-110%, so some infeasible),
    written as a number or a percentage string, or None."""
    if draw(st.integers(0, 9)) == 0:
        return None
    full = spec.full_costs()
    out = {}
    for r in draw(st.lists(st.sampled_from(sorted(spec.costs)), min_size=1, unique=True)):
        fraction = draw(st.sampled_from([0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.1]))
        if draw(st.booleans()):
            out[r] = f"{100 * fraction:g}%"
        else:
            value = fraction * full[r]
            out[r] = math.floor(value) if draw(st.booleans()) else value
    return out


@st.composite
def problems(draw, **spec_kwargs):
    """(spec, budget) pairs."""
    spec = draw(specs(**spec_kwargs))
    return spec, draw(budgets_for(spec))


@st.composite
def gapped_problems(draw):
    """(spec, budget) pairs of up to 8 dims at 30-75% of every resource's full cost: about one in six leaves the
    presolve a duality gap (status "reduced"), where most `problems()` are decided by the presolve alone."""
    spec = draw(specs(max_dims=8, max_choices=3, max_blocks=2, max_configurations=6000))
    full = spec.full_costs()
    return spec, {r: draw(st.sampled_from([0.3, 0.45, 0.6, 0.75])) * full[r] for r in spec.costs}
