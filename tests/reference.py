"""The one comparison with the reference: a backend's result against brute force on the same problem."""

from __future__ import annotations

import itertools
from typing import Iterator, Mapping

import numpy as np

from mdp_opt import Evaluation, Feature, Result, Spec, Status, backends_with, evaluate, solve
from mdp_opt.result import OPTIMALITY_GAP, relative_gap

REFERENCE = backends_with(Feature.REFERENCE)[0]
EXACT = backends_with(Feature.EXACT, without=[Feature.REFERENCE])
HEURISTIC = backends_with(without=[Feature.EXACT, Feature.REFERENCE])


def reference(spec, budget) -> Result:
    return solve(spec, budget, backend=REFERENCE)


def every_configuration(spec: Spec, budgets: Mapping[str, float] | None = None
                        ) -> Iterator[tuple[dict[str, int], dict[str, bool], Evaluation]]:
    """Every configuration of `spec` (choice, active) with the core's evaluation of it under `budgets`: the
    independent referee's walk, for specs small enough for brute force."""
    for idx in itertools.product(*[range(d.size) for d in spec.dims]):
        for states in itertools.product([False, True], repeat=len(spec.blocks)):
            choice, active = dict(zip(spec.dim_names, idx)), dict(zip(spec.block_names, states))
            yield choice, active, evaluate(spec, choice, active, budgets)


def hull_optimum(spec: Spec, caps: Mapping[str, float]) -> float | None:
    """max over convex combinations of all configurations within the limits `caps` (None when there is none):
    the Lagrangian dual's minimum, by LP duality, and the best any linear relaxation can be."""
    from scipy.optimize import linprog

    evaluations = [ev for _, _, ev in every_configuration(spec)]
    values = [ev.value for ev in evaluations]
    costs = np.array([[ev.costs[r] for r in caps] for ev in evaluations])
    result = linprog(-np.array(values), A_ub=costs.T, b_ub=list(caps.values()), A_eq=np.ones((1, len(values))),
                     b_eq=[1.0], bounds=(0, None), method="highs")
    return None if result.status == 2 else -result.fun


# An exact backend that counts in integers (CP-SAT) rounds a float objective to a finest unit, so on float data
# whose terms nearly cancel its proof can stop a hair short of 1e-9 relative: it then says `feasible` with its
# (tiny) gap, never a false `optimal`. The reference's optimum must still be its answer and within its bound.
# The gap is absolute (a unit per rounded term), so near an objective of 0 it is measured against 1, not against
# the objective (hypothesis found an objective of 0.024 left 2.5e-10 short: 1.07e-8 relative).
NEAR_PROOF_GAP = 1e-8


def assert_matches_reference(got: Result, expected: Result) -> None:
    """An exact backend's result has the reference's status, and its objective when optimal."""
    near_proof = (got.status is Status.FEASIBLE and expected.status is Status.OPTIMAL
                  and got.bound is not None and got.objective is not None
                  and got.bound - got.objective <= NEAR_PROOF_GAP * max(1.0, abs(got.objective)))
    assert got.status == expected.status or near_proof, (got, expected)
    if expected.status is Status.OPTIMAL:
        assert relative_gap(max(got.objective, expected.objective), min(got.objective, expected.objective)) \
            <= OPTIMALITY_GAP, (got.objective, expected.objective)
        slack = 1e-12 * max(1.0, abs(expected.objective))
        assert got.bound is None or got.bound >= expected.objective - slack, (got, expected)


def assert_never_above_reference(got: Result, expected: Result) -> None:
    """A heuristic's answer is verified (by solve) and never better than the proven optimum."""
    assert got.status in (Status.FEASIBLE, Status.OPTIMAL, Status.INFEASIBLE, Status.TIME_LIMIT_NO_SOLUTION,
                          Status.ERROR), got
    if got.has_solution:
        assert expected.status is Status.OPTIMAL
        assert got.objective <= expected.objective + 1e-9 * max(1.0, abs(expected.objective)), (
            got.objective, expected.objective)
