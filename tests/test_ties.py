"""`ties.keep_more`: the value never changes, the configuration keeps at least as much and stays within limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import mdp_opt
from mdp_opt.budgets import limits
from mdp_opt.ties import keep_more, keep_score
from strategies import problems


def feasible_start(spec, budget, data):
    """(limits, choice, active, its evaluation) of a drawn configuration within the budget, or None."""
    caps = limits(mdp_opt.resolve_budgets(spec, budget))
    choice = {d.name: data.draw(st.integers(0, d.size - 1)) for d in spec.dims}
    active = {b: data.draw(st.booleans()) for b in spec.block_names}
    before = mdp_opt.evaluate(spec, choice, active)
    if not all(before.costs[r] <= limit for r, limit in caps.items()):
        return None
    return caps, choice, active, before


@settings(max_examples=80, deadline=None)
@given(problem=problems(), data=st.data())
def test_keep_more_never_lowers_the_value_and_keeps_at_least_as_much(problem, data):
    spec, budget = problem
    start = feasible_start(spec, budget, data)
    if start is None:
        return
    caps, choice, active, before = start
    new_choice, new_active, moves = keep_more(spec, caps, choice, active)
    after = mdp_opt.evaluate(spec, new_choice, new_active)
    assert after.value >= before.value
    assert all(after.costs[r] <= limit for r, limit in caps.items())
    assert keep_score(spec, new_choice, new_active) >= keep_score(spec, choice, active)
    assert (moves == 0) == ((new_choice, new_active) == (choice, active))


def test_the_reference_answer_is_not_moved_by_the_tie_break_when_it_keeps_everything():
    spec = mdp_opt.examples.make("chain", depth=3, choices=3)
    result = mdp_opt.solve(spec, "100%", backend="brute")
    assert result.stats["ties"] == {"moves": 0} and (result.choice, result.active) == spec.full_configuration()


def plain_keep_more(spec, caps, choice, active):
    """keep_more's moves with every candidate evaluated exactly (no estimate): the reference."""
    choice, active = dict(choice), dict(active)
    value = mdp_opt.evaluate(spec, choice, active).value

    def acceptable(c, a):
        ev = mdp_opt.evaluate(spec, c, a)
        return ev.value >= value and all(ev.costs[r] <= limit for r, limit in caps.items())
    full_choice, full_active = spec.full_configuration()
    if (full_choice, full_active) == (choice, active):
        return choice, active
    if acceptable(full_choice, full_active):
        return full_choice, full_active
    improved = True
    while improved:
        improved = False
        for d in spec.dims:
            for k in sorted({d.size - 1, choice[d.name] + 1}, reverse=True):
                if choice[d.name] < k < d.size and acceptable({**choice, d.name: k}, active):
                    choice, improved = {**choice, d.name: k}, True
                    break
        for b in spec.block_names:
            if not active[b] and acceptable(choice, {**active, b: True}):
                active, improved = {**active, b: True}, True
    return choice, active


@settings(max_examples=80, deadline=None)
@given(problem=problems(), data=st.data())
def test_the_move_estimate_rules_out_no_move_the_exact_evaluation_accepts(problem, data):
    spec, budget = problem
    start = feasible_start(spec, budget, data)
    if start is None:
        return
    caps, choice, active, before = start
    new_choice, new_active, _ = keep_more(spec, caps, choice, active)
    assert (new_choice, new_active) == plain_keep_more(spec, caps, choice, active)
