"""The presolve's warm start: a Lagrangian search on a thinned spec seeds the full one (`presolve.warm`)."""

from __future__ import annotations

import contextlib
import math
from unittest import mock

import numpy as np
from hypothesis import given, settings

import mdp_opt
from mdp_opt import Dim, Spec, Term
from mdp_opt.budgets import limits
from mdp_opt.factor_graph import SpecGraph
from mdp_opt.presolve import presolve, warm
from mdp_opt.presolve.shared import nearest
from strategies import problems
from test_presolve import check_problem


@contextlib.contextmanager
def forced_warm_start():
    """Warm-start every single-resource presolve, thinning every dim of 2 or more choices."""
    with mock.patch.object(warm, "WARM_START_MIN_CHOICES", 0), mock.patch.object(warm, "THIN_MIN_SIZE", 2):
        yield


def test_thinning_keeps_the_first_and_every_fourth_choice_counting_from_the_last_and_the_same_tables():
    rng = np.random.default_rng(0)
    dims = (Dim("a", tuple(range(1, 6))), Dim("b", tuple(range(1, 17))), Dim("c", tuple(range(1, 38))))
    spec = Spec(dims=dims, objective=(Term(("b",), np.sort(rng.random(16))), Term(("c",), np.sort(rng.random(37)))),
                costs={"latency": (Term(("a", "b", "c"), rng.random((5, 16, 37))),)})
    thin, kept = warm.thinned(spec)
    assert kept == {"a": (0, 1, 2, 3, 4), "b": (0, 3, 7, 11, 15), "c": (0, 4, 8, 12, 16, 20, 24, 28, 32, 36)}
    for choice in ({"a": 1, "b": 2, "c": 9}, {"a": 4, "b": 0, "c": 0}):
        lifted = {d: kept[d][k] for d, k in choice.items()}
        a, b = mdp_opt.evaluate(thin, choice), mdp_opt.evaluate(spec, lifted)
        assert a.value == b.value and a.costs == b.costs


@settings(max_examples=80, deadline=None)
@given(problems(max_configurations=3000))
def test_a_warm_started_presolve_keeps_every_optimal_configuration(problem):
    spec, budget = problem
    budgets = mdp_opt.resolve_budgets(spec, budget)
    with forced_warm_start():
        seeds = warm.warm_start(SpecGraph(spec), limits(budgets))
        pre = presolve(spec, limits(budgets))
    graph = SpecGraph(spec)
    for x, value, costs in seeds:  # seeds are configurations of the full spec, with their own value and costs
        assert (value, costs) == graph.evaluate(x)
    check_problem(spec, budgets, pre)


def test_a_large_spec_is_warm_started_with_fewer_passes_and_the_same_answer():
    spec = mdp_opt.examples.make("resnet50", seed=1, choices=128)
    assert sum(d.size for d in spec.dims) >= warm.WARM_START_MIN_CHOICES
    warmed = mdp_opt.solve(spec, "40%", backend="dp")
    with mock.patch.object(warm, "WARM_START_MIN_CHOICES", math.inf):
        cold = mdp_opt.solve(spec, "40%", backend="dp")
    assert warmed.status is cold.status is mdp_opt.Status.OPTIMAL
    assert warmed.objective == cold.objective
    assert warmed.stats["presolve"]["warm_start"]["seeds"] >= 2 and cold.stats["presolve"]["warm_start"]["seeds"] == 0
    assert warmed.stats["presolve"]["passes"] < cold.stats["presolve"]["passes"]


def test_several_limited_resources_are_not_warm_started():
    spec = mdp_opt.examples.make("resnet50", seed=1, choices=128, params=True)
    budgets = mdp_opt.resolve_budgets(spec, {"latency": "50%", "params": "50%"})
    assert warm.warm_start(SpecGraph(spec), limits(budgets)) == []


def test_the_thinned_search_ends_at_the_thinned_specs_best_multiplier():
    """The seeds nearest the limit on either side are adjacent hull points of the thinned spec: their lines meet
    where the thinned dual function is least. A thinned search stopped short (a 1e-4 tolerance did) starts the
    full search farther off: measured on this spec, 5 full passes instead of 1."""
    spec = mdp_opt.examples.make("resnet50", blocks=(3, 8, 72, 3), choices=256)
    (resource, limit), = limits(mdp_opt.resolve_budgets(spec, "50%")).items()
    seeds = warm.warm_start(SpecGraph(spec), {resource: limit})
    within, over = nearest(seeds, resource, limit)
    assert within is not None and over is not None
    (a, va, ca), (b, vb, cb) = within, over
    t = (va - vb) / (ca[resource] - cb[resource])          # where value - t * (cost - limit) of both are equal
    model = va - t * (ca[resource] - limit)
    thin, kept = warm.thinned(spec)
    thin_graph = SpecGraph(thin)
    value, _ = thin_graph.max_sum({resource: t})
    dual = value + t * limit
    assert dual >= model - thin_graph.rounding_margin({resource: t})   # the lines are the thinned spec's own
    assert dual <= model + 1e-10 * abs(model) + thin_graph.rounding_margin({resource: t})
