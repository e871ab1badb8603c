"""Probing: the presolve splits a loosely bounded spec on its most shared variable (`presolve.probing`)."""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
from hypothesis import given, settings

import mdp_opt
import mdp_opt.presolve as presolve_module
from mdp_opt import Dim, Spec, Term
from mdp_opt.budgets import limits
from mdp_opt.factor_graph import SpecGraph
from mdp_opt.presolve import presolve, probing
from strategies import problems
from test_presolve import brute_force, check_problem, close


@contextlib.contextmanager
def no_probing():
    with mock.patch.object(presolve_module, "PROBE_MIN_CHOICES", 10**9), \
            mock.patch.object(presolve_module, "PROBE_MIN_GAP", float("inf")):
        yield


@contextlib.contextmanager
def forced_probing():
    """Probe after every fixing, however few choices it leaves."""
    with mock.patch.object(presolve_module, "PROBE_MIN_CHOICES", 0):
        yield


@settings(max_examples=120, deadline=None)
@given(problems(max_configurations=3000))
def test_a_probed_presolve_keeps_every_optimal_configuration(problem):
    spec, budget = problem
    budgets = mdp_opt.resolve_budgets(spec, budget)
    with forced_probing():
        pre = presolve(spec, limits(budgets))
    check_problem(spec, budgets, pre)


@settings(max_examples=60, deadline=None)
@given(problems(max_configurations=3000))
def test_solving_with_probing_gives_the_brute_force_optimum(problem):
    spec, budget = problem
    budgets = mdp_opt.resolve_budgets(spec, budget)
    reference = brute_force(spec, limits(budgets))
    with forced_probing():
        result = mdp_opt.solve(spec, budgets, backend="dp")
    assert result.status is reference.status
    if reference.status.has_solution:
        assert close(result.objective, reference.objective)


def test_the_branching_variable_is_where_the_two_sides_of_the_limit_differ_and_most_terms_meet():
    dims = (Dim("shared", (1, 2, 3)), Dim("leaf", (1, 2)), Dim("other", (1, 2, 3)))
    ones = np.ones((3, 2))
    spec = Spec(dims=dims, objective=(Term(("shared", "leaf"), ones), Term(("shared", "other"), np.ones((3, 3))),
                                      Term(("leaf",), np.ones(2))),
                costs={"latency": (Term(("shared", "leaf"), ones),)})
    graph = SpecGraph(spec)
    keep = [np.ones(s, dtype=bool) for s in graph.sizes]
    assert graph.variables[probing.branching_variable(graph, keep)] == "shared"   # 3 terms, as leaf, but more choices
    assert graph.variables[probing.branching_variable(graph, keep, np.array([False, True, True]))] == "leaf"
    keep[1][1] = False                                                                  # leaf decided
    assert graph.variables[probing.branching_variable(graph, keep, np.array([False, True, True]))] == "other"
    assert probing.branching_variable(graph, keep, np.array([False, True, False])) is None


def test_probing_closes_a_duality_gap_the_fixing_leaves_open():
    # a ResNet of 86 blocks at 2.57% of its latency: the Lagrangian bound interpolates between configurations
    # that differ in a stage's residual width and in many blocks, so the fixing alone keeps most of the spec
    # (and no backend proved it within minutes)
    spec = mdp_opt.examples.make("resnet50", blocks=(3, 8, 72, 3), choices=64)
    budgets = mdp_opt.resolve_budgets(spec, "2.57%")
    with no_probing():
        unprobed = presolve(spec, limits(budgets))
    probed = presolve(spec, limits(budgets))
    assert "probing" not in unprobed.stats and probed.stats["probing"]["variable"] == "layer3.res"
    assert unprobed.stats["choices_kept"] > 5_000 and probed.stats["choices_kept"] < 1_000
    assert probed.bound <= unprobed.bound and probed.incumbent[2] > unprobed.incumbent[2]
    result = mdp_opt.solve(spec, budgets, backend="dp", time_limit=120)
    assert result.status is mdp_opt.Status.OPTIMAL
    assert probed.incumbent[2] <= result.objective <= probed.bound


def test_a_large_gap_triggers_probing_on_a_small_spec_and_the_optimum_is_the_same():
    # the hard family's seed 17 (ViT-B, two resources): 736 choices, but a gap over PROBE_MIN_GAP after the fixing
    # (seed 7's 4.4% was the coordinate search's; at the dual's minimum it is 0.03%)
    spec = mdp_opt.examples.make("hard", seed=17)
    probed = mdp_opt.solve(spec, backend="cpsat", threads=2, time_limit=120)
    with no_probing():
        plain = mdp_opt.solve(spec, backend="cpsat", threads=2, time_limit=120)
    assert probed.stats["presolve"]["choices_total"] < probing.PROBE_MIN_CHOICES
    assert probed.stats["presolve"]["probing"]["variable"] == "block0.heads" and "probing" not in plain.stats["presolve"]
    assert probed.status is plain.status is mdp_opt.Status.OPTIMAL
    assert close(probed.objective, plain.objective)
