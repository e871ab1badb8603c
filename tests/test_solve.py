"""solve(): budget forms, the backend registry, and verification of every backend answer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings

import mdp_opt
from mdp_opt import Answer, BackendError, Spec, SpecError, Status
from mdp_opt.cli import main
from reference import every_configuration
from strategies import problems
from test_spec import EXAMPLE


@pytest.fixture
def spec() -> Spec:
    return Spec.from_dict(EXAMPLE)


def test_budget_forms_resolve_to_absolute_numbers(spec):
    full = spec.full_costs()["latency"]
    assert mdp_opt.resolve_budgets(spec) == {"latency": 0.7}
    assert mdp_opt.resolve_budgets(spec, 0.5) == {"latency": 0.5}
    assert mdp_opt.resolve_budgets(spec, "50%") == pytest.approx({"latency": 0.5 * full})
    assert mdp_opt.resolve_budgets(spec, {"latency": "25%"}) == pytest.approx({"latency": 0.25 * full})


@pytest.mark.parametrize("budget,field", [
    ({"flops": 1}, "budget.flops"), ("half", "budget.latency"), ({"latency": float("nan")}, "budget.latency"),
    ({"latency": True}, "budget.latency"), ("50", "budget.latency"),
])
def test_bad_budgets_name_the_field(spec, budget, field):
    with pytest.raises(SpecError) as info:
        mdp_opt.solve(spec, budget, backend="brute")
    assert str(info.value).startswith(field)


def test_a_bare_number_needs_an_unambiguous_resource():
    two = Spec.from_dict({**EXAMPLE, "budgets": {}, "costs": {"flops": EXAMPLE["costs"]["latency"],
                                                                "params": EXAMPLE["costs"]["latency"]}})
    with pytest.raises(SpecError, match="several resources"):
        mdp_opt.resolve_budgets(two, 1.0)


def test_infeasible_budget_is_a_status_not_an_exception(spec):
    result = mdp_opt.solve(spec, 0.1, backend="brute")
    assert result.status is Status.INFEASIBLE
    assert result.objective is None and result.kept == {}


def test_removed_block_reports_its_dims_as_zero(spec):
    result = mdp_opt.solve(spec, 0.45, backend="brute")
    assert result.active == {"b1": False}
    assert result.kept == {"stem": 16, "b1.conv1": 0}
    assert result.costs["latency"] == pytest.approx(0.45)


def test_unknown_backend_lists_what_is_installed(spec):
    with pytest.raises(BackendError, match=r"unknown; choose one of .*installed: .*brute"):
        mdp_opt.solve(spec, backend="gurobi")


def test_unknown_option_is_rejected(spec):
    with pytest.raises(SpecError, match=r"option 'thread'"):
        mdp_opt.solve(spec, backend="brute", thread=2)


@pytest.fixture
def register_answer(register):
    """Register a test backend answering `answer_for(spec, limits)`, for one test only."""
    def add(name, answer_for):
        register(name, lambda spec, limits, options: answer_for(spec, limits))
    return add


def test_verification_refuses_wrong_objective_over_budget_and_false_bounds(spec, register_answer):
    register = register_answer
    best = mdp_opt.solve(spec, {"latency": 0.7}, backend="brute")
    register("liar-objective", lambda s, b: Answer(Status.OPTIMAL, best.choice, best.active, best.objective + 1))
    register("liar-budget", lambda s, b: Answer(Status.FEASIBLE, {"stem": 0, "b1.conv1": 3}, {"b1": True}))
    register("liar-bound", lambda s, b: Answer(Status.FEASIBLE, best.choice, best.active, bound=best.objective - 1))
    register("liar-optimal", lambda s, b: Answer(Status.OPTIMAL, best.choice, best.active, bound=best.objective * 2))
    register("liar-index", lambda s, b: Answer(Status.FEASIBLE, {"stem": 0, "b1.conv1": 9}, {"b1": True}))
    register("liar-missing", lambda s, b: Answer(Status.OPTIMAL))
    for name, pattern in [("liar-objective", "reported objective"), ("liar-budget", "over budget"),
                          ("liar-bound", "below its own"), ("liar-optimal", "claims optimal"),
                          ("liar-index", "out of range"), ("liar-missing", "without a configuration")]:
        with pytest.raises(BackendError, match=pattern):
            mdp_opt.solve(spec, backend=name)


def test_registered_backend_result_is_completed_by_the_core(spec, register_answer):
    best = mdp_opt.solve(spec, {"latency": 0.7}, backend="brute")
    register_answer("honest", lambda s, b: Answer(Status.FEASIBLE, best.choice, best.active, bound=10.0))
    result = mdp_opt.solve(spec, backend="honest")
    assert result.status is Status.FEASIBLE
    assert result.objective == pytest.approx(best.objective)
    assert result.gap == pytest.approx((10.0 - best.objective) / 10.0)
    assert result.budgets == {"latency": 0.7}


@settings(max_examples=80)
@given(problems())
def test_brute_force_is_feasible_and_no_feasible_configuration_is_better(problem):
    spec, budget = problem
    result = mdp_opt.solve(spec, budget, backend="brute")
    budgets = mdp_opt.resolve_budgets(spec, budget)
    # independent referee: walk every configuration with evaluate()
    best = max((ev.value for _, _, ev in every_configuration(spec, budgets) if ev.feasible), default=None)
    if best is None:
        assert result.status is Status.INFEASIBLE
    else:
        assert result.status is Status.OPTIMAL
        assert result.objective == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_cli_validate_solve_and_errors(tmp_path, capsys, spec):
    path = tmp_path / "s.json"
    mdp_opt.save(spec, path)
    assert main(["validate", str(path)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["solve", str(path), "--backend", "brute", "--budget", "latency=0.45", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"status", "objective", "bound", "gap", "kept", "active", "costs", "backend", "wall_time", "stats"}
    assert out["status"] == "optimal" and out["active"] == {"b1": False}
    assert main(["solve", str(path), "--backend", "brute", "--budget", "1%", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "infeasible"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**EXAMPLE, "version": 3}))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "version" in err and "Traceback" not in err
    assert main(["solve", str(path), "--backend", "brute", "--budget", "latency=lots"]) == 2
    assert "--budget latency" in capsys.readouterr().err


def test_unknown_option_is_rejected_even_when_the_presolve_answers_alone(spec, register):
    """The presolve proves this toy optimal without calling the backend; the option check must not depend on it."""
    register("declared", lambda s, b, o: mdp_opt.get_backend("brute").solve(s, b, {}), features={"presolve"},
             options={"threads": None})
    assert mdp_opt.solve(spec, backend="declared", threads=2).stats.get("solved_by") == "presolve"
    with pytest.raises(SpecError, match=r"option 'bogus': not understood by backend 'declared'"):
        mdp_opt.solve(spec, backend="declared", bogus=1)


@pytest.mark.parametrize("backend", [b for b in ("cpsat", "milp", "dp") if b in mdp_opt.installed_backends()])
def test_built_in_backends_declare_their_options(spec, backend):
    with pytest.raises(SpecError, match=rf"option 'bogus_option': not understood by backend '{backend}'"):
        mdp_opt.solve(spec, backend=backend, bogus_option=1)


def test_top_level_api_imports_no_solver_and_no_torch():
    """The core stays light: importing mdp_opt and its top-level API loads no solver, torch or plotting."""
    import subprocess
    import sys
    code = ("import sys, mdp_opt; mdp_opt.frontier; mdp_opt.bench.bench; mdp_opt.examples.make('chain', depth=2);"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'ortools', 'highspy', 'pyomo', 'matplotlib', 'scipy', 'torch_pruning'}); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("command,option", [("bench", "--backends"), ("frontier", "--points"),
                                            ("setup-mindtpy", "--check")])
def test_pluggable_subcommands_print_their_own_help(command, option, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert option in capsys.readouterr().out
