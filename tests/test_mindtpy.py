"""The mindtpy backend (the paper's MindtPy OA) against brute force, its options, failures and setup check."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from hypothesis import given, settings

from mdp_opt import BackendError, Dim, Spec, SpecError, Status, Term, solve
from mdp_opt.backends.mindtpy_setup import run as setup_run
from mdp_opt.backends.mindtpy_setup import stack_problems
from mdp_opt.cli import main
from reference import reference
from strategies import problems

MISSING = stack_problems()
pytestmark = pytest.mark.skipif(bool(MISSING), reason="mindtpy stack absent (" + "; ".join(MISSING)
                                + "); run `mdp-opt setup-mindtpy`")

FORMULATIONS = ["product", "marginal"]


def toy_resnet() -> Spec:
    """A stem, one removable block with a bilayer chain and a 3-way term, negative and constant entries."""
    rng = np.random.default_rng(7)
    dims = (Dim("stem", (8, 16)), Dim("a", (4, 8, 12)), Dim("b", (2, 4, 6, 8)), Dim("c", (16,)))

    def grow(*shape: int) -> np.ndarray:
        table = rng.uniform(0, 5, size=shape)
        for axis in range(len(shape)):
            table = np.sort(table, axis=axis)
        return table

    objective = (Term(("stem",), [0.5, 3.0]), Term(("a",), grow(3) - 1.0, "blk"), Term(("b",), grow(4), "blk"),
                 Term((), 0.25, "blk"), Term(("c",), [1.0]))
    latency = (Term(("stem",), [1.0, 2.0]), Term(("a", "stem"), grow(3, 2), "blk"),
               Term(("b", "a"), grow(4, 3), "blk"), Term(("stem", "a", "b"), grow(2, 3, 4) / 4, "blk"),
               Term((), 0.5))
    return Spec(dims=dims, objective=objective, costs={"latency": latency}, blocks=("blk",), name="toy")


def exact(spec: Spec, budget) -> tuple[Status, float | None]:
    answer = reference(spec, budget)
    return answer.status, answer.objective


def check_against_brute_force(spec: Spec, budget, **options) -> "object":
    """mindtpy's verified answer never beats the optimum, never claims optimal, claims infeasible only
    when it is; returns the result."""
    result = solve(spec, budget, backend="mindtpy", presolve=False, **options)
    best_status, best = exact(spec, budget)
    assert result.status is not Status.OPTIMAL
    if result.status is Status.FEASIBLE:
        assert best_status is Status.OPTIMAL
        assert result.objective <= best + 1e-6 * max(1.0, abs(best))
        assert result.bound is None
    elif result.status is Status.INFEASIBLE:
        assert best_status is Status.INFEASIBLE
    else:
        assert result.status in (Status.ERROR, Status.TIME_LIMIT_NO_SOLUTION)
        assert result.stats["message"]
    return result


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("fraction", ["45%", "60%", "80%", "100%"])
def test_toy_spec_feasible_and_never_above_the_optimum(formulation, fraction):
    result = check_against_brute_force(toy_resnet(), fraction, formulation=formulation)
    assert result.status is Status.FEASIBLE
    assert result.stats["formulation"] == formulation


@settings(max_examples=25, deadline=None)
@given(problem=problems(max_dims=3, max_choices=3))
def test_random_specs_against_brute_force_on_the_linear_formulation(problem):
    """The product (default) formulation is held to brute force by the conformance suite."""
    spec, budget = problem
    check_against_brute_force(spec, budget, formulation="marginal")


def test_real_instance_feasible(instance):
    name, spec, optimum = instance
    if "rn101" in name:
        pytest.skip("ResNet-101 takes MindtPy several seconds; the other three instances cover the real data")
    result = solve(spec, backend="mindtpy", presolve=False, time_limit=120)
    assert result.status is Status.FEASIBLE
    assert result.objective <= optimum


def test_product_form_cannot_prove_infeasibility():
    """Below the cheapest configuration's cost MindtPy finds nothing; on the nonconvex product form that is
    an error with a message (not a crash, not a false 'infeasible'); the linear form proves infeasibility."""
    spec = toy_resnet()
    budget = {"latency": 1.0}  # the ungated stem and constant cost 1.5 at least
    assert exact(spec, budget)[0] is Status.INFEASIBLE
    product = solve(spec, budget, backend="mindtpy", presolve=False)
    assert product.status is Status.ERROR
    assert "not prove" in product.stats["message"] or "without a feasible" in product.stats["message"]
    marginal = solve(spec, budget, backend="mindtpy", presolve=False, formulation="marginal")
    assert marginal.status is Status.INFEASIBLE


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_fixed_costs_over_budget_are_a_proof(formulation):
    """A resource of constants and all-zero tables: no constraint for MindtPy, a direct check instead."""
    spec = Spec(dims=(Dim("a", (1, 2)),), objective=(Term(("a",), [1.0, 2.0]),),
                costs={"latency": (Term((), 3.0), Term(("a",), [0.0, 0.0]))})
    result = solve(spec, {"latency": 2.0}, backend="mindtpy", presolve=False, formulation=formulation)
    assert result.status is Status.INFEASIBLE
    assert "fixed cost" in result.stats["message"]
    result = solve(spec, {"latency": 3.0}, backend="mindtpy", presolve=False, formulation=formulation)
    assert result.status is Status.FEASIBLE and result.objective == 2.0


def test_a_solver_failure_is_an_error_status():
    """IPOPT rejects an unknown option inside the solve: the answer is status error with the reason."""
    result = solve(toy_resnet(), "60%", backend="mindtpy", presolve=False,
                   mindtpy_options={"nlp_solver_args": {"options": {"not_an_ipopt_option": 1}}})
    assert result.status is Status.ERROR
    assert result.stats["message"].startswith("MindtPy failed")


def test_options_pass_through_to_mindtpy():
    spec = toy_resnet()
    fp = solve(spec, "60%", backend="mindtpy", presolve=False, strategy="FP", iteration_limit=5,
               mindtpy_options={"mip_solver_mipgap": 1e-9}, time_limit=30)
    assert fp.stats["strategy"] == "FP"
    assert fp.has_solution
    # MindtPy's own validation sees each option: the strategy, its options and the raw dict
    with pytest.raises(SpecError, match="strategy"):
        solve(spec, "60%", backend="mindtpy", presolve=False, strategy="NOPE")
    with pytest.raises(SpecError, match="init_strategy"):
        solve(spec, "60%", backend="mindtpy", presolve=False, strategy="GOA")
    with pytest.raises(SpecError, match="not_a_mindtpy_option"):
        solve(spec, "60%", backend="mindtpy", presolve=False, mindtpy_options={"not_a_mindtpy_option": 1})


def test_solver_choice_is_checked_with_a_setup_hint():
    with pytest.raises(BackendError, match="setup-mindtpy"):
        solve(toy_resnet(), "60%", backend="mindtpy", presolve=False, nlp_solver="baron")


@pytest.mark.parametrize("options, field", [
    ({"formulation": "cubic"}, "formulation"),
    ({"iteration_limit": -1}, "iteration_limit"),
    ({"mip_solver": 3}, "mip_solver"),
    ({"mindtpy_options": {"mip_solver_mipgap": 0}}, "1e-9"),
    ({"mindtpy_options": {"strategy": "OA"}}, "strategy="),
    ({"mindtpy_options": [1]}, "mindtpy_options"),
    ({"threads": 2}, "threads"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(SpecError, match=field):
        solve(toy_resnet(), "60%", backend="mindtpy", presolve=False, **options)


def test_cli_json_stays_clean(capfd, tmp_path):
    """Solver chatter (HiGHS prints to the stdout descriptor, Pyomo logs to stdout) never reaches --json."""
    from mdp_opt import save
    path = tmp_path / "toy.json"
    save(toy_resnet(), path)
    code = main(["solve", str(path), "--budget", "60%", "--backend", "mindtpy", "--option", "presolve=false",
                 "--option", "formulation=marginal", "--json"])
    out = capfd.readouterr().out
    assert code == 0
    assert json.loads(out)["status"] == "feasible"


def test_setup_check_reports_ready(capsys):
    assert setup_run(argparse.Namespace(check=True, no_apt=True)) == 0
    out = capsys.readouterr().out
    assert "mindtpy backend: ready" in out
    assert "PyNumero ASL  built" in out


def test_stack_problems_name_the_missing_solver():
    assert stack_problems("appsi_highs", "cyipopt") == []
    assert any("'baron'" in p for p in stack_problems("appsi_highs", "baron"))
    assert any("'no_such_milp'" in p for p in stack_problems("no_such_milp", "cyipopt"))


def test_time_limits_reach_mindtpy_as_whole_seconds():
    from mdp_opt.backends.mindtpy import DEFAULTS, NO_TIME_LIMIT, _mindtpy_arguments
    assert _mindtpy_arguments({**DEFAULTS, "time_limit": 2.5})["time_limit"] == 2   # the process stops at 2.5
    assert _mindtpy_arguments({**DEFAULTS, "time_limit": 0.2})["time_limit"] == 1
    assert _mindtpy_arguments({**DEFAULTS, "time_limit": None})["time_limit"] == NO_TIME_LIMIT


def test_a_sub_solver_time_limit_is_reported_as_such():
    """MindtPy raises (instead of returning) when an NLP sub-solve hits the time limit."""
    from mdp_opt.backends.mindtpy import _failure
    raised = ValueError("MindtPy unable to handle NLP subproblem termination condition of maxTimeLimit")
    assert _failure(raised, {}).status is Status.TIME_LIMIT_NO_SOLUTION
    assert _failure(ValueError("something else"), {}).status is Status.ERROR
