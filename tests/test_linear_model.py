"""The marginal (RLT) linearisation that the cpsat, milp and mindtpy (marginal) backends share."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Dim, Spec, Term
from mdp_opt.budgets import limits
from mdp_opt.evaluate import evaluate
from mdp_opt.linear_model import COMPONENT_CONFIGURATIONS, LinearModel, build
from reference import hull_optimum
from strategies import specs

linprog = pytest.importorskip("scipy.optimize").linprog
MARGINAL_ONLY = 0          # `component_configurations` that gives no component its configuration family


def relaxation(model: LinearModel, caps: dict[str, float]) -> float | None:
    """The LP relaxation's optimum (every variable in [0, 1]); None when it is infeasible."""
    equal = [(i, c, lo) for i, c, lo, up in model.rows() if lo == up]
    upper = [(i, c, up) for i, c, lo, up in model.rows() if lo != up and np.isfinite(up)]
    upper += [(i, -c, -lo) for i, c, lo, up in model.rows() if lo != up and np.isfinite(lo)]

    def dense(rows):
        a = np.zeros((len(rows), model.num_vars))
        for k, (index, coef, _) in enumerate(rows):
            a[k, index] = coef
        return a, [bound for _, _, bound in rows]

    a_eq, b_eq = dense(equal)
    a_ub, b_ub = dense(upper)
    for r, cap in caps.items():
        a_ub = np.vstack([a_ub, model.costs[r].coef])
        b_ub = b_ub + [cap - model.costs[r].constant]
    result = linprog(-model.objective.coef, A_ub=a_ub if len(b_ub) else None, b_ub=b_ub or None,
                     A_eq=a_eq if len(b_eq) else None, b_eq=b_eq or None, bounds=(0, 1), method="highs")
    return None if result.status == 2 else -result.fun + model.objective.constant


@settings(max_examples=60, deadline=None)
@given(spec=specs(), data=st.data())
@pytest.mark.parametrize("components", [MARGINAL_ONLY, COMPONENT_CONFIGURATIONS])
def test_linear_model_is_exact_on_every_configuration(components, spec, data):
    """The 0/1 point of any configuration satisfies every row, and objective and costs match `evaluate`,
    with and without the components' configuration families."""
    choice = {d.name: data.draw(st.integers(0, d.size - 1)) for d in spec.dims}
    active = {b: data.draw(st.booleans()) for b in spec.block_names}
    model = build(spec, {r: 0.0 for r in spec.costs}, component_configurations=components)
    x = model.values(choice, active)
    for index, coef, lower, upper in model.rows():
        assert lower - 1e-12 <= coef @ x[index] <= upper + 1e-12
    ev = evaluate(spec, choice, active)
    assert model.objective.value(x) == pytest.approx(ev.value, rel=1e-12, abs=1e-12)
    for r, cost in model.costs.items():
        assert cost.value(x) == pytest.approx(ev.costs[r], rel=1e-12, abs=1e-12)
    assert model.decode(x) == (choice, active)
    for family in model.families:
        assert x[family.index].sum() <= 1


@settings(max_examples=80, deadline=None)
@given(spec=specs(), share=st.sampled_from([0.2, 0.5, 0.8]))
def test_the_relaxation_of_small_components_is_their_convex_hull(spec, share):
    """Every component of these specs has at most 4**4 * 2**2 = 1,024 configurations, so with no growth limit
    each gets its configuration family and the LP relaxation is the LP over the convex hull of all
    configurations; the marginal families alone are a relaxation too, never below it."""
    caps = limits(mdp_opt.resolve_budgets(spec, {r: f"{share:.0%}" for r in spec.costs}))
    hull = hull_optimum(spec, caps)
    with_components = relaxation(build(spec, caps, component_growth=math.inf), caps)
    marginal = relaxation(build(spec, caps, component_configurations=MARGINAL_ONLY), caps)
    if hull is None:
        assert with_components is None
        return
    scale = max(1.0, abs(hull))
    assert with_components == pytest.approx(hull, rel=1e-7, abs=1e-7 * scale)
    assert marginal is not None and marginal >= hull - 1e-7 * scale


def test_a_frustrated_cycle_is_tight_only_with_the_configuration_family():
    """Three binary dims that each pair rewards for differing: at most two pairs can differ, but the marginal
    relaxation sets every pair half (0, 1) and half (1, 0) and claims all three."""
    differ = [[0.0, 1.0], [1.0, 0.0]]
    spec = Spec(dims=[Dim(n, (1, 2)) for n in "abc"],
                objective=[Term(pair, differ) for pair in [("a", "b"), ("b", "c"), ("a", "c")]],
                costs={"latency": [Term((n,), [1.0, 2.0]) for n in "abc"]})
    caps = {"latency": 6.0}
    assert relaxation(build(spec, caps, component_configurations=MARGINAL_ONLY), caps) == pytest.approx(3.0)
    model = build(spec, caps)
    assert [f.kind for f in model.families] == ["c"] and model.families[0].index.shape == (2, 2, 2)
    assert relaxation(model, caps) == pytest.approx(2.0)
    assert mdp_opt.solve(spec, caps, backend="cpsat", presolve=False).objective == 2.0


def test_components_over_the_limits_keep_the_marginal_families():
    pair = Spec(dims=[Dim("a", tuple(range(1, 41))), Dim("b", tuple(range(1, 41)))],
                objective=[Term(("a", "b"), np.ones((40, 40)))], costs={"latency": [Term(("a",), np.arange(40.0))]})
    kinds = {f.kind for f in build(pair, {"latency": 10.0}).families}
    assert "c" not in kinds and {"z", "w"} <= kinds              # 1,600 configurations: over the size limit
    assert "c" in {f.kind for f in build(pair, {"latency": 10.0}, component_configurations=1600).families}
    # a star of three dims of 10 choices: 1,000 configurations against 30 + 2 * 100 marginal variables
    star = Spec(dims=[Dim(n, tuple(range(1, 11))) for n in "hqv"],
                objective=[Term(("h", "q"), np.ones((10, 10))), Term(("h", "v"), np.ones((10, 10)))],
                costs={"latency": [Term(("h",), np.arange(10.0))]})
    assert "c" not in {f.kind for f in build(star, {"latency": 5.0}).families}     # over 4x: the growth limit
    assert "c" in {f.kind for f in build(star, {"latency": 5.0}, component_growth=5).families}
