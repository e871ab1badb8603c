"""The backend conformance suite: written once, run for every registered backend according to its features.

A backend is tested here as soon as it registers: exact ones (`Feature.EXACT`) against the reference
(brute force) and against each other, with the shared presolve both on and off so that the backend
itself is exercised; heuristic ones for verified answers never above the proven optimum; and every
declared feature (hint, time limit, threads, bound) for what it promises. Backend-specific behaviour
(CP-SAT's scaling, the DP's Pareto sets, MindtPy's options) is tested in that backend's own file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Dim, Feature, Spec, SpecError, Status, Term, backends_with, get_backend, solve
from mdp_opt.cli import main
from reference import EXACT, HEURISTIC, assert_matches_reference, assert_never_above_reference, reference
from strategies import problems

PRESOLVE = [pytest.param(False, id="own"), pytest.param(True, id="presolved")]


def options_for(backend: str, **options) -> dict:
    """Options every call in this suite passes: one thread where the backend takes threads (determinism)."""
    return {"threads": 1, **options} if get_backend(backend).has(Feature.THREADS) else dict(options)


def run(spec, budget, backend, presolve=False, **options):
    return solve(spec, budget, backend=backend, presolve=presolve, **options_for(backend, **options))


# ---- exact backends: the reference, and each other ---------------------------------------------------

@pytest.mark.parametrize("presolve", PRESOLVE)
@pytest.mark.parametrize("backend", EXACT)
@settings(max_examples=40, deadline=None)
@given(problem=problems())
def test_exact_backend_matches_the_reference(backend, presolve, problem):
    spec, budget = problem
    assert_matches_reference(run(spec, budget, backend, presolve), reference(spec, budget))


def scaled(spec: Spec, budget, objective_factor: float, cost_factor: float):
    """The same problem with objective and costs multiplied by constants (percent budgets unchanged)."""
    spec = spec.replace(
        objective=tuple(Term(t.dims, t.table * objective_factor, t.block) for t in spec.objective),
        costs={r: tuple(Term(t.dims, t.table * cost_factor, t.block) for t in ts) for r, ts in spec.costs.items()})
    if isinstance(budget, dict):
        budget = {r: b if isinstance(b, str) else b * cost_factor for r, b in budget.items()}
    return spec, budget


@pytest.mark.parametrize("backend", EXACT)
@settings(max_examples=20, deadline=None)
@given(problem=problems(), objective_factor=st.sampled_from([1e-9, 1e9]), cost_factor=st.sampled_from([1e-5, 1e9]))
def test_exact_backend_is_exact_at_any_data_scale(backend, problem, objective_factor, cost_factor):
    """Solver tolerances are absolute: tiny or huge objectives and costs must not change the answer."""
    spec, budget = scaled(*problem, objective_factor, cost_factor)
    assert_matches_reference(run(spec, budget, backend), reference(spec, budget))


@pytest.mark.skipif(len(EXACT) < 2, reason="fewer than two exact backends installed")
@pytest.mark.parametrize("presolve", PRESOLVE)
@pytest.mark.parametrize("example", ["resnet", "vit", "mobilenetv2"])
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10**6), fraction=st.sampled_from([0.2, 0.35, 0.5, 0.75]), integer=st.booleans())
def test_exact_backends_agree_on_larger_specs(example, presolve, seed, fraction, integer):
    """Beyond brute force: generated specs with blocks, arity-3 terms and float data; every exact backend
    proves the same optimum."""
    sizes = {"resnet": dict(blocks=(2, 2), choices=6, width=16, image_size=32),
             "vit": dict(blocks=3, embed=48, heads=3, head_dim=16, choices=4, tokens=17),
             "mobilenetv2": dict(stages=4, choices=6, image_size=32)}[example]
    generated = mdp_opt.examples.generated.GENERATORS[{"resnet": "resnet50", "vit": "vit12",
                                                       "mobilenetv2": "mobilenetv2"}[example]]
    spec = generated(seed=seed, integer=integer, budget=fraction, **sizes)
    results = {b: run(spec, None, b, presolve, time_limit=60) for b in EXACT}
    if any(r.status is Status.INFEASIBLE for r in results.values()):
        assert all(r.status is Status.INFEASIBLE for r in results.values()), results
        return
    # float data: a backend may stop at a proven gap a hair above 1e-9 (`feasible`); no value may exceed a bound
    assert all(r.has_solution and r.gap is not None and r.gap <= 1e-8 for r in results.values()), results
    best = max(r.objective for r in results.values())
    assert all(best <= r.bound * (1 + 1e-12) + 1e-12 for r in results.values()), results
    assert all(r.objective == pytest.approx(best, rel=1e-9) for r in results.values() if r.status is Status.OPTIMAL)


def one_dim(values, costs, resource="lat") -> Spec:
    return Spec(dims=(Dim("a", tuple(range(1, len(values) + 1))),), objective=(Term(("a",), values),),
                costs={resource: (Term(("a",), costs),)})


BIG = 4e9
# Budgets at the edge of the core's tolerance (1e-9 of the budget). Regressions: the presolve divided by zero
# when even the cheapest configuration was over budget by less than its rounding margin; CP-SAT cut half the
# tolerance off exact integer costs (a wrong `optimal` at FLOP-scale budgets); HiGHS rows scaled by their
# largest coefficient let its tolerance exceed the core's (over-budget answers).
EDGES = {
    "cheapest-just-over": (one_dim([1.0, 0.0], [1.0, 1000.0]), {"lat": 1 - 3e-9}),
    "flop-scale-within-tolerance": (one_dim([0.0, 1.0, 5.0], [BIG, BIG + 3, BIG + 100]), {"lat": BIG}),
    "flop-scale-presolve-incumbent": (one_dim([0.99, 1.0, 10.0], [BIG, BIG + 3, BIG + 1000], "flops"), {"flops": BIG}),
    "large-coefficient-row": (one_dim([0.0, 1.0, 5.0], [1.0, 1 + 5e-8, 1000.0]), {"lat": 1.0}),
    "large-coefficient-row-big-budget": (one_dim([0.0, 1.0, 5.0], [BIG, BIG + 5, 1e12]), {"lat": BIG}),
    "objective-1e-9": (one_dim([1.1e-9, 1.6e-9], [1.0, 2.0]), {"lat": 2.0}),
    "objective-1e9": (one_dim([1.1e9, 1.6e9], [1.0, 2.0]), {"lat": 2.0}),
}


@pytest.mark.parametrize("presolve", PRESOLVE)
@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("case", sorted(EDGES))
def test_exact_backend_at_the_edges_matches_the_reference(case, backend, presolve):
    spec, budget = EDGES[case]
    assert_matches_reference(run(spec, budget, backend, presolve), reference(spec, budget))


@pytest.mark.parametrize("presolve", PRESOLVE)
@pytest.mark.parametrize("backend", EXACT)
def test_real_instance_reaches_the_proven_optimum(instance, backend, presolve):
    name, spec, optimum = instance
    result = run(spec, None, backend, presolve)
    assert result.status is Status.OPTIMAL and result.objective == optimum, result
    assert result.costs["latency"] <= result.budgets["latency"]
    assert ("presolve" in result.stats) is presolve


def chain_spec(n_dims: int, n_choices: int, seed: int = 0, fraction: float = 0.4) -> Spec:
    """A chain of dims with random pairwise costs: hard enough that no solver finishes in milliseconds."""
    rng = np.random.default_rng(seed)
    dims = tuple(Dim(f"d{i}", tuple(range(1, n_choices + 1))) for i in range(n_dims))
    objective = tuple(Term((d.name,), np.sort(rng.uniform(0, 100, n_choices))) for d in dims)
    latency = tuple(Term((a.name, b.name), rng.uniform(0, 10, (n_choices, n_choices)))
                    for a, b in zip(dims, dims[1:]))
    spec = Spec(dims=dims, objective=objective, costs={"latency": latency})
    return spec.replace(budgets={"latency": fraction * spec.full_cost("latency")})


@pytest.mark.parametrize("backend", EXACT)
def test_constant_cost_above_budget_is_proven_infeasible(backend):
    spec = Spec(dims=(Dim("a", (1, 2)),), objective=(Term(("a",), [1.0, 2.0]),),
                costs={"latency": (Term(("a",), [1.0, 2.0]), Term((), 5.0))})
    assert run(spec, 5.5, backend).status is Status.INFEASIBLE
    ok = run(spec, 6.0, backend)
    assert ok.status is Status.OPTIMAL and ok.kept == {"a": 1}


# ---- heuristic backends: verified answers, never above the optimum -------------------------------------

@pytest.mark.parametrize("backend", HEURISTIC)
@settings(max_examples=8, deadline=None)
@given(problem=problems(max_dims=3, max_choices=3, max_blocks=1, max_resources=1))
def test_heuristic_backend_is_verified_and_never_above_the_optimum(backend, problem):
    spec, budget = problem
    assert_never_above_reference(run(spec, budget, backend), reference(spec, budget))


@pytest.mark.parametrize("backend", HEURISTIC)
def test_heuristic_backend_reaches_a_real_instance(backend):
    spec = mdp_opt.examples.instance("mdp-mbv1-2nd-step00")
    result = run(spec, None, backend)
    assert result.has_solution, result
    assert result.objective <= mdp_opt.examples.PROVEN_OPTIMA["mdp-mbv1-2nd-step00"]


# ---- every backend ---------------------------------------------------------------------------------------

ALL = backends_with(without=[Feature.REFERENCE])


@pytest.mark.parametrize("backend", ALL)
def test_infeasible_budget_is_a_status(backend):
    spec = chain_spec(4, 3)
    result = run(spec, 0.0, backend)
    assert result.status in (Status.INFEASIBLE, Status.ERROR) if backend in HEURISTIC else \
        result.status is Status.INFEASIBLE
    assert result.objective is None


@pytest.mark.parametrize("backend", ALL)
def test_fractional_constant_cost_at_full_budget(backend):
    spec = Spec(dims=(Dim("a", (1,)),), objective=(Term((), 5.6),), costs={"latency": (Term((), 2.69786714),)})
    result = run(spec, "100%", backend)
    assert result.has_solution and result.objective == 5.6


@pytest.mark.parametrize("backend", ALL)
def test_spec_without_dims_or_blocks(backend):
    spec = Spec(dims=(), objective=(Term((), 3.0),), costs={"latency": (Term((), 2.0),)})
    assert run(spec, 1.0, backend).status is Status.INFEASIBLE
    result = run(spec, 2.0, backend)
    assert result.has_solution and result.objective == 3.0


@pytest.mark.parametrize("backend", ALL)
def test_unknown_options_are_errors_even_when_the_presolve_answers_alone(backend):
    spec = chain_spec(3, 2, fraction=1.0)
    with pytest.raises(SpecError, match=rf"option 'bogus': not understood by backend '{backend}'"):
        solve(spec, backend=backend, bogus=1)


@pytest.mark.parametrize("backend", [b for b in ALL if "verbose" in (get_backend(b).options or {})])
def test_verbose_prints_the_solver_log(backend, capfd):
    spec = chain_spec(3, 2)
    full = spec.full_cost("latency")
    quiet = run(spec, full, backend)
    assert quiet.has_solution
    assert capfd.readouterr().out == ""
    verbose = run(spec, full, backend, verbose=True)
    assert verbose.has_solution and capfd.readouterr().out.strip()


@pytest.mark.parametrize("backend", backends_with(Feature.THREADS))
def test_threads_are_checked(backend):
    spec = chain_spec(3, 2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(SpecError, match="threads"):
            solve(spec, backend=backend, presolve=False, threads=bad)
    assert solve(spec, "100%", backend=backend, presolve=False, threads=2).has_solution


@pytest.mark.parametrize("backend", backends_with(Feature.TIME_LIMIT))
def test_time_limit_stops_early_with_an_honest_status(backend):
    spec = chain_spec(40, 24)
    result = run(spec, None, backend, time_limit=0.05)
    assert result.status in (Status.FEASIBLE, Status.TIME_LIMIT_NO_SOLUTION, Status.OPTIMAL)
    if result.status is Status.FEASIBLE and get_backend(backend).has(Feature.BOUND):
        assert result.bound is None or result.bound >= result.objective


# parameters under which the solver's first solution is the one it returns (for the hint test)
ONLY_FIRST_SOLUTION = {"cpsat": {"stop_after_first_solution": True, "num_workers": 1},
                       "milp": {"mip_max_nodes": 0, "mip_heuristic_effort": 0.0,
                                "mip_heuristic_run_feasibility_jump": False}}


@pytest.mark.parametrize("backend", backends_with(Feature.HINT))
def test_hint_is_taken(backend):
    spec = chain_spec(6, 4, seed=3, fraction=0.6)
    best = reference(spec, None)
    poor = reference(spec, "40%")      # feasible at the spec's 60%, and worse
    assert poor.status is Status.OPTIMAL and poor.objective < best.objective
    hint = {"choice": poor.choice, "active": {}}
    if backend in ONLY_FIRST_SOLUTION:
        got = run(spec, None, backend, hint=hint, parameters=ONLY_FIRST_SOLUTION[backend])
        assert got.choice == hint["choice"] and got.status is Status.FEASIBLE
    # a Result is a valid hint too, and the answer is still optimal
    again = run(spec, None, backend, hint=best)
    assert again.status is Status.OPTIMAL and again.objective == pytest.approx(best.objective)


@pytest.mark.parametrize("backend", backends_with(Feature.HINT))
def test_bad_hint_is_an_error(backend):
    spec = chain_spec(3, 2)
    with pytest.raises(SpecError, match="hint"):
        run(spec, None, backend, hint={"choice": {"d0": 5, "d1": 0, "d2": 0}})
    with pytest.raises(SpecError, match="hint"):
        run(spec, None, backend, hint=[1, 2])
    infeasible = reference(spec, 0.0)
    with pytest.raises(SpecError, match="no configuration"):
        run(spec, None, backend, hint=infeasible)


@pytest.mark.parametrize("backend", EXACT)
def test_cli_solve_json(backend, capsys):
    code = main(["solve", "--example", "mdp-rn50-step20", "--backend", backend, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["status"] == "optimal" and out["backend"] == backend
    assert out["objective"] == mdp_opt.examples.PROVEN_OPTIMA["mdp-rn50-step20"]


@pytest.mark.parametrize("backend", ALL)
def test_cli_subprocess_prints_only_json(backend):
    """A real `mdp-opt solve --json` process: stdout is one JSON object (no solver banner or log)."""
    proc = subprocess.run([sys.executable, "-m", "mdp_opt.cli", "solve", "--example", "mdp-mbv1-2nd-step00",
                           "--backend", backend, "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["backend"] == backend and out["status"] in ("optimal", "feasible")


# ---- ties: among optimal answers, keep more -----------------------------------------------------------------

def zero_importance_spec() -> Spec:
    """Every choice of `a` above 2 adds no importance, and block `z` is worth nothing: dropping them is free,
    so without a tie-break a solver may return any of several optimal configurations."""
    dims = (Dim("a", (1, 2, 3, 4)), Dim("b", (1, 2)))
    return Spec(dims=dims, blocks=("z",),
                objective=(Term(("a",), [1.0, 2.0, 2.0, 2.0]), Term(("b",), [0.0, 3.0]), Term(("b",), [0.0, 0.0], "z")),
                costs={"latency": (Term(("a",), [1.0, 2.0, 3.0, 4.0]), Term(("b",), [1.0, 2.0]),
                                   Term(("b",), [0.5, 0.5], "z"))})


@pytest.mark.parametrize("presolve", PRESOLVE)
@pytest.mark.parametrize("backend", EXACT)
def test_among_optimal_answers_the_one_keeping_more_is_returned(backend, presolve):
    spec = zero_importance_spec()
    full = run(spec, "100%", backend, presolve)
    assert full.status is Status.OPTIMAL and full.choice == {"a": 3, "b": 1} and full.active == {"z": True}
    # at 6.5 the best value (5) is reached with a=2 or more; keeping a=3 and the free block is the most that fits
    tight = run(spec, 6.5, backend, presolve)
    assert tight.status is Status.OPTIMAL and tight.objective == 5.0
    assert tight.choice == {"a": 3, "b": 1} and tight.active == {"z": True}


@pytest.mark.parametrize("backend", EXACT)
def test_a_full_budget_keeps_everything_on_the_real_instances(instance, backend):
    name, spec, optimum = instance
    result = run(spec, "100%", backend)
    assert result.status is Status.OPTIMAL
    assert (result.choice, result.active) == spec.full_configuration()
