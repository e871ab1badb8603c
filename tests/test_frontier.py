"""The value-versus-budget frontier: monotone, equal to solve() at every budget, CLI table/JSON/plot."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Dim, Spec, SpecError, Status, Term
from mdp_opt.cli import main
from mdp_opt.frontier import frontier
from mdp_opt.plots import axis_label, plot_frontier
from strategies import specs
from test_spec import EXAMPLE


def non_decreasing(values) -> bool:
    return all(b >= a - 1e-9 * max(1.0, abs(a)) for a, b in zip(values, values[1:]))


@settings(max_examples=40)
@given(specs(max_resources=2), st.sampled_from(["dp", "brute"]), st.integers(1, 7))
def test_values_never_decrease_and_equal_solve_at_every_budget(spec, backend, points):
    resource = sorted(spec.costs)[0]
    others = {r: b for r, b in spec.budgets.items() if r != resource}
    out = frontier(spec, resource, points=points, backend=backend)
    values = [p.objective for p in out]
    assert all(p.status is Status.OPTIMAL for p in out)
    assert non_decreasing(values)
    for p in out:
        reference = mdp_opt.solve(spec, {resource: p.budget, **others}, backend="brute")
        assert p.objective == pytest.approx(reference.objective, rel=1e-9, abs=1e-9)
    if out:
        assert out[-1].budget == pytest.approx(max(spec.full_cost(resource), out[0].budget))
        assert len(out) == points


@settings(max_examples=30)
@given(specs(integer=False, max_resources=1), st.sampled_from([0.5, 2.0]))
def test_rounded_frontier_is_monotone_and_honest(spec, resolution):
    out = frontier(spec, "latency", points=6, resolution=resolution)
    assert non_decreasing([p.objective for p in out if p.objective is not None])
    for p in out:
        reference = mdp_opt.solve(spec, {"latency": p.budget}, backend="brute")
        if p.status is Status.OPTIMAL:
            assert p.objective == pytest.approx(reference.objective, rel=1e-9, abs=1e-9)
        elif p.objective is not None:
            assert p.objective <= reference.objective + 1e-9
            assert p.result.bound >= reference.objective - 1e-9


def test_other_budgets_are_enforced():
    spec = Spec.from_dict({**EXAMPLE, "costs": {**EXAMPLE["costs"], "params": [
        {"dims": ["b1.conv1"], "table": [1, 2, 3, 4], "block": "b1"}]}, "budgets": {"params": 2}})
    out = frontier(spec, "latency", points=5)
    assert out and all(p.costs["params"] <= 2 for p in out)
    for p in out:
        reference = mdp_opt.solve(spec, {"latency": p.budget, "params": 2}, backend="brute")
        assert p.objective == pytest.approx(reference.objective)


def test_budgets_below_the_cheapest_are_infeasible():
    spec = Spec.from_dict(EXAMPLE)                  # cheapest: stem + constant = 0.45
    out = frontier(spec, budgets=[0.7, 0.1, 0.45])
    assert [p.budget for p in out] == [0.1, 0.45, 0.7]
    assert [p.status for p in out] == [Status.INFEASIBLE, Status.OPTIMAL, Status.OPTIMAL]
    assert out[1].result.active == {"b1": False}


def test_bad_arguments_name_the_field():
    spec = Spec.from_dict(EXAMPLE)
    with pytest.raises(SpecError, match="^resource"):
        frontier(spec, "flops")
    with pytest.raises(SpecError, match="^points"):
        frontier(spec, points=0)
    with pytest.raises(SpecError, match=r"^budgets\[1\]"):
        frontier(spec, budgets=[1.0, float("nan")])


def test_real_instance_frontier_meets_the_documented_optimum():
    spec = mdp_opt.examples.make("mdp-rn50-step10")
    budget = spec.budgets["latency"]
    out = frontier(spec, budgets=[0.5 * budget, budget])
    assert out[1].objective == mdp_opt.examples.PROVEN_OPTIMA["mdp-rn50-step10"]
    assert out[0].objective < out[1].objective


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(EXAMPLE))
    return path


def test_cli_json_is_a_list_of_points(spec_file, capsys):
    assert main(["frontier", str(spec_file), "--points", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 4
    assert all(set(p) == {"budget", "objective", "costs", "status"} for p in out)
    assert [p["status"] for p in out] == ["optimal"] * 4
    assert out[-1]["budget"] == pytest.approx(Spec.from_dict(EXAMPLE).full_cost("latency"))
    assert non_decreasing([p["objective"] for p in out])


def test_cli_table_and_explicit_budgets(spec_file, capsys):
    assert main(["frontier", str(spec_file), "--budgets", "0.1,60%,0.7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["budget", "%", "full", "objective"]
    rows = lines[2:5]
    assert rows[0].split()[3] == "infeasible"
    assert [row.split()[3] for row in rows[1:]] == ["optimal", "optimal"]


def test_cli_plot_writes_a_png(spec_file, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "frontier.png"
    assert main(["frontier", str(spec_file), "--points", "5", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot written" in capsys.readouterr().out


def test_plot_labels_axes_and_marks_the_spec_budget():
    pytest.importorskip("matplotlib")
    spec = Spec.from_dict({**EXAMPLE, "meta": {"units": {"latency": "ms"}}})
    figure = plot_frontier(frontier(spec, points=5), spec=spec)
    ax = figure.axes[0]
    assert ax.get_xlabel() == "latency budget (ms)"
    assert ax.get_ylabel().startswith("objective")
    assert any("spec budget = 0.7" in t.get_text() for t in ax.get_legend().get_texts())
    assert axis_label(None, "params") == "params budget (spec units)"
    assert axis_label(None, "latency_ms") == "latency_ms budget (ms)"


def test_cli_rejects_a_bad_budget(spec_file, capsys):
    assert main(["frontier", str(spec_file), "--budgets", "fast"]) == 2
    assert "--budgets" in capsys.readouterr().err


def test_fallback_to_repeated_solves_matches_one_dp_pass():
    spec = Spec(dims=(Dim("a", (1, 2, 3)), Dim("b", (1, 2))),
                objective=(Term(("a",), np.array([1.0, 2.5, 3.0])), Term(("b",), np.array([0.5, 2.0]))),
                costs={"latency": (Term(("a", "b"), np.array([[1.0, 2.0], [2.0, 3.5], [3.0, 5.0]])),)})
    by_dp = frontier(spec, points=9)
    by_solving = frontier(spec, points=9, backend="brute")
    assert [p.budget for p in by_dp] == pytest.approx([p.budget for p in by_solving])
    assert [p.objective for p in by_dp] == pytest.approx([p.objective for p in by_solving])


def test_too_costly_one_pass_falls_back_to_one_solve_per_budget(monkeypatch):
    spec = Spec.from_dict(EXAMPLE)
    one_pass = frontier(spec, points=6)
    module = importlib.import_module("mdp_opt.frontier")   # the module, even if a function shares its name
    monkeypatch.setattr(importlib.import_module("mdp_opt.backends.dp"), "PAIRS_PER_SOLVE", 0)
    by_solving = frontier(spec, points=6)
    assert {p.result.stats["frontier"] for p in one_pass} == {module.ONE_PASS}
    assert {p.result.stats["frontier"] for p in by_solving} == {module.SHARED_PRESOLVE}
    assert [p.objective for p in by_solving] == pytest.approx([p.objective for p in one_pass])


def test_one_pass_out_of_time_raises_and_the_cli_says_so(spec_file, capsys):
    import mdp_opt.examples
    spec = mdp_opt.examples.make("chain", depth=6, choices=8)
    with pytest.raises(TimeoutError, match="time_limit"):
        frontier(spec, points=100, time_limit=1e-9)
    assert main(["frontier", "--example", "chain", "--points", "100", "--time-limit", "1e-9"]) == 1
    assert "raise --time-limit" in capsys.readouterr().err


def test_an_ambiguous_or_missing_resource_is_named():
    from mdp_opt import Dim, Spec, SpecError, Term
    dims = (Dim("a", (1, 2)),)
    two = Spec(dims=dims, objective=(Term(("a",), [1.0, 2.0]),),
               costs={"flops": (Term(("a",), [1.0, 2.0]),), "params": (Term(("a",), [1.0, 2.0]),)})
    with pytest.raises(SpecError, match=r"^resource: the spec has several resources \['flops', 'params'\]"):
        frontier(two)
    assert [p.budget for p in frontier(two, resource="flops", budgets=[2.0])] == [2.0]
    none = Spec(dims=dims, objective=(Term(("a",), [1.0, 2.0]),), costs={})
    with pytest.raises(SpecError, match=r"^resource: the spec has no cost terms"):
        frontier(none)


# ---- the shared-presolve path: one solve per budget, sharing the presolve's work ----------------------

from mdp_opt.frontier import ONE_SOLVE_PER_BUDGET, SHARED_PRESOLVE  # noqa: E402
from mdp_opt.presolve import SharedPresolve  # noqa: E402

DP = importlib.import_module("mdp_opt.backends.dp")


def same_answer(point, reference) -> None:
    assert point.status is reference.status
    if reference.objective is None:
        assert point.objective is None
    else:
        assert point.objective == pytest.approx(reference.objective, rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(specs(max_resources=2), st.sampled_from(["dp", "cpsat"]), st.integers(1, 6))
def test_shared_frontier_equals_independent_solves_and_brute_force(spec, backend, points):
    resource = sorted(spec.costs)[0]
    others = {r: b for r, b in spec.budgets.items() if r != resource}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DP, "PAIRS_PER_SOLVE", 0)       # dp: no one-pass frontier, so the shared path runs
        out = frontier(spec, resource, points=points, backend=backend)
    full = spec.full_cost(resource)
    budgets = [p.budget for p in out] + [0.5 * out[0].budget if out else 0.5 * full]   # one below the cheapest
    fast = out + frontier(spec, resource, budgets=budgets[-1:], backend=backend)
    for p, budget in zip(fast, budgets):
        alone = mdp_opt.solve(spec, {resource: budget, **others}, backend=backend)
        same_answer(p, alone)
        same_answer(p, mdp_opt.solve(spec, {resource: budget, **others}, backend="brute"))
    assert non_decreasing([p.objective for p in out])


def test_real_instance_frontier_shares_passes_and_matches_independent_solves():
    spec = mdp_opt.examples.make("mdp-rn50-step10")
    full = spec.full_cost("latency")
    budgets = [f * full for f in (0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.2)]
    out = frontier(spec, budgets=budgets, backend="cpsat")
    assert all(p.result.stats["frontier"] == SHARED_PRESOLVE for p in out)
    alone = [mdp_opt.solve(spec, {"latency": b}, backend="cpsat") for b in budgets]
    for p, reference in zip(out, alone):
        same_answer(p, reference)
    shared = out[-1].result.stats["shared_presolve"]
    assert shared["solves"] == len(budgets)
    assert shared["passes_reused"] > 0
    # fewer elimination passes in all than the independent solves made
    assert shared["passes_run"] < sum(r.stats["presolve"]["passes"] for r in alone)
    # above the full cost everything is kept, proven by the presolve alone
    assert out[-1].result.stats["solved_by"] == "presolve" and out[-1].status is Status.OPTIMAL


def test_share_false_or_presolve_false_solve_each_budget_alone():
    spec = Spec.from_dict(EXAMPLE)
    out = frontier(spec, points=3, backend="cpsat", presolve=False)
    assert {p.result.stats["frontier"] for p in out} == {ONE_SOLVE_PER_BUDGET}
    alone = frontier(spec, points=3, backend="cpsat", share=False)
    assert {p.result.stats["frontier"] for p in alone} == {ONE_SOLVE_PER_BUDGET}
    shared = frontier(spec, points=3, backend="cpsat")
    assert {p.result.stats["frontier"] for p in shared} == {SHARED_PRESOLVE}
    assert [p.objective for p in shared] == pytest.approx([p.objective for p in alone])
    with pytest.raises(SpecError, match="^share"):
        frontier(spec, points=3, share="no")


def test_a_shared_presolve_of_another_spec_is_refused():
    spec = Spec.from_dict(EXAMPLE)
    other = mdp_opt.examples.make("mdp-rn50-step10")
    with pytest.raises(SpecError, match="^presolve: .*another spec"):
        mdp_opt.solve(spec, backend="dp", presolve=SharedPresolve(other))
    with pytest.raises(SpecError, match="^presolve"):
        mdp_opt.solve(spec, backend="dp", presolve="yes")


def test_shared_presolve_counts_reused_passes():
    spec = mdp_opt.examples.make("mdp-rn50-step10")
    shared = SharedPresolve(spec)
    first = mdp_opt.solve(spec, "40%", backend="dp", presolve=shared)
    run = shared.stats["passes_run"]
    again = mdp_opt.solve(spec, "40%", backend="dp", presolve=shared)
    assert again.objective == first.objective and again.status is Status.OPTIMAL
    assert shared.stats["passes_run"] == run              # the same budget: every pass is reused
    assert again.stats["presolve"]["passes"] < first.stats["presolve"]["passes"]   # it starts at the bracket
    assert shared.stats["passes_reused"] > 0


def test_worker_processes_give_the_same_points_each_sharing_its_presolve():
    spec = mdp_opt.examples.make("mdp-rn50-step10")
    full = spec.full_cost("latency")
    budgets = [f * full for f in (0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 1.1)]
    here = frontier(spec, budgets=budgets, backend="cpsat")
    spread = frontier(spec, budgets=budgets, backend="cpsat", workers=3)
    assert [p.budget for p in spread] == [p.budget for p in here]
    for p, reference in zip(spread, here):
        same_answer(p, reference)
        assert p.result.stats["frontier"] == SHARED_PRESOLVE
    # worker w took budgets w, w + 3, ...: three solves for the first worker, two for the others
    assert sorted(p.result.stats["shared_presolve"]["solves"] for p in spread) == [2, 2, 2, 2, 3, 3, 3]


def test_bad_worker_counts_are_refused_naming_the_field():
    spec = Spec.from_dict(EXAMPLE)
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(SpecError, match="^workers"):
            frontier(spec, points=3, backend="cpsat", workers=bad)
    for clash in ({"ray": "local:2"}, {"share": False}):
        with pytest.raises(SpecError, match="^workers"):
            frontier(spec, points=3, backend="cpsat", workers=2, **clash)


def test_cli_workers_give_the_same_json(spec_file, capsys):
    assert main(["frontier", str(spec_file), "--points", "4", "--json", "--backend", "cpsat"]) == 0
    here = json.loads(capsys.readouterr().out)
    assert main(["frontier", str(spec_file), "--points", "4", "--json", "--backend", "cpsat", "--workers", "2"]) == 0
    spread = json.loads(capsys.readouterr().out)
    assert [p["status"] for p in spread] == [p["status"] for p in here] == ["optimal"] * 4
    assert [p["objective"] for p in spread] == pytest.approx([p["objective"] for p in here])


@pytest.mark.parametrize("name, choices, fewer", [("resnet152", 64, True), ("vit-h", 16, False)])
def test_a_frontier_of_a_large_spec_stops_each_line_search_once_little_of_the_gap_is_left(name, choices, fewer):
    """From 4,000 choices each budget's line search stops once its bound can gain at most 1% of the gap (fewer full
    passes, the same proven points); below, passes are cheap and every search runs to the exact multiplier."""
    from unittest import mock
    from mdp_opt.presolve import dual
    spec = mdp_opt.examples.make(name, choices=choices)
    assert (sum(d.size for d in spec.dims) >= dual.WARM_START_MIN_CHOICES) is fewer
    early = mdp_opt.frontier(spec, "latency", points=6, backend="cpsat")
    with mock.patch.object(dual, "FRONTIER_GAP_SHARE", 0.0):
        exact = mdp_opt.frontier(spec, "latency", points=6, backend="cpsat")
    assert [p.status for p in early] == [Status.OPTIMAL] * 6 == [p.status for p in exact]
    assert [p.objective for p in early] == pytest.approx([p.objective for p in exact], rel=1e-9)
    passes = [points[-1].result.stats["shared_presolve"]["passes_run"] for points in (early, exact)]
    assert (passes[0] < passes[1]) if fewer else (passes[0] == passes[1])
