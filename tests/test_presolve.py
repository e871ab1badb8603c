"""Lagrangian presolve: never removes an optimal configuration; its proofs, bounds and answers are right."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Answer, BackendError, Dim, Spec, Status, Term
from mdp_opt.budgets import limits
from mdp_opt.result import relative_gap
import mdp_opt.presolve as presolve_module
from mdp_opt.presolve import dual, presolve
from mdp_opt.presolve.local_search import best_partners
from reference import REFERENCE, every_configuration
from strategies import gapped_problems, problems


def brute_force(spec: Spec, caps) -> Answer:
    """The reference backend's answer on (spec, limits), without solve()'s verification."""
    return mdp_opt.get_backend(REFERENCE).solve(spec, caps, {})


def all_optima(spec: Spec, budgets) -> tuple[float | None, list[tuple[dict, dict]]]:
    """The optimal value and every optimal configuration, by walking all configurations with evaluate()."""
    feasible = [(choice, active, ev.value) for choice, active, ev in every_configuration(spec, budgets) if ev.feasible]
    if not feasible:
        return None, []
    best = max(v for _, _, v in feasible)
    return best, [(c, a) for c, a, v in feasible if close(v, best)]


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@settings(max_examples=100)
@given(problems(max_configurations=3000))
def test_presolve_keeps_every_optimal_configuration(problem):
    spec, budget = problem
    budgets = mdp_opt.resolve_budgets(spec, budget)
    pre = presolve(spec, limits(budgets))
    check_problem(spec, budgets, pre)
    if pre.incumbent is None and len(budgets) == 1:
        assert pre.status == "infeasible"  # one resource: its minimum cost proves it


def check_problem(spec: Spec, budgets, pre) -> None:
    """`check_presolved` against brute force; an infeasible problem's presolve has no incumbent."""
    best, optima = all_optima(spec, budgets)
    if best is None:
        assert pre.status in ("infeasible", "reduced") and pre.incumbent is None
        return
    check_presolved(spec, budgets, pre, best, optima)


def check_presolved(spec: Spec, budgets, pre, best: float, optima) -> None:
    """A feasible problem's presolve: a valid bound, a feasible incumbent no better than the optimum, and every
    optimal configuration left in the reduced spec."""
    assert pre.status != "infeasible"
    assert pre.bound >= best - 1e-9 * max(1.0, abs(best))
    choice, active, value = pre.incumbent
    ev = mdp_opt.evaluate(spec, choice, active, budgets)
    assert ev.feasible and close(ev.value, value) and value <= best + 1e-9 * max(1.0, abs(best))
    if pre.status == "optimal":
        assert close(value, best)
    for choice, active in optima:  # each optimal configuration is still a configuration of the reduced spec
        assert all(choice[d] in pre.kept[d] for d in spec.dim_names if not _irrelevant(spec, pre, d)), (choice, pre.kept)
        assert all(active[b] == state for b, state in pre.fixed_blocks.items())
    assert set(pre.spec.block_names) | set(pre.fixed_blocks) == set(spec.block_names)


@settings(max_examples=100)
@given(problems(max_configurations=3000), st.data())
def test_a_feasible_hint_is_the_first_incumbent_and_an_infeasible_one_is_ignored(problem, data):
    spec, budget = problem
    budgets = mdp_opt.resolve_budgets(spec, budget)
    caps = limits(budgets)
    walk = list(every_configuration(spec, budgets))
    choice, active, ev = walk[data.draw(st.integers(0, len(walk) - 1))]
    pre = presolve(spec, caps, hint=(choice, active))
    check_problem(spec, budgets, pre)
    if pre.status != "skipped":
        assert pre.stats["hint_value"] == (pytest.approx(ev.value, rel=1e-9, abs=1e-9) if ev.feasible else None)
    if ev.feasible:          # the incumbent is the hint, or better
        assert pre.incumbent is not None and pre.incumbent[2] >= ev.value - 1e-9 * max(1.0, abs(ev.value))
    best, optima = all_optima(spec, budgets)
    if best is not None:     # hinted with an optimum, the presolve's incumbent is optimal
        pre = presolve(spec, caps, hint=optima[0])
        check_presolved(spec, budgets, pre, best, optima)
        assert close(pre.incumbent[2], best)


def test_hinted_with_the_optimum_the_presolve_starts_from_it_and_fixes_more():
    """Hard seed 17 (two resources): the presolve's own incumbent is 0.85% below its bound; hinted with the
    optimum (dp's), the optimum is the incumbent and the fixing keeps fewer choices; solve() passes the hint."""
    spec = mdp_opt.examples.make("hard", seed=17)
    caps = limits(mdp_opt.resolve_budgets(spec, None))
    optimum = mdp_opt.solve(spec, None, backend="dp", time_limit=60)
    assert optimum.status is Status.OPTIMAL
    plain = presolve(spec, caps)
    hinted = presolve(spec, caps, hint=(optimum.choice, optimum.active))
    assert plain.incumbent[2] < optimum.objective == hinted.incumbent[2] == hinted.stats["hint_value"]
    assert hinted.stats["choices_kept"] < plain.stats["choices_kept"]
    result = mdp_opt.solve(spec, None, backend="dp", hint=optimum, time_limit=60)
    assert result.stats["presolve"]["hint_value"] == optimum.objective and result.objective == optimum.objective


def _irrelevant(spec: Spec, pre, dim: str) -> bool:
    """True when every term naming the dim belongs to a block the presolve fixed removed (its choice
    then changes nothing, and the presolve may pin it anywhere)."""
    return all(t.block is not None and pre.fixed_blocks.get(t.block) is False
               for _, _, t in spec.terms() if dim in t.dims)


@settings(max_examples=100)
@given(problems(max_configurations=3000))
def test_reduced_spec_has_the_original_optimum_and_maps_back_to_an_optimal_answer(problem):
    spec, budget = problem
    budgets = mdp_opt.resolve_budgets(spec, budget)
    reference = brute_force(spec, limits(budgets))
    pre = presolve(spec, limits(budgets))
    if pre.status in ("optimal", "infeasible"):
        assert pre.answer().status is reference.status
        if pre.status == "optimal":
            assert close(pre.answer().objective, reference.objective)
        return
    reduced = brute_force(pre.spec, pre.limits)
    assert reduced.status is reference.status
    if reference.status is Status.OPTIMAL:
        assert close(reduced.objective, reference.objective)
        choice, active = pre.lift_configuration(reduced.choice, reduced.active)
        ev = mdp_opt.evaluate(spec, choice, active, budgets)
        assert ev.feasible and close(ev.value, reference.objective)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=problems(max_configurations=3000))
def test_solve_with_presolve_matches_the_unpresolved_optimum(problem, register):
    spec, budget = problem
    reference = mdp_opt.solve(spec, budget, backend="brute")
    seen = []

    def brute_behind_presolve(s, b, options):
        seen.append(s)
        return brute_force(s, b)

    register("presolved-brute", brute_behind_presolve, features={"presolve"})
    result = mdp_opt.solve(spec, budget, backend="presolved-brute")
    assert result.status is reference.status
    if reference.has_solution:
        assert close(result.objective, reference.objective)
        assert result.bound == pytest.approx(result.objective, rel=1e-9, abs=1e-9)
    info = result.stats["presolve"]
    assert info["choices_kept"] <= info["choices_total"] == sum(d.size for d in spec.dims)
    assert result.stats["solved_by"] == ("backend" if seen else "presolve")


EXAMPLE = Spec(
    dims=(Dim("a", (1, 2, 3)), Dim("b", (1, 2, 3))),
    objective=(Term(("a",), [0.0, 3.0, 4.0]), Term(("b",), [0.0, 2.0, 5.0]), Term(("a", "b"), [[0, 0, 0], [0, 0, 1.0],
                                                                                             [0, 1.0, 2.0]])),
    costs={"latency": (Term(("a",), [1.0, 2.0, 3.0]), Term(("b",), [1.0, 2.0, 3.0]))},
)


def test_a_loose_budget_is_proven_optimal_by_the_presolve_alone():
    result = mdp_opt.solve(EXAMPLE, {"latency": 100}, backend="dp")
    assert result.status is Status.OPTIMAL and result.stats["solved_by"] == "presolve"
    assert result.objective == 11.0 and result.kept == {"a": 3, "b": 3}


def test_a_budget_below_the_minimum_cost_is_proven_infeasible_by_the_presolve():
    result = mdp_opt.solve(EXAMPLE, {"latency": 1.99}, backend="dp")
    assert result.status is Status.INFEASIBLE and result.stats["solved_by"] == "presolve"
    assert mdp_opt.solve(EXAMPLE, {"latency": 2.0}, backend="dp").objective == 0.0  # the minimum cost itself fits


def test_presolve_false_calls_the_backend_on_the_original_spec(register):
    seen = []
    register("spy", lambda s, b, o: (seen.append(s), brute_force(s, b))[1], features={"presolve"})
    result = mdp_opt.solve(EXAMPLE, {"latency": 100}, backend="spy", presolve=False)
    assert seen == [EXAMPLE] and "presolve" not in result.stats
    with pytest.raises(mdp_opt.SpecError, match="presolve"):
        mdp_opt.solve(EXAMPLE, backend="spy", presolve="yes")


def test_backends_opt_in_and_brute_never_presolves(register):
    seen = []
    register("third-party", lambda s, b, o: (seen.append(s), brute_force(s, b))[1])
    assert "presolve" not in mdp_opt.solve(EXAMPLE, {"latency": 100}, backend="third-party").stats
    assert "presolve" not in mdp_opt.solve(EXAMPLE, {"latency": 100}, backend="brute").stats


def _knapsack(values: list[float], weights: list[float], capacity: float) -> tuple[Spec, dict[str, float]]:
    """Items x0, x1, ... each kept (choice 1) or not (choice 0), under one latency budget."""
    dims = tuple(Dim(f"x{i}", (1, 2)) for i in range(len(values)))
    spec = Spec(dims=dims, objective=tuple(Term((d.name,), [0.0, v]) for d, v in zip(dims, values)),
                costs={"latency": tuple(Term((d.name,), [0.0, w]) for d, w in zip(dims, weights))})
    return spec, {"latency": capacity}


def _gap_example() -> tuple[Spec, dict[str, float]]:
    """A knapsack with a Lagrangian gap, so the presolve needs the backend, and one poor item it fixes."""
    return _knapsack([6.0, 5.0, 5.0, 4.0, 0.5], [4.0, 3.0, 3.0, 2.0, 5.0], 7.0)


def test_the_gap_example_needs_the_backend():
    spec, budgets = _gap_example()
    pre = presolve(spec, limits(budgets))
    assert pre.status == "reduced" and pre.bound > pre.incumbent[2]
    assert pre.kept["x4"] == (0,) and pre.spec.dim("x4").choices == (1,)  # the poor item is fixed out


def test_backend_without_solution_falls_back_to_the_incumbent(register):
    spec, budgets = _gap_example()
    pre = presolve(spec, limits(budgets))
    register("gives-up", lambda s, b, o: Answer(Status.TIME_LIMIT_NO_SOLUTION), features={"presolve"})
    result = mdp_opt.solve(spec, budgets, backend="gives-up")
    assert result.status is Status.FEASIBLE and result.objective == pre.incumbent[2]
    assert result.bound == pytest.approx(pre.bound) and result.stats["backend_status"] == "time_limit_no_solution"


def test_a_backend_claiming_optimal_below_the_incumbent_is_refused(register):
    spec, budgets = _gap_example()

    def worst_feasible(s, b, o):
        zero = {d: 0 for d in s.dim_names}
        return Answer(Status.OPTIMAL, zero, {}, objective=mdp_opt.evaluate(s, zero).value)
    register("liar", worst_feasible, features={"presolve"})
    with pytest.raises(BackendError, match="presolve found a feasible configuration"):
        mdp_opt.solve(spec, budgets, backend="liar")


def test_a_claimed_optimum_within_solver_tolerance_of_the_incumbent_yields_the_incumbent():
    spec, budgets = _gap_example()
    pre = presolve(spec, limits(budgets))
    assert pre.status == "reduced" and pre.incumbent is not None
    choice, active, value = pre.incumbent
    reduced_choice, reduced_active = pre.restrict(choice, active)
    # the backend returns the incumbent's own configuration but reports it 5e-9 (relative) lower, as
    # HiGHS does on float data; the answer is the incumbent, still optimal, and no error
    drifted = Answer(Status.OPTIMAL, reduced_choice, reduced_active, objective=value * (1 - 5e-9),
                     bound=value * (1 - 5e-9))
    combined = pre.lift(drifted)
    assert combined.status is Status.OPTIMAL and combined.objective == value
    far = Answer(Status.OPTIMAL, reduced_choice, reduced_active, objective=value * (1 - 1e-3), bound=value * (1 - 1e-3))
    with pytest.raises(BackendError, match="presolve found a feasible configuration"):
        pre.lift(far)


def test_memory_limit_skips_the_presolve_without_changing_the_spec():
    spec = Spec(dims=tuple(Dim(f"d{i}", (1, 2, 3, 4)) for i in range(6)),
                objective=(Term(tuple(f"d{i}" for i in range(6)), [[[[[[1.0] * 4] * 4] * 4] * 4] * 4] * 4),),
                costs={"latency": (Term(("d0",), [1.0, 2.0, 3.0, 4.0]),)})
    pre = presolve(spec, {"latency": 2.0}, memory_limit=1024)
    assert pre.status == "skipped" and pre.spec is spec and "memory limit" in pre.stats["reason"]


def test_real_instances_bound_and_incumbent_bracket_the_proven_optimum(instance):
    name, spec, optimum = instance
    pre = presolve(spec, limits(spec.budgets))
    assert pre.incumbent[2] <= optimum <= pre.bound
    assert pre.stats["choices_kept"] < pre.stats["choices_total"]
    reduced = mdp_opt.solve(pre.spec, spec.budgets, backend="dp", presolve=False)
    assert reduced.objective == optimum


def test_a_backend_taking_hints_gets_the_incumbent_or_the_users_surviving_hint(register):
    spec, budgets = _gap_example()
    pre = presolve(spec, limits(budgets))
    hints = []

    def hinted(s, b, options):
        hints.append(options.get("hint"))
        return brute_force(s, b)
    register("hinted", hinted, features={"presolve"})  # no hint feature: the presolve passes none
    register("hinted-too", hinted, features={"presolve", "hint"})
    mdp_opt.solve(spec, budgets, backend="hinted")
    assert hints.pop() is None
    result = mdp_opt.solve(spec, budgets, backend="hinted-too")
    assert hints.pop() == {"choice": pre.restrict(*pre.incumbent[:2])[0], "active": {}}
    assert result.stats["presolve"]["hint"] == "incumbent"
    # the user's own hint, in original indices, is translated when every choice it uses survived
    incumbent_choice = pre.incumbent[0]
    mdp_opt.solve(spec, budgets, backend="hinted-too", hint={"choice": incumbent_choice})
    assert hints.pop()["choice"] == pre.restrict(incumbent_choice, {})[0]
    removed = next((d, k) for d, kept in pre.kept.items() for k in range(spec.dim(d).size) if k not in kept)
    result = mdp_opt.solve(spec, budgets, backend="hinted-too", hint={"choice": {**incumbent_choice, removed[0]: removed[1]}})
    assert hints.pop()["choice"] == pre.restrict(incumbent_choice, {})[0]
    assert result.stats["presolve"]["hint"] == "incumbent"
    with pytest.raises(mdp_opt.SpecError, match=r"^option hint: choice.x0"):
        mdp_opt.solve(spec, budgets, backend="hinted-too", hint={"choice": {**incumbent_choice, "x0": 7}})


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-5, 5), st.integers(-5, 5)), min_size=1, max_size=25),
       st.integers(-3, 6))
def test_best_partner_search_equals_brute_force(moves, slack):
    variables, gains, spends = (np.array(column) for column in zip(*moves))
    partner = best_partners(variables, gains.astype(float), spends.astype(float), float(slack))
    for j in range(len(moves)):
        allowed = [i for i in range(len(moves)) if variables[i] != variables[j] and spends[i] <= slack - spends[j]]
        if not allowed:
            assert partner[j] == -1
        else:
            assert partner[j] in allowed and gains[partner[j]] == max(gains[i] for i in allowed)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-5, 5), st.integers(-5, 5)), min_size=1, max_size=25),
       st.integers(-3, 6), st.lists(st.integers(-5, 9), max_size=8), st.integers(1, 6))
def test_best_partners_skip_only_pairs_that_cannot_be_among_the_wanted_best(moves, slack, others, count):
    variables, gains, spends = (np.array(column) for column in zip(*moves))
    exact = best_partners(variables, gains.astype(float), spends.astype(float), float(slack))
    wanted = (np.array(others, dtype=float), count)
    partner = best_partners(variables, gains.astype(float), spends.astype(float), float(slack), wanted)
    pairs = np.where(exact >= 0, gains + gains[exact], -np.inf)
    candidates = np.sort(np.concatenate([wanted[0], pairs]))[::-1]
    kept_at_least = candidates[count - 1] if len(candidates) >= count else -np.inf
    for j in range(len(moves)):
        if partner[j] != exact[j]:
            assert partner[j] == -1 and pairs[j] < kept_at_least   # a pair no caller keeping `count` could keep
        if partner[j] >= 0:
            assert gains[partner[j]] == gains[exact[j]]


def test_a_presolve_using_the_whole_time_limit_returns_its_incumbent(register):
    spec, budgets = _gap_example()
    called = []
    register("never-reached", lambda s, b, o: called.append(s), features={"presolve"})
    result = mdp_opt.solve(spec, budgets, backend="never-reached", time_limit=1e-9)
    assert not called and result.stats["solved_by"] == "presolve"
    assert result.status in (Status.FEASIBLE, Status.TIME_LIMIT_NO_SOLUTION)
    if result.has_solution:
        assert result.gap > 0 and result.objective <= presolve(spec, limits(budgets)).bound


def test_a_graph_too_large_for_the_presolve_goes_to_the_backend_unchanged(register):
    dims = tuple(Dim(f"d{i}", tuple(range(1, 9))) for i in range(12))
    pairs = tuple(Term((a.name, b.name), np.ones((8, 8))) for i, a in enumerate(dims) for b in dims[i + 1:])
    spec = Spec(dims=dims, objective=pairs, costs={"latency": tuple(Term((d.name,), np.arange(8.0)) for d in dims)})
    seen = []

    def smallest(s, b, o):
        seen.append(s)
        return Answer(Status.FEASIBLE, {d.name: 0 for d in s.dims}, {}, objective=66.0)
    register("smallest", smallest, features={"presolve"})
    result = mdp_opt.solve(spec, {"latency": 1.0}, backend="smallest")
    assert seen == [spec] and result.status is Status.FEASIBLE and result.objective == 66.0
    assert result.stats["presolve"]["status"] == "skipped" and "entries" in result.stats["presolve"]["reason"]


def test_one_solve_stops_the_line_search_once_the_bound_can_gain_only_a_small_share_of_the_gap():
    spec = mdp_opt.examples.make("vit-h", choices=64)
    early = mdp_opt.solve(spec, "90%", backend="dp")
    with mock.patch.object(dual, "GAP_SHARE", 0.0):
        exact = mdp_opt.solve(spec, "90%", backend="dp")
    assert early.status is exact.status is Status.OPTIMAL and early.objective == exact.objective
    assert early.stats["presolve"]["passes"] < exact.stats["presolve"]["passes"]
    assert early.stats["presolve"]["bound"] >= exact.stats["presolve"]["bound"] - 1e-9 * abs(exact.objective)


def _in_reduced(spec: Spec, pre, choice, active) -> bool:
    """True when the configuration is one of the reduced spec's (up to dims whose choice changes nothing)."""
    return (all(choice[d] in pre.kept[d] for d in spec.dim_names if not _irrelevant(spec, pre, d))
            and all(active[b] == state for b, state in pre.fixed_blocks.items()))


@settings(max_examples=200)
@given(gapped_problems(), st.floats(0.0, 1.0))
def test_a_core_keeps_every_configuration_worth_its_floor_and_its_answer_lifts_to_a_valid_one(problem, share):
    spec, budget = problem
    budgets = mdp_opt.resolve_budgets(spec, budget)
    pre = presolve(spec, limits(budgets))
    if pre.status != "reduced" or pre.incumbent is None:
        return
    best, optima = all_optima(spec, budgets)
    floor = pre.incumbent[2] + share * (pre.bound - pre.incumbent[2])
    core = pre.core(floor)
    assert core.floor == floor and core.incumbent == pre.incumbent and core.bound == pre.bound
    assert _in_reduced(spec, core, *pre.incumbent[:2])
    assert core.stats["choices_kept"] <= pre.stats["choices_kept"]
    for choice, active, ev in every_configuration(spec, budgets):
        if ev.feasible and ev.value >= floor:
            assert _in_reduced(spec, core, choice, active), (choice, active, ev.value, floor)
    lifted = core.lift(brute_force(core.spec, core.limits))
    assert lifted.bound >= best - 1e-9 * max(1.0, abs(best))        # a valid bound of the original problem
    if lifted.objective >= floor:                                    # the core's optimum is worth its floor
        assert lifted.status is Status.OPTIMAL and close(lifted.objective, best)
    elif not close(lifted.objective, best):
        assert lifted.status is Status.FEASIBLE
    again = pre.improved(lifted)                                     # re-fixed against the core's answer
    check_presolved(spec, budgets, again, best, optima)
    check_presolved(spec, budgets, core.improved(lifted), best, optima)   # from the core too: the same masks
    if pre.bound > best:                  # a lower bound alone: the core re-fixed at the incumbent is the presolve's
        choice, active, value = pre.incumbent
        lower = core.improved(Answer(Status.FEASIBLE, choice, active, objective=value, bound=(pre.bound + best) / 2))
        assert lower.kept == pre.kept and lower.floor == value
    assert again.incumbent[2] >= lifted.objective - 1e-9 * max(1.0, abs(best))
    assert again.stats["choices_kept"] <= pre.stats["choices_kept"]
    assert again.bound <= pre.bound and (again.status == "optimal") == (relative_gap(again.bound, again.incumbent[2])
                                                                         <= mdp_opt.result.OPTIMALITY_GAP)


def _core_example() -> tuple[Spec, dict[str, float]]:
    """A knapsack whose presolve keeps 11 choices, with incumbent 26 (the optimum) and bound 28."""
    return _knapsack([6.0, 6.0, 6.0, 7.0, 5.0, 5.0, 3.0], [6.0, 6.0, 1.0, 1.0, 3.0, 2.0, 5.0], 12.0)


def test_a_core_whose_optimum_is_below_its_floor_bounds_by_the_floor_and_is_not_a_proof():
    spec, budgets = _core_example()
    pre = presolve(spec, limits(budgets))
    assert pre.status == "reduced" and pre.incumbent[2] == 26.0 and pre.bound == pytest.approx(28.0)
    core = pre.core(27.0)
    assert core.stats["choices_kept"] < pre.stats["choices_kept"] == 11
    lifted = core.lift(brute_force(core.spec, core.limits))
    assert lifted.status is Status.FEASIBLE and lifted.objective == 26.0 and lifted.bound == 27.0
    again = pre.improved(lifted)
    assert again.status == "reduced" and again.bound == 27.0 and again.incumbent == pre.incumbent
    assert again.lift(brute_force(again.spec, again.limits)).status is Status.OPTIMAL


def test_solve_runs_the_core_near_the_bound_first_on_a_large_reduced_problem(register, monkeypatch):
    spec, budgets = _core_example()
    calls = []
    register("spy-presolved", lambda s, b, o: (calls.append(sum(d.size for d in s.dims)), brute_force(s, b))[1],
             features={"presolve"})
    result = mdp_opt.solve(spec, budgets, backend="spy-presolved")   # 11 choices: below CORE_MIN_CHOICES
    assert calls == [11] and "core" not in result.stats["presolve"]
    calls.clear()
    monkeypatch.setattr(presolve_module, "CORE_MIN_CHOICES", 0)
    monkeypatch.setattr(presolve_module, "CORE_GAP_SHARE", 0.5)
    result = mdp_opt.solve(spec, budgets, backend="spy-presolved")
    assert result.status is Status.OPTIMAL and result.objective == 26.0
    core = result.stats["presolve"]["core"]
    assert calls == [core["choices"], 11] and core["choices"] < 11                 # the core, then the rest
    assert core["status"] == "feasible" and core["value"] == 26.0 and core["floor"] == pytest.approx(27.0)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=gapped_problems(), share=st.floats(0.0, 1.0))
def test_solve_with_the_core_first_matches_the_unpresolved_optimum(problem, share, register, monkeypatch):
    spec, budget = problem
    reference = mdp_opt.solve(spec, budget, backend="brute")
    register("presolved-brute", lambda s, b, o: brute_force(s, b), features={"presolve"})
    monkeypatch.setattr(presolve_module, "CORE_MIN_CHOICES", 0)
    monkeypatch.setattr(presolve_module, "CORE_GAP_SHARE", share)
    result = mdp_opt.solve(spec, budget, backend="presolved-brute")
    assert result.status is reference.status
    if reference.has_solution:
        assert close(result.objective, reference.objective)
        assert result.bound == pytest.approx(result.objective, rel=1e-9, abs=1e-9)
