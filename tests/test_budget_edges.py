"""Budgets at the edge of the core's tolerance (1e-9 of the budget): every exact backend agrees with brute force.

Regressions: the presolve divided by zero when even the cheapest configuration was over budget by less than its
rounding margin; CP-SAT cut half the tolerance off exact integer costs (wrong `optimal` at FLOP-scale budgets);
HiGHS rows scaled by their largest coefficient let its tolerance exceed the core's (over-budget answers)."""

from __future__ import annotations

import pytest

import mdp_opt
from mdp_opt import Dim, Spec, Term

EXACT = [b for b in ("cpsat", "milp", "dp") if b in mdp_opt.installed_backends()]
BIG = 4e9


def one_dim(values, costs, resource="lat") -> Spec:
    return Spec(dims=(Dim("a", tuple(range(1, len(values) + 1))),), objective=(Term(("a",), values),),
                costs={resource: (Term(("a",), costs),)})


CASES = {
    "cheapest-just-over": (one_dim([1.0, 0.0], [1.0, 1000.0]), {"lat": 1 - 3e-9}),
    "flop-scale-within-tolerance": (one_dim([0.0, 1.0, 5.0], [BIG, BIG + 3, BIG + 100]), {"lat": BIG}),
    "flop-scale-presolve-incumbent": (one_dim([0.99, 1.0, 10.0], [BIG, BIG + 3, BIG + 1000], "flops"), {"flops": BIG}),
    "large-coefficient-row": (one_dim([0.0, 1.0, 5.0], [1.0, 1 + 5e-8, 1000.0]), {"lat": 1.0}),
    "large-coefficient-row-big-budget": (one_dim([0.0, 1.0, 5.0], [BIG, BIG + 5, 1e12]), {"lat": BIG}),
}


@pytest.mark.parametrize("presolve", [True, False], ids=["presolved", "own"])
@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("case", sorted(CASES))
def test_budget_at_the_tolerance_edge_matches_brute_force(case, backend, presolve):
    spec, budget = CASES[case]
    expected = mdp_opt.solve(spec, budget, backend="brute")
    result = mdp_opt.solve(spec, budget, backend=backend, presolve=presolve)
    assert result.status is expected.status
    assert result.objective == expected.objective
