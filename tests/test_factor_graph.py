"""Factor-graph engine: elimination orders, exact max-sum and max-marginals against brute force, memory cap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt import Dim, Spec, Term, factor_graph
from mdp_opt.factor_graph import EliminationPlan, SpecGraph, TableTooLarge, elimination_order
from reference import every_configuration
from strategies import specs


@st.composite
def factor_graphs(draw):
    """(sizes, scopes, tables): up to 6 variables of 1-3 states, up to 7 factors of arity 0-3."""
    n = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    scopes = draw(st.lists(st.lists(st.integers(0, n - 1), max_size=3, unique=True).map(tuple), max_size=7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    integer = draw(st.booleans())  # integer tables make ties, which the argmax must handle
    tables = [rng.integers(-3, 4, size=[sizes[v] for v in s]).astype(float) if integer
              else rng.normal(size=[sizes[v] for v in s]) for s in scopes]
    return sizes, scopes, tables


def brute_max_sum(sizes, scopes, tables):
    """(best total, per variable and state the best total using it) by enumeration."""
    best = -np.inf
    marginals = [np.full(s, -np.inf) for s in sizes]
    for a in itertools.product(*[range(s) for s in sizes]):
        total = sum(float(t[tuple(a[v] for v in s)]) for t, s in zip(tables, scopes))
        best = max(best, total)
        for v, state in enumerate(a):
            marginals[v][state] = max(marginals[v][state], total)
    return best, marginals


def total_of(assignment, scopes, tables):
    return sum(float(t[tuple(assignment[v] for v in s)]) for t, s in zip(tables, scopes))


@settings(max_examples=100)
@given(factor_graphs(), st.sampled_from(["min-fill", "min-degree"]))
def test_max_sum_and_max_marginals_equal_brute_force(graph, heuristic):
    sizes, scopes, tables = graph
    best, marginals = brute_max_sum(sizes, scopes, tables)
    plan = EliminationPlan(sizes, scopes, heuristic=heuristic)
    value, assignment = plan.max_sum(tables)
    assert value == pytest.approx(best, abs=1e-9)
    assert total_of(assignment, scopes, tables) == pytest.approx(best, abs=1e-9)
    mm = plan.max_marginals(tables)
    assert mm.value == pytest.approx(best, abs=1e-9)
    assert total_of(mm.assignment, scopes, tables) == pytest.approx(best, abs=1e-9)
    for v in range(len(sizes)):
        np.testing.assert_allclose(mm.marginals[v], marginals[v], atol=1e-9)


@settings(max_examples=30)
@given(factor_graphs(), st.randoms())
def test_any_given_order_is_exact(graph, random):
    sizes, scopes, tables = graph
    order = list(range(len(sizes)))
    random.shuffle(order)
    best, marginals = brute_max_sum(sizes, scopes, tables)
    mm = EliminationPlan(sizes, scopes, order=order).max_marginals(tables)
    assert mm.value == pytest.approx(best, abs=1e-9)
    for v in range(len(sizes)):
        np.testing.assert_allclose(mm.marginals[v], marginals[v], atol=1e-9)


@settings(max_examples=60)
@given(factor_graphs(), st.data())
def test_gated_steps_compute_only_the_active_half_and_stay_exact(graph, data):
    """Variables of 2 states declared as gates (every factor naming one is 0 at its state 0) let steps skip
    that half; values, maximisers and max-marginals still equal brute force."""
    sizes, scopes, tables = graph
    gates = {v for v in range(len(sizes)) if sizes[v] == 2 and data.draw(st.booleans())}
    tables = [t.copy() for t in tables]
    zero_at = []
    for t, scope in zip(tables, scopes):
        mine = tuple(v for v in scope if v in gates)
        for v in mine:
            index = [slice(None)] * len(scope)
            index[scope.index(v)] = 0
            t[tuple(index)] = 0.0
        zero_at.append(mine)
    best, marginals = brute_max_sum(sizes, scopes, tables)
    plan = EliminationPlan(sizes, scopes, zero_at=zero_at)
    value, assignment = plan.max_sum(tables)
    assert value == pytest.approx(best, abs=1e-9)
    assert total_of(assignment, scopes, tables) == pytest.approx(best, abs=1e-9)
    mm = plan.max_marginals(tables)
    for v in range(len(sizes)):
        np.testing.assert_allclose(mm.marginals[v], marginals[v], atol=1e-9)


def test_spec_graph_declares_its_block_gates_and_the_plan_uses_them():
    spec = mdp_opt.examples.make("resnet50", blocks=(3, 3), choices=4)
    graph = SpecGraph(spec)
    n = len(spec.dims)
    assert any(graph.zero_at) and all(v >= n for z in graph.zero_at for v in z)
    assert any(step.gate_axis is not None for step in graph.plan.steps)
    budget = 0.5 * spec.full_cost("latency")
    assert mdp_opt.solve(spec, budget, backend="dp", presolve=True).objective == pytest.approx(
        mdp_opt.solve(spec, budget, backend="dp", presolve=False).objective)


def test_elimination_order_keeps_chains_and_stars_at_treewidth_one():
    chain = [(i, i + 1) for i in range(9)]
    star = [(0, i) for i in range(1, 10)]
    for scopes in (chain, star):
        for heuristic in ("min-fill", "min-degree"):
            order = elimination_order([4] * 10, scopes, heuristic)
            assert sorted(order) == list(range(10))
            plan = EliminationPlan([4] * 10, scopes, order=order)
            assert max(len(step.shape) for step in plan.steps) == 2


def test_min_fill_eliminates_fill_free_variables_first():
    # a 4-cycle 0-1-2-3 with a pendant chain 3-4-5-6 hanging off 3: every order fills one chord of the
    # cycle; min-fill eliminates the chain first, so its largest table stays a triangle
    scopes = [(0, 1), (1, 2), (2, 3), (3, 0), (3, 4), (4, 5), (5, 6)]
    order = elimination_order([2] * 7, scopes, "min-fill")
    assert order[:3] == [6, 5, 4]
    assert max(len(s.shape) for s in EliminationPlan([2] * 7, scopes, order=order).steps) == 3


def test_weighted_degree_breaks_fill_ties():
    # a path 0-1-2: eliminating either end adds no fill; the end with the smaller table goes first
    assert elimination_order([2, 3, 50], [(0, 1), (1, 2)])[0] == 0
    assert elimination_order([50, 3, 2], [(0, 1), (1, 2)])[0] == 2


@pytest.mark.parametrize("call,match", [
    (lambda: elimination_order([2, 2], [(0, 1)], "greedy"), "heuristic"),
    (lambda: elimination_order([2, 0], [(0, 1)]), r"sizes\[1\]"),
    (lambda: elimination_order([2, True], [(0, 1)]), r"sizes\[1\]"),
    (lambda: elimination_order([2, 2], [(0, 2)]), r"scopes\[0\]"),
    (lambda: EliminationPlan([2, 2], [(0, 0)]), r"scopes\[0\]"),
    (lambda: EliminationPlan([2, 2], [(0, 1)], order=[0, 0]), "order"),
    (lambda: EliminationPlan([2, 2], [(0, 1)]).max_sum([np.zeros((2, 3))]), r"tables\[0\]"),
    (lambda: EliminationPlan([2, 2], [(0, 1)]).max_sum([]), "tables"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_memory_cap_refuses_before_computing_and_names_the_table_size():
    dense = [(i, j) for i in range(12) for j in range(i + 1, 12)]  # a clique: some step holds all 12 variables
    with pytest.raises(TableTooLarge, match=r"12 variables .*4,096 entries, 32.0 KB.*memory limit of 1.0 KB"):
        EliminationPlan([2] * 12, dense, memory_limit=1024)
    with pytest.raises(TableTooLarge, match=r"16 x 16 .* = 1,099,511,627,776 entries, 8.0 TB"):
        EliminationPlan([16] * 10, [(i, j) for i in range(10) for j in range(i + 1, 10)])
    assert EliminationPlan([2] * 12, dense, memory_limit=4096 * 8).steps  # exactly at the cap is allowed


def _brute_lagrangian(spec: Spec, lambdas: dict[str, float]) -> float:
    return max(ev.value - sum(lam * ev.costs[r] for r, lam in lambdas.items())
               for _, _, ev in every_configuration(spec, {}))


@settings(max_examples=40)
@given(specs(max_configurations=2000), st.lists(st.sampled_from([0.0, 0.3, 1.0, 7.5]), min_size=2, max_size=2))
def test_spec_graph_maximises_the_lagrangian_of_a_spec(spec, weights):
    lambdas = dict(zip(spec.resources, weights))
    graph = SpecGraph(spec)
    value, assignment = graph.max_sum(lambdas)
    assert value == pytest.approx(_brute_lagrangian(spec, lambdas), abs=1e-9)
    choice, active = graph.configuration(assignment)
    ev = mdp_opt.evaluate(spec, choice, active, {})
    own_value, own_costs = graph.evaluate(assignment)
    assert own_value == pytest.approx(ev.value, abs=1e-9)
    assert own_costs == pytest.approx(ev.costs, abs=1e-9)
    assert own_value - sum(lam * own_costs[r] for r, lam in lambdas.items()) == pytest.approx(value, abs=1e-9)


@settings(max_examples=100)
@given(specs(max_configurations=2000), st.lists(st.sampled_from([0.0, 0.3, 1.0, 7.5]), min_size=2, max_size=2),
       st.integers(1, 12))
def test_sliced_elimination_gives_the_same_messages_and_maximiser(spec, weights, slice_entries):
    """Large clique tables are built and maximised in slices (`SLICE_ENTRIES`); with tiny slices every step
    of every spec is sliced (gated steps and weighted tables too, upward and downward) and neither the pass
    nor the max-marginals may change at all."""
    lambdas = dict(zip(spec.resources, weights))
    whole, whole_mm = SpecGraph(spec).max_sum(lambdas), SpecGraph(spec).max_marginals(lambdas)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(factor_graph, "SLICE_ENTRIES", slice_entries)
        sliced, sliced_mm = SpecGraph(spec).max_sum(lambdas), SpecGraph(spec).max_marginals(lambdas)
    assert sliced[0] == whole[0]
    np.testing.assert_array_equal(sliced[1], whole[1])
    assert sliced_mm.value == whole_mm.value
    for mine, theirs in zip(sliced_mm.marginals, whole_mm.marginals):
        np.testing.assert_array_equal(mine, theirs)


@settings(max_examples=60)
@given(specs(max_configurations=2000), st.lists(st.sampled_from([0.0, 0.3, 1.0, 7.5]), min_size=4, max_size=4))
def test_max_marginals_after_a_pass_reuse_its_upward_half_only_at_the_same_multipliers(spec, weights):
    """`max_marginals` right after `max_sum` at the same multipliers reuses that pass's upward messages; after
    a pass at other multipliers it must not. Either way the result equals a fresh graph's, exactly."""
    first, second = dict(zip(spec.resources, weights[:2])), dict(zip(spec.resources, weights[2:]))
    for before, at in ((first, first), (first, second)):
        graph = SpecGraph(spec)
        graph.max_sum(before)
        reused, fresh = graph.max_marginals(at), SpecGraph(spec).max_marginals(at)
        assert reused.value == fresh.value
        np.testing.assert_array_equal(reused.assignment, fresh.assignment)
        for mine, theirs in zip(reused.marginals, fresh.marginals):
            np.testing.assert_array_equal(mine, theirs)


def test_spec_graph_gates_block_terms_and_allows_a_dim_and_block_of_the_same_name():
    spec = Spec(dims=(Dim("x", (1, 2)),), blocks=("x",),
                objective=(Term(("x",), [1.0, 5.0], "x"), Term((), 2.0)),
                costs={"latency": (Term(("x",), [1.0, 3.0], "x"),)})
    graph = SpecGraph(spec)
    value, assignment = graph.max_sum({"latency": 2.0})  # active: best 1-2 = -1 or 5-6 = -1; removed: 0
    assert value == pytest.approx(2.0)
    assert graph.configuration(assignment)[1] == {"x": False}
    mm = graph.plan.max_marginals(graph.tables({"latency": 2.0}))
    np.testing.assert_allclose(mm.marginals[1], [2.0, 1.0])  # block removed / active


def test_a_clique_receiving_many_small_messages_sums_them_at_their_own_size_first():
    """A stage dim shared by 20 residual blocks: its step receives a message over the stage dim alone from each
    block. They are folded into the one larger input that covers them (summed at 6 entries, not at the clique's
    216), and the folded inputs add up to the same clique table."""
    graph = SpecGraph(mdp_opt.examples.make("resnet50", blocks=(1, 1, 20, 1), choices=6))
    plan = graph.plan
    tables = [graph.combination(f, {"latency": 3.0}) for f in range(len(graph.value_tables))]
    messages, _ = plan._upward(tables)
    step = max(plan.steps, key=lambda s: len(s.factors) + len(s.messages))
    raw = ([tables[f].reshape(shape) for f, shape in step.factors]
           + [messages[j].reshape(shape) for j, shape in step.messages])
    folded = plan._inputs(step, tables, messages)
    assert len(raw) >= 20 and len(folded) <= 3
    dense = [p.materialise() if isinstance(p, factor_graph.Combination) else p for p in raw]
    np.testing.assert_allclose(EliminationPlan._sum(folded, step.shape, writable=True),
                               sum(np.broadcast_to(p, step.shape) for p in dense), rtol=1e-12)
