"""Every installed exact backend against brute force, plus targeted tests of the CP-SAT and HiGHS backends.

Written once and parametrised over `installed_backends()` (minus the heuristic `mindtpy` and the
reference `brute`), so a new exact backend is tested as soon as it is registered.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Dim, Spec, SpecError, Status, Term, solve
from mdp_opt.evaluate import evaluate
from mdp_opt.linear_model import build
from mdp_opt.result import OPTIMALITY_GAP, relative_gap
from strategies import problems, specs

EXACT = [b for b in mdp_opt.installed_backends() if b not in ("mindtpy", "brute")]
SOLVERS = [b for b in ("cpsat", "milp") if b in EXACT]


def assert_same_answer(got, expected) -> None:
    assert got.status == expected.status, (got, expected)
    if expected.status is Status.OPTIMAL:
        assert relative_gap(max(got.objective, expected.objective), min(got.objective, expected.objective)) \
            <= OPTIMALITY_GAP, (got.objective, expected.objective)


# ---- every exact backend equals brute force ------------------------------------------------------

@pytest.mark.parametrize("presolve", [False, True], ids=["own", "presolved"])
@pytest.mark.parametrize("backend", EXACT)
@settings(max_examples=40, deadline=None)
@given(problem=problems())
def test_exact_backend_matches_brute_force(backend, presolve, problem):
    spec, budget = problem
    expected = solve(spec, budget, backend="brute")
    got = solve(spec, budget, backend=backend, presolve=presolve, threads=1) if backend in SOLVERS \
        else solve(spec, budget, backend=backend, presolve=presolve)
    assert_same_answer(got, expected)


def scaled(spec: Spec, budget, objective_factor: float, cost_factor: float):
    """The same problem with objective and costs multiplied by constants (percent budgets unchanged)."""
    spec = spec.replace(
        objective=tuple(Term(t.dims, t.table * objective_factor, t.block) for t in spec.objective),
        costs={r: tuple(Term(t.dims, t.table * cost_factor, t.block) for t in ts) for r, ts in spec.costs.items()})
    if isinstance(budget, dict):
        budget = {r: b if isinstance(b, str) else b * cost_factor for r, b in budget.items()}
    return spec, budget


@pytest.mark.parametrize("backend", SOLVERS)
@settings(max_examples=30, deadline=None)
@given(problem=problems(), objective_factor=st.sampled_from([1e-9, 1e9]), cost_factor=st.sampled_from([1e-5, 1e9]))
def test_solver_is_exact_at_any_data_scale(backend, problem, objective_factor, cost_factor):
    """Solver tolerances are absolute: tiny or huge objectives and costs must not change the answer."""
    spec, budget = scaled(*problem, objective_factor, cost_factor)
    assert_same_answer(solve(spec, budget, backend=backend, presolve=False), solve(spec, budget, backend="brute"))


# ---- the linearisation itself --------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(spec=specs(), data=st.data())
def test_linear_model_is_exact_on_every_configuration(spec, data):
    """The 0/1 point of any configuration satisfies every row, and objective and costs match `evaluate`."""
    choice = {d.name: data.draw(st.integers(0, d.size - 1)) for d in spec.dims}
    active = {b: data.draw(st.booleans()) for b in spec.block_names}
    model = build(spec, {r: 0.0 for r in spec.costs})
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


# ---- targeted tests ------------------------------------------------------------------------------

def chain_spec(n_dims: int, n_choices: int, seed: int = 0, fraction: float = 0.4) -> Spec:
    """A chain of dims with random pairwise costs: hard enough that no solver finishes in milliseconds."""
    rng = np.random.default_rng(seed)
    dims = tuple(Dim(f"d{i}", tuple(range(1, n_choices + 1))) for i in range(n_dims))
    objective = tuple(Term((d.name,), np.sort(rng.uniform(0, 100, n_choices))) for d in dims)
    latency = tuple(Term((a.name, b.name), rng.uniform(0, 10, (n_choices, n_choices)))
                    for a, b in zip(dims, dims[1:]))
    spec = Spec(dims=dims, objective=objective, costs={"latency": latency})
    return spec.replace(budgets={"latency": fraction * spec.full_cost("latency")})


def one_dim_spec(values, costs) -> Spec:
    return Spec(dims=(Dim("a", tuple(range(1, len(values) + 1))),), objective=(Term(("a",), values),),
                costs={"latency": (Term(("a",), costs),)})


@pytest.mark.parametrize("backend", SOLVERS)
@pytest.mark.parametrize("factor", [1e-9, 1e9])
def test_objective_scale_does_not_hide_the_optimum(backend, factor):
    spec = one_dim_spec([1.1 * factor, 1.6 * factor], [1.0, 2.0])
    result = solve(spec, budget=2.0, backend=backend, presolve=False)
    assert result.status is Status.OPTIMAL and result.kept == {"a": 2}


@pytest.mark.parametrize("backend", SOLVERS)
def test_time_limit_stops_early_with_a_bound(backend):
    spec = chain_spec(40, 24)
    result = solve(spec, backend=backend, presolve=False, time_limit=0.05, threads=1)
    assert result.status in (Status.FEASIBLE, Status.TIME_LIMIT_NO_SOLUTION)
    if result.status is Status.FEASIBLE:
        assert result.bound is None or result.bound >= result.objective


@pytest.mark.parametrize("backend", SOLVERS)
def test_infeasible_budget_is_a_status(backend):
    spec = chain_spec(4, 3)
    cheapest = solve(spec, budget=spec.full_cost("latency"), backend="brute")
    assert cheapest.status is Status.OPTIMAL
    result = solve(spec, budget=0.0, backend=backend, presolve=False)
    assert result.status is Status.INFEASIBLE and result.objective is None


@pytest.mark.parametrize("backend", SOLVERS)
def test_constant_cost_above_budget_is_infeasible(backend):
    dims = (Dim("a", (1, 2)),)
    spec = Spec(dims=dims, objective=(Term(("a",), [1.0, 2.0]),),
                costs={"latency": (Term(("a",), [1.0, 2.0]), Term((), 5.0))})
    assert solve(spec, budget=5.5, backend=backend, presolve=False).status is Status.INFEASIBLE
    ok = solve(spec, budget=6.0, backend=backend, presolve=False)
    assert ok.status is Status.OPTIMAL and ok.kept == {"a": 1}


@pytest.mark.parametrize("backend", SOLVERS)
def test_fractional_constant_cost_at_full_budget(backend):
    spec = Spec(dims=(Dim("a", (1,)),), objective=(Term((), 5.6),), costs={"latency": (Term((), 2.69786714),)})
    result = solve(spec, budget="100%", backend=backend, presolve=False)
    assert result.status is Status.OPTIMAL and result.objective == 5.6


@pytest.mark.parametrize("backend", SOLVERS)
def test_spec_without_dims_or_blocks(backend):
    spec = Spec(dims=(), objective=(Term((), 3.0),), costs={"latency": (Term((), 2.0),)})
    assert solve(spec, budget=1.0, backend=backend, presolve=False).status is Status.INFEASIBLE
    result = solve(spec, budget=2.0, backend=backend, presolve=False)
    assert result.status is Status.OPTIMAL and result.objective == 3.0


@pytest.mark.parametrize("backend", SOLVERS)
def test_unknown_options_are_errors(backend):
    spec = chain_spec(3, 2)
    with pytest.raises(SpecError, match="bogus"):
        solve(spec, backend=backend, presolve=False, bogus=1)
    with pytest.raises(SpecError, match="no_such_parameter"):
        solve(spec, backend=backend, presolve=False, parameters={"no_such_parameter": 1})
    with pytest.raises(SpecError, match="threads"):
        solve(spec, backend=backend, presolve=False, threads=0)


@pytest.mark.parametrize("backend", SOLVERS)
def test_verbose_prints_the_solver_log(backend, capfd):
    spec = chain_spec(3, 2)
    full = spec.full_cost("latency")
    quiet = solve(spec, full, backend=backend, presolve=False)
    assert quiet.status is Status.OPTIMAL
    assert capfd.readouterr().out == ""
    verbose = solve(spec, full, backend=backend, presolve=False, verbose=True)
    assert verbose.status is Status.OPTIMAL and capfd.readouterr().out.strip()


# parameters under which the solver's first solution is the one it returns
ONLY_FIRST_SOLUTION = {"cpsat": {"stop_after_first_solution": True, "num_workers": 1},
                       "milp": {"mip_max_nodes": 0, "mip_heuristic_effort": 0.0,
                                "mip_heuristic_run_feasibility_jump": False}}


@pytest.mark.parametrize("backend", SOLVERS)
def test_hint_is_the_first_solution(backend):
    """Told to stop at its first solution, the solver returns the (feasible, poor) configuration it was hinted."""
    spec = chain_spec(6, 4, seed=3, fraction=0.6)
    best = solve(spec, backend="brute")
    poor = solve(spec, budget="40%", backend="brute")      # feasible at the spec's 60%, and worse
    hint = {"choice": poor.choice, "active": {}}
    assert poor.status is Status.OPTIMAL and poor.objective < best.objective
    got = solve(spec, backend=backend, presolve=False, hint=hint, parameters=ONLY_FIRST_SOLUTION[backend])
    assert got.choice == hint["choice"] and got.status is Status.FEASIBLE
    # a Result is a valid hint too
    again = solve(spec, backend=backend, presolve=False, hint=best)
    assert again.status is Status.OPTIMAL and again.objective == pytest.approx(best.objective)


@pytest.mark.parametrize("backend", SOLVERS)
def test_bad_hint_is_an_error(backend):
    spec = chain_spec(3, 2)
    with pytest.raises(SpecError, match="hint"):
        solve(spec, backend=backend, presolve=False, hint={"choice": {"d0": 5, "d1": 0, "d2": 0}})
    with pytest.raises(SpecError, match="hint"):
        solve(spec, backend=backend, presolve=False, hint=[1, 2])
    infeasible = solve(spec, budget=0.0, backend="brute")
    with pytest.raises(SpecError, match="no configuration"):
        solve(spec, backend=backend, presolve=False, hint=infeasible)


# ---- CP-SAT's integer scaling --------------------------------------------------------------------

needs_cpsat = pytest.mark.skipif("cpsat" not in EXACT, reason="ortools not installed")


@needs_cpsat
def test_cpsat_decimal_data_is_scaled_exactly():
    spec = one_dim_spec([0.25, 0.5, 0.7], [0.1, 0.2, 0.35])
    result = solve(spec, budget=0.2, backend="cpsat", presolve=False)
    assert result.status is Status.OPTIMAL and result.kept == {"a": 2}
    assert result.stats["cost_scales"] == {"latency": 100.0} and result.stats["costs_exact"] == {"latency": True}
    assert result.stats["objective_scale"] == 100.0 and result.stats["objective_exact"]


@needs_cpsat
def test_cpsat_inexact_data_is_proven_through_the_relaxation():
    spec = one_dim_spec([1 / 3, 2 / 3, 1.0], [1 / 7, 2 / 7, 3 / 7])
    result = solve(spec, budget=2 / 7, backend="cpsat", presolve=False)
    assert result.stats["costs_exact"] == {"latency": False} and not result.stats["objective_exact"]
    assert "relaxation_solver_status" in result.stats
    assert result.status is Status.OPTIMAL and result.kept == {"a": 2}


@needs_cpsat
def test_cpsat_coarse_resolution_reports_the_gap_it_cannot_close():
    # choice 2 costs 1.6 > 1.5; at resolution 1 the rounded-down relaxation admits it, so the
    # optimum (choice 1) cannot be proven: feasible, with the relaxation's bound.
    spec = one_dim_spec([1.0, 2.0], [0.4, 1.6])
    result = solve(spec, budget=1.5, backend="cpsat", presolve=False, resolution=1.0)
    assert result.status is Status.FEASIBLE and result.kept == {"a": 1}
    assert result.bound == pytest.approx(2.0)
    assert result.stats["resolution"] == {"latency": 1.0}


@needs_cpsat
def test_cpsat_rounding_up_does_not_lose_the_optimum():
    # at resolution 1 choice 2 (cost 1.2) rounds up to 2 > 1.5, but the relaxation finds it truly feasible
    spec = one_dim_spec([1.0, 2.0], [0.4, 1.2])
    result = solve(spec, budget=1.5, backend="cpsat", presolve=False, resolution=1.0)
    assert result.status is Status.OPTIMAL and result.kept == {"a": 2}


@needs_cpsat
def test_cpsat_bad_resolution_is_an_error():
    spec = one_dim_spec([1.0, 2.0], [0.4, 1.2])
    for bad in (0.0, -1.0, {"params": 1.0}, "fine"):
        with pytest.raises(SpecError, match="resolution"):
            solve(spec, budget=1.5, backend="cpsat", presolve=False, resolution=bad)
