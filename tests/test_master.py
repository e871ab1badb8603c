"""The cutting-plane master (`presolve.master`) and the multi-resource Lagrangian search built on it: the master
is the exact minimum of the planes' envelope, and the search reaches the dual's minimum, which for these specs is
the linear programme over the convex hull of all configurations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt.budgets import limits
from mdp_opt.factor_graph import SpecGraph
from mdp_opt.presolve import presolve
from mdp_opt.presolve.dual import LagrangianSearch
from mdp_opt.presolve.master import envelope_minimum
from reference import hull_optimum
from strategies import specs

linprog = pytest.importorskip("scipy.optimize").linprog


@st.composite
def planes(draw):
    k, r = draw(st.integers(1, 40)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    values = rng.normal(size=k) * 10.0 ** draw(st.integers(0, 6))
    excess = rng.normal(size=(k, r)) * 10.0 ** rng.integers(-3, 3, size=r)
    if draw(st.booleans()):                     # integral data: ties and degenerate vertices
        values, excess = np.round(values), np.round(excess)
    upper = 10.0 ** draw(st.integers(0, 4)) * (1 + rng.random(r))
    return values, excess, upper


@settings(max_examples=300, deadline=None)
@given(planes())
def test_the_master_finds_the_lowest_point_of_the_envelope(data):
    values, excess, upper = data
    lambdas, model = envelope_minimum(values, excess, upper)
    k, r = excess.shape
    reference = linprog(np.r_[np.zeros(r), 1.0], A_ub=np.hstack([-excess, -np.ones((k, 1))]), b_ub=-values,
                        bounds=[(0, u) for u in upper] + [(None, None)], method="highs")
    assert reference.status == 0
    scale = max(1.0, abs(reference.fun))
    assert abs(model - reference.fun) <= 1e-8 * scale
    assert np.all(lambdas >= 0) and np.all(lambdas <= upper)
    assert abs(np.max(values - excess @ lambdas) - model) <= 1e-8 * scale   # the model is attained at lambdas


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(specs(max_resources=2, max_configurations=2000), st.sampled_from([0.3, 0.5, 0.7]),
       st.sampled_from([0.3, 0.5, 0.7]))
def test_with_two_resources_the_search_reaches_the_duals_minimum(spec, share_latency, share_params):
    """Compared with the hull's linear programme, solved by HiGHS to its own tolerance (about 1e-7: one block
    worth 5.6435402479 whose costs allow 0.3 of it has the optimum 1.69306207436, the LP gave 1.69306208813), so
    the comparison allows 1e-7 either way."""
    assume(len(spec.costs) == 2)
    full = spec.full_costs()
    caps = limits(mdp_opt.resolve_budgets(spec, {"latency": share_latency * full["latency"],
                                                  "params": share_params * full["params"]}))
    hull = hull_optimum(spec, caps)
    assume(hull is not None)
    graph = SpecGraph(spec)
    search = LagrangianSearch(graph, spec, caps, polish=False)
    assume(not search.run())
    scale = max(1.0, abs(hull))
    assert search.bound >= hull - 1e-7 * scale                  # a bound: never below the LP
    if search.incumbent is not None:
        assert search.incumbent_value <= search.bound + 1e-9 * scale
    if not search.closed():                                     # stopped at the dual's minimum, not before
        assert search.bound <= hull + 1e-7 * scale


def test_the_hard_seed_7_bound_is_the_duals_minimum():
    """The hard family's seed 7 (ViT-B, three resources): coordinate line searches stopped 4.4% above the
    incumbent, the cutting planes reach the dual's minimum, 0.03% above it."""
    spec = mdp_opt.examples.make("hard", seed=7)
    pre = presolve(spec, limits(mdp_opt.resolve_budgets(spec, None)))
    assert pre.bound - pre.incumbent[2] <= 1e-3 * pre.bound
    assert pre.stats["passes"] <= 60
