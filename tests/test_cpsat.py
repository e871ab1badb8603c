"""The cpsat backend's own behaviour: integer scaling through the core's rounding reduction."""

from __future__ import annotations

import pytest

import mdp_opt
from mdp_opt import Dim, Spec, SpecError, Status, Term, get_backend, solve

pytestmark = pytest.mark.skipif(not get_backend("cpsat").installed, reason="OR-Tools is not installed")


def one_dim_spec(values, costs) -> Spec:
    return Spec(dims=(Dim("a", tuple(range(1, len(values) + 1))),), objective=(Term(("a",), values),),
                costs={"latency": (Term(("a",), costs),)})


def test_cpsat_decimal_data_is_scaled_exactly():
    spec = one_dim_spec([0.25, 0.5, 0.7], [0.1, 0.2, 0.35])
    result = solve(spec, budget=0.2, backend="cpsat", presolve=False)
    assert result.status is Status.OPTIMAL and result.kept == {"a": 2}
    assert result.stats["cost_scales"] == {"latency": 100.0} and result.stats["costs_exact"] == {"latency": True}
    assert result.stats["objective_scale"] == 100.0 and result.stats["objective_exact"]


def test_cpsat_inexact_data_is_proven_through_the_relaxation():
    spec = one_dim_spec([1 / 3, 2 / 3, 1.0], [1 / 7, 2 / 7, 3 / 7])
    result = solve(spec, budget=2 / 7, backend="cpsat", presolve=False)
    assert result.stats["costs_exact"] == {"latency": False} and not result.stats["objective_exact"]
    assert result.stats["rounding"]["direction"] == "down"      # proven by the rounded-down relaxation alone
    assert result.status is Status.OPTIMAL and result.kept == {"a": 2}


def test_cpsat_coarse_resolution_reports_the_gap_it_cannot_close():
    # choice 2 costs 1.6 > 1.5; at resolution 1 the rounded-down relaxation admits it, so the
    # optimum (choice 1) cannot be proven: feasible, with the relaxation's bound.
    spec = one_dim_spec([1.0, 2.0], [0.4, 1.6])
    result = solve(spec, budget=1.5, backend="cpsat", presolve=False, resolution=1.0)
    assert result.status is Status.FEASIBLE and result.kept == {"a": 1}
    assert result.bound == pytest.approx(2.0)
    assert result.stats["resolution"] == {"latency": 1.0}


def test_cpsat_rounding_up_does_not_lose_the_optimum():
    # at resolution 1 choice 2 (cost 1.2) rounds up to 2 > 1.5, but the relaxation finds it truly feasible
    spec = one_dim_spec([1.0, 2.0], [0.4, 1.2])
    result = solve(spec, budget=1.5, backend="cpsat", presolve=False, resolution=1.0)
    assert result.status is Status.OPTIMAL and result.kept == {"a": 2}


def test_cpsat_bad_resolution_is_an_error():
    spec = one_dim_spec([1.0, 2.0], [0.4, 1.2])
    for bad in (0.0, -1.0, {"params": 1.0}, "fine"):
        with pytest.raises(SpecError, match="resolution"):
            solve(spec, budget=1.5, backend="cpsat", presolve=False, resolution=bad)


@pytest.mark.parametrize("huge", [1e30, -1e30])
def test_a_budget_beyond_cp_sats_integers_is_clamped_not_a_crash(huge):
    """A cap of 1e30 (a user's "no limit") scaled to CP-SAT's integers overflowed its int64 bounds (a TypeError
    from OR-Tools); clamped, it is the same answer as HiGHS's: all kept within the other limit, or infeasible."""
    spec = mdp_opt.examples.make("chain", depth=4, choices=5, params=True)
    budget = {"latency": "50%", "params": huge}
    ours = mdp_opt.solve(spec, budget, backend="cpsat", presolve=False)
    theirs = mdp_opt.solve(spec, budget, backend="milp", presolve=False)
    assert ours.status is theirs.status
    assert ours.status is (mdp_opt.Status.OPTIMAL if huge > 0 else mdp_opt.Status.INFEASIBLE)
    if huge > 0:
        assert abs(ours.objective - theirs.objective) <= 1e-9 * max(1.0, abs(theirs.objective))
