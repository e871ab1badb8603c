"""solve_measured / fit_measured: budgets met on a measured cost that the spec only models.

The "measurement" here is a second cost model the search cannot see: the same spec with its latency
tables scaled (where the best answer is known exactly) or perturbed entry by entry (where only the
guarantees hold). A real torch measurement is exercised by tests/test_digits_example.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Dim, Spec, SpecError, Status, Term
from mdp_opt.evaluate import within_budget
from strategies import specs

BACKEND = "dp"


def positive_latency(spec: Spec) -> Spec:
    """The spec with one resource, `latency`, whose every configuration costs at least 1."""
    latency = (*spec.costs[sorted(spec.costs)[0]], Term((), 1.0))
    return spec.replace(costs={"latency": latency}, budgets={})


def with_latency_tables(spec: Spec, transform) -> Spec:
    return spec.replace(costs={"latency": tuple(Term(t.dims, transform(np.asarray(t.table, float)), t.block)
                                                for t in spec.costs["latency"])})


def measured_by(truth: Spec, calls: list | None = None):
    def measure(result: mdp_opt.Result) -> float:
        if calls is not None:
            calls.append(result)
        return mdp_opt.evaluate(truth, result.choice, result.active).costs["latency"]
    return measure


def best_value_within(truth: Spec, target: float) -> float | None:
    """The most valuable configuration whose true cost fits `target` (brute force)."""
    result = mdp_opt.solve(truth, {"latency": target}, backend="brute")
    return result.objective if result.has_solution else None


@settings(max_examples=60, deadline=None)
@given(specs(max_resources=1), st.sampled_from([0.5, 0.8, 1.0, 1.25, 2.0]), st.sampled_from([0.3, 0.5, 0.7, 0.9]))
def test_a_uniformly_scaled_truth_gets_the_best_answer_that_measures_within(spec, scale, fraction):
    spec = positive_latency(spec)
    truth = with_latency_tables(spec, lambda t: scale * t)
    target = fraction * spec.full_cost("latency")
    fit = mdp_opt.solve_measured(spec, target, measured_by(truth), backend=BACKEND)
    best = best_value_within(truth, target)
    assert fit.within == (best is not None)
    if best is not None:
        assert within_budget(fit.measured, target)
        assert fit.measured == pytest.approx(mdp_opt.evaluate(truth, fit.result.choice, fit.result.active).costs["latency"])
        assert fit.result.objective == pytest.approx(best, rel=1e-9, abs=1e-9)
    else:
        assert fit.result.status is Status.INFEASIBLE or fit.measured > target


@settings(max_examples=60, deadline=None)
@given(specs(max_resources=1), st.integers(0, 2**31 - 1), st.sampled_from([0.3, 0.5, 0.7, 0.9]),
       st.integers(1, 8))
def test_a_perturbed_truth_keeps_the_guarantees(spec, seed, fraction, max_rounds):
    spec = positive_latency(spec)
    rng = np.random.default_rng(seed)
    truth = with_latency_tables(spec, lambda t: t * rng.uniform(0.7, 1.3, size=t.shape))
    target = fraction * spec.full_cost("latency")
    calls: list = []
    fit = mdp_opt.solve_measured(spec, target, measured_by(truth, calls), backend=BACKEND, max_rounds=max_rounds)
    measured = [r for r in fit.rounds if r.measured is not None]
    assert 1 <= len(fit.rounds) <= max_rounds and len(measured) == len(calls)
    fitting = [r for r in measured if within_budget(r.measured, target)]
    assert fit.within == bool(fitting)
    if fit.within:
        assert within_budget(fit.measured, target)
        assert fit.measured == mdp_opt.evaluate(truth, fit.result.choice, fit.result.active).costs["latency"]
        assert fit.result.objective == max(r.objective for r in fitting)
        assert fit.result.costs["latency"] <= fit.result.budgets["latency"] * (1 + 1e-9)
        assert fit.result.objective <= best_value_within(truth, target) + 1e-9
    for r in measured:   # every round's figures are the ones its configuration really has
        assert r.predicted <= r.budget * (1 + 1e-9) + 1e-12


def test_an_exact_model_is_solved_once_and_confirmed():
    spec = positive_latency(mdp_opt.examples.make("chain", seed=1, depth=4, width=32, choices=5))
    calls: list = []
    fit = mdp_opt.solve_measured(spec, "60%", measured_by(spec, calls), backend=BACKEND)
    plain = mdp_opt.solve(spec, "60%", backend=BACKEND)
    assert fit.within and fit.result.objective == pytest.approx(plain.objective)
    assert fit.rounds[0].budget == pytest.approx(plain.budgets["latency"])
    assert fit.measured == pytest.approx(plain.costs["latency"])
    assert len(calls) <= 3


def test_an_unreachable_target_reports_the_answer_that_measured_lowest():
    spec = Spec(dims=(Dim("a", (1, 2)),), objective=(Term(("a",), [1.0, 2.0]),),
                costs={"latency": (Term(("a",), [5.0, 8.0]),)})
    fit = mdp_opt.solve_measured(spec, 4.0, measured_by(spec), backend=BACKEND)
    assert not fit.within and fit.result.kept == {"a": 1} and fit.measured == 5.0
    assert fit.rounds[0].status == "infeasible"      # the model says no; the search loosened to look
    assert "NOT within" in fit.summary()


def test_a_problem_infeasible_at_every_budget_is_a_status_and_nothing_is_measured():
    spec = Spec(dims=(Dim("a", (1, 2)),), objective=(Term(("a",), [1.0, 2.0]),),
                costs={"latency": (Term(("a",), [5.0, 8.0]),), "params": (Term(("a",), [3.0, 4.0]),)})
    calls: list = []
    fit = mdp_opt.solve_measured(spec, {"latency": 4.0, "params": 1.0}, measured_by(spec, calls), backend=BACKEND)
    assert not fit.within and fit.result.status is Status.INFEASIBLE and fit.measured is None
    assert calls == [] and [r.budget for r in fit.rounds] == [4.0, 8.0]   # the target, then the ceiling
    assert "no answer to measure" in fit.summary()


def test_a_model_that_overestimates_is_loosened_until_the_target_is_used():
    spec = Spec(dims=(Dim("a", (1, 2, 3, 4)),), objective=(Term(("a",), [1.0, 2.0, 3.0, 4.0]),),
                costs={"latency": (Term(("a",), [4.0, 6.0, 8.0, 10.0]),)})
    truth = with_latency_tables(spec, lambda t: t / 2)
    fit = mdp_opt.solve_measured(spec, 3.0, measured_by(truth), backend=BACKEND)   # the model: nothing fits
    assert fit.within and fit.result.kept == {"a": 2} and fit.measured == 3.0


def test_a_truth_slower_than_every_configuration_ends_not_within():
    spec = Spec(dims=(Dim("a", (1, 2, 3)),), objective=(Term(("a",), [1.0, 2.0, 3.0]),),
                costs={"latency": (Term(("a",), [5.0, 8.0, 10.0]),)})
    truth = with_latency_tables(spec, lambda t: t + 100.0)
    fit = mdp_opt.solve_measured(spec, 9.0, measured_by(truth), backend=BACKEND)
    assert not fit.within
    assert all(r.measured is None or r.measured > 9.0 for r in fit.rounds)
    assert fit.measured == min(r.measured for r in fit.rounds if r.measured is not None) == 105.0


def test_other_budgets_are_kept_while_the_measured_one_is_adjusted():
    spec = Spec(dims=(Dim("a", (1, 2, 3)), Dim("b", (1, 2, 3))),
                objective=(Term(("a",), [1.0, 2.0, 3.0]), Term(("b",), [1.0, 2.0, 3.0])),
                costs={"latency": (Term(("a",), [1.0, 2.0, 3.0]), Term(("b",), [1.0, 2.0, 3.0])),
                       "params": (Term(("b",), [1.0, 2.0, 3.0]),)})
    truth = with_latency_tables(spec, lambda t: 2 * t)
    fit = mdp_opt.solve_measured(spec, {"latency": 8.0, "params": 1.0}, measured_by(truth), backend=BACKEND)
    assert fit.within and fit.result.kept == {"a": 3, "b": 1}
    assert fit.result.budgets["params"] == 1.0


@pytest.mark.parametrize("kwargs, field", [
    ({"measure": "not callable"}, "measure"),
    ({"resource": "energy"}, "resource"),
    ({"max_rounds": 0}, "max_rounds"),
    ({"tolerance": 1.5}, "tolerance"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    spec = positive_latency(mdp_opt.examples.make("chain", seed=0, depth=2, width=32, choices=3))
    args = {"measure": measured_by(spec), **kwargs}
    with pytest.raises(SpecError, match=field):
        mdp_opt.solve_measured(spec, "50%", backend=BACKEND, **args)


@pytest.mark.parametrize("bad", [float("nan"), -1.0, "fast", None, float("inf")])
def test_a_bad_measurement_is_an_error_naming_measure(bad):
    spec = positive_latency(mdp_opt.examples.make("chain", seed=0, depth=2, width=32, choices=3))
    with pytest.raises(ValueError, match="measure"):
        mdp_opt.solve_measured(spec, "50%", lambda r: bad, backend=BACKEND)


def test_solve_options_reach_every_solve():
    spec = positive_latency(mdp_opt.examples.make("chain", seed=2, depth=3, width=32, choices=4))
    with pytest.raises(SpecError, match="no_such_option"):
        mdp_opt.solve_measured(spec, "50%", measured_by(spec), backend=BACKEND, no_such_option=1)
    fit = mdp_opt.solve_measured(spec, "50%", measured_by(spec), backend="brute")
    assert fit.result.backend == "brute"


def test_fit_measured_checks_its_own_arguments():
    spec = positive_latency(mdp_opt.examples.make("chain", seed=0, depth=2, width=32, choices=3))

    def pick(budget: float) -> mdp_opt.Result:
        return mdp_opt.solve(spec, {"latency": budget}, backend=BACKEND)

    for kwargs, field in (({"target": 0.0}, "target"), ({"target": float("nan")}, "target"),
                          ({"ceiling": -1.0}, "ceiling"), ({"resource": "energy"}, "resource")):
        args = {"target": 0.5 * spec.full_cost("latency"), "resource": "latency", **kwargs}
        with pytest.raises(SpecError, match=field):
            mdp_opt.fit_measured(pick, measured_by(spec), **args)


def test_a_fit_is_json_ready():
    import json

    spec = positive_latency(mdp_opt.examples.make("chain", seed=3, depth=3, width=32, choices=4))
    truth = with_latency_tables(spec, lambda t: 1.1 * t)
    fit = mdp_opt.solve_measured(spec, "50%", measured_by(truth), backend=BACKEND)
    data = json.loads(json.dumps(fit.to_dict()))
    assert data["within"] == fit.within and data["measured"] == fit.measured
    assert data["result"]["kept"] == fit.result.kept
    assert [r["budget"] for r in data["rounds"]] == [r.budget for r in fit.rounds] and len(data["rounds"]) >= 2


def test_bisection_goes_on_past_an_answer_it_has_already_measured():
    """Costs 1..5, 7, 8 (no 6); the truth is the model up to 7 and 1.5x above. Target 8: 8 measures 12 (over),
    the ratio step asks for 5.33 (answer 5, within), the midpoint 6.67 gives 5 again, and only going on
    finds 7, which measures 7."""
    costs = [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 8.0]
    spec = Spec(dims=(Dim("a", tuple(range(1, 8))),), objective=(Term(("a",), costs),),
                costs={"latency": (Term(("a",), costs),)})
    truth = with_latency_tables(spec, lambda t: np.where(t > 7.5, 1.5 * t, t))
    fit = mdp_opt.solve_measured(spec, 8.0, measured_by(truth), backend=BACKEND)
    assert fit.within and fit.measured == 7.0 and fit.result.costs["latency"] == 7.0
    repeated = [r for r in fit.rounds if r.measured is None and r.predicted is not None]
    assert repeated and repeated[0].predicted == 5.0


def test_a_measurement_equal_to_the_target_up_to_float_noise_is_within():
    """Found by hypothesis: 0.8 x 9 = 7.2000000000000002 against a target of 0.3 x 24 = 7.199999999999999. The
    core's budget tolerance (evaluate.within_budget) says within; a strict <= rejected the best answer."""
    spec = Spec(dims=(Dim("a", (1, 2)),), objective=(Term(("a",), [1.0, 2.0]),),
                costs={"latency": (Term(("a",), [6.0, 9.0]), Term((), 0.0))})
    truth = with_latency_tables(spec, lambda t: 0.8 * t)
    target = 0.3 * 24.0
    assert 0.8 * 9.0 > target
    fit = mdp_opt.solve_measured(spec, target, measured_by(truth), backend=BACKEND)
    assert fit.within and fit.result.kept == {"a": 2}
