"""The smaller graph of a range of multipliers (`presolve.interval`): its passes are the whole graph's maximisers at
every multiplier of the range, and its state bounds bound the whole graph's max-marginals from above, exactly for
the states it keeps. Checked against the whole graph's own passes on random specs, including blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Block, Dim, Spec, Term
from mdp_opt.factor_graph import SpecGraph
from mdp_opt.frontier import coarse_first
from mdp_opt.presolve import SharedPresolve
from mdp_opt.presolve.interval import Endpoint, IntervalGraph

from strategies import specs


def endpoint(graph: SpecGraph, resource: str, lam: float) -> Endpoint:
    mm = graph.max_marginals({resource: lam})
    value, costs = graph.evaluate(mm.assignment)
    return Endpoint(lam, tuple(mm.marginals), mm.assignment, value, costs[resource])


def lagrangian(graph: SpecGraph, x: np.ndarray, resource: str, lam: float) -> float:
    value, costs = graph.evaluate(x)
    return value - lam * costs[resource]


@settings(max_examples=80, deadline=None)
@given(specs(max_resources=1, max_dims=4, max_choices=4), st.floats(0.0, 3.0), st.floats(0.01, 3.0),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
def test_passes_and_bounds_of_the_smaller_graph_are_the_whole_graphs(spec, low, width, where):
    (resource,) = spec.costs
    graph = SpecGraph(spec)
    scale = max(1.0, abs(spec.full_cost(resource)))
    lo, hi = low / scale, (low + width) / scale
    interval = IntervalGraph(graph, resource, endpoint(graph, resource, lo), endpoint(graph, resource, hi))
    tol = 1e-9 * max(1.0, max(float(np.abs(t.table).sum()) for _, _, t in spec.terms()))
    for w in where:
        lam = min(hi, lo + w * (hi - lo))
        assert interval.covers(lam)
        best, _ = graph.max_sum({resource: lam})
        value, x = interval.max_sum(lam)
        assert value == pytest.approx(best, abs=tol)
        assert lagrangian(graph, x, resource, lam) == pytest.approx(best, abs=tol)   # a real maximiser, lifted
        exact = graph.max_marginals({resource: lam}).marginals
        bounds, dropped = interval.bounds(lam)
        for v, (bound, truth, keep) in enumerate(zip(bounds, exact, interval.keep)):
            assert np.all(bound >= truth - tol), (v, bound, truth)
            assert np.all(truth[~keep] < best - tol)          # a dropped state is in no maximiser
            tight = keep & (truth >= dropped + tol)
            assert bound[tight] == pytest.approx(truth[tight], abs=tol)


def test_a_kept_state_is_bounded_by_the_dropped_states_configurations_too():
    # the block off is worth less than the best configuration at every multiplier of the range, so it is dropped;
    # d0's second choice is kept (with the block on it is the best at 0), and at the range's top its best
    # configuration is the dropped one (block off, worth 0; on, it costs more than the block's value repays)
    spec = Spec(dims=(Dim("d0", (1, 2)),), blocks=(Block("b0"),),
                objective=(Term((), np.array(1.55748644), "b0"),),
                costs={"latency": (Term(("d0",), np.array([0.80947652, 3.81943788]), "b0"),)})
    graph = SpecGraph(spec)
    scale = spec.full_cost("latency")
    interval = IntervalGraph(graph, "latency", endpoint(graph, "latency", 0.0), endpoint(graph, "latency", 2 / scale))
    assert not interval.keep[-1][0] and interval.keep[0].all()
    for lam in np.linspace(0.0, 2 / scale, 5):
        exact = graph.max_marginals({"latency": lam}).marginals
        bounds, _ = interval.bounds(lam)
        for bound, truth in zip(bounds, exact):
            assert np.all(bound >= truth - 1e-12)


def test_an_empty_range_is_refused():
    spec = mdp_opt.examples.make("mdp-rn50-step10")
    graph = SpecGraph(spec)
    end = endpoint(graph, "latency", 0.5)
    with pytest.raises(ValueError, match="low.lam < high.lam"):
        IntervalGraph(graph, "latency", end, end)


def test_a_shared_presolve_runs_the_budgets_between_two_fixings_on_their_smaller_graph():
    spec = mdp_opt.examples.make("resnet152", choices=32)
    full = spec.full_cost("latency")
    shared = SharedPresolve(spec)
    budgets = [f * full for f in (0.3, 0.6, 0.4, 0.5)]      # two fixings first, then two budgets between them
    results = [mdp_opt.solve(spec, {"latency": b}, backend="dp", presolve=shared) for b in budgets]
    alone = [mdp_opt.solve(spec, {"latency": b}, backend="dp") for b in budgets]
    assert [r.objective for r in results] == [r.objective for r in alone]
    assert all(r.status is mdp_opt.Status.OPTIMAL for r in results)
    assert shared.stats["interval_graphs"] >= 1 and shared.stats["interval_passes"] > 0
    assert shared.stats["interval_fixings"] >= 1


def test_a_frontier_solves_every_tenth_budget_first():
    assert coarse_first(25, 10) == [0, 10, 20, 24] + [i for i in range(25) if i not in (0, 10, 20, 24)]
    assert coarse_first(1, 10) == [0] and coarse_first(0, 10) == []
    assert sorted(coarse_first(100)) == list(range(100))
