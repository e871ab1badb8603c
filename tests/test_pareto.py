"""The dominance filters behind the dp backend's Pareto sets (`mdp_opt.backends.pareto`): exactly the
non-dominated pairs survive, whatever the number of resources, and the long filters stop when told."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_opt.backends import pareto


@pytest.mark.parametrize("resources", [1, 2, 3])
def test_pareto_filter_keeps_exactly_the_non_dominated_pairs(resources):
    """Across block boundaries, with ties and duplicates: survivors are exactly one copy of each pair that no
    other pair of its state dominates."""
    rng = np.random.default_rng(resources)
    n = 1500
    state = np.sort(rng.integers(0, 3, n))
    cost = rng.integers(0, 40, (n, resources)).astype(float)
    value = rng.integers(0, 40, n).astype(float)
    kept = pareto.pareto(state, cost, value)
    expected = set()
    for i in range(n):
        same = state == state[i]
        no_worse = same & np.all(cost <= cost[i], axis=1) & (value >= value[i])
        better = np.any(cost < cost[i], axis=1) | (value > value[i])
        if not np.any(no_worse & better):
            expected.add((state[i], *cost[i], value[i]))
    got = [(state[i], *cost[i], value[i]) for i in kept]
    assert len(got) == len(set(got)) and set(got) == expected


@pytest.mark.parametrize("sealed, recent, largest", [(4, 8, 16), (4, 8, 1 << 16), (64, 512, 1 << 16)])
@pytest.mark.parametrize("integer", [True, False])
def test_three_resource_filter_with_large_fronts_keeps_exactly_the_non_dominated_pairs(sealed, recent, largest,
                                                                                     integer, monkeypatch):
    """Values that grow with the costs make most pairs non-dominated, so survivors are sealed into many trees
    (merged up to `largest` survivors; the latest `recent` survivors also compared pair by pair); with integer
    costs and values, ties and duplicates cross the trees' edges."""
    monkeypatch.setattr(pareto, "SEALED", sealed)
    monkeypatch.setattr(pareto, "RECENT", recent)
    monkeypatch.setattr(pareto, "LARGEST_TREE", largest)
    rng = np.random.default_rng(sealed + integer)
    n = 2500
    state = np.sort(rng.integers(0, 2, n))
    cost = rng.integers(0, 30, (n, 3)).astype(float) if integer else rng.random((n, 3)) * 30
    value = cost.sum(axis=1) + (rng.integers(0, 8, n) if integer else rng.normal(size=n) * 4)
    kept = pareto.pareto(state, cost, value)
    same = state[:, None] == state[None, :]
    no_worse = same & np.all(cost[:, None, :] <= cost[None, :, :], axis=2) & (value[:, None] >= value[None, :])
    better = np.any(cost[:, None, :] < cost[None, :, :], axis=2) | (value[:, None] > value[None, :])
    expected = {(state[i], *cost[i], value[i]) for i in np.flatnonzero(~np.any(no_worse & better, axis=0))}
    got = [(state[i], *cost[i], value[i]) for i in kept]
    assert len(expected) > 10 * sealed
    assert len(got) == len(set(got)) and set(got) == expected


def test_the_several_resource_filter_checks_the_deadline_between_blocks():
    """The dominance filter of several resources is the dp's longest inner loop: it stops there when told."""
    rng = np.random.default_rng(0)
    n = 3 * pareto.BLOCK
    state = np.zeros(n, dtype=np.int64)
    calls = []

    class Stop(Exception):
        pass

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise Stop
    with pytest.raises(Stop):
        pareto.pareto(state, rng.random((n, 2)), rng.random(n), check)
    assert len(calls) == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 70), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_a_sealed_tree_gives_the_best_value_ranking_no_higher_in_both(points, ranks, seed):
    """The merge-sort tree behind the three-resource filter: for every lookup (rank 1, rank 2), the best value
    of its points ranking no higher in both (-inf when none does), with tied ranks and any number of points
    (partial blocks at every level)."""
    rng = np.random.default_rng(seed)
    at = rng.integers(0, ranks, (points, 2))
    value = rng.integers(-5, 5, points).astype(float)
    tree = pareto._Tree(at, value, base=ranks + 1)
    lookups = np.stack(np.meshgrid(np.arange(ranks + 1), np.arange(ranks + 1)), axis=-1).reshape(-1, 2)
    below = (at[None, :, 0] <= lookups[:, None, 0]) & (at[None, :, 1] <= lookups[:, None, 1])
    expected = np.where(below, value[None, :], -np.inf).max(axis=1)
    assert np.array_equal(tree.best(lookups), expected)


def one_resource_front(state: np.ndarray, cost: np.ndarray, value: np.ndarray) -> set[tuple[float, float, float]]:
    """The non-dominated (state, cost, value) of one resource, by a sort per state (the reference)."""
    front = set()
    for s in np.unique(state):
        at = np.flatnonzero(state == s)
        best = -np.inf
        for i in at[np.lexsort((-value[at], cost[at]))]:
            if value[i] > best:
                front.add((state[i], cost[i], value[i]))
                best = value[i]
    return front


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 6), st.integers(1, 50), st.integers(0, 2**32 - 1))
def test_one_resource_filter_sifting_by_cost_buckets_keeps_exactly_the_non_dominated_pairs(n, states, levels, seed):
    """One-resource filters first drop pairs dominated across cost buckets (`_coarse_dominated`; here from the
    first pair on), then sort what is left: with ties, duplicates, a state whose pairs all cost the same, and
    values that fall or rise with cost, the survivors are exactly one copy of each non-dominated pair, ordered
    by (state, cost); a pair the buckets drop is dominated by a strictly cheaper pair of its state."""
    rng = np.random.default_rng(seed)
    state = np.sort(rng.integers(0, states, n))
    cost = rng.integers(0, levels, (n, 1)).astype(float) * rng.choice([0.1, 1.0, 3.0])
    cost[state == 0] = 5.0
    value = rng.integers(0, 60, n) + rng.choice([-1.0, 0.0, 1.0]) * cost[:, 0]
    coarse = pareto._coarse_dominated(state, cost[:, 0], value)
    for i in np.flatnonzero(coarse):
        assert np.any((state == state[i]) & (cost[:, 0] < cost[i, 0]) & (value >= value[i]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pareto, "COARSE_FROM", 1)
        kept = pareto.pareto(state, cost, value)
    got = [(state[i], cost[i, 0], value[i]) for i in kept]
    assert len(got) == len(set(got)) and set(got) == one_resource_front(state, cost[:, 0], value)
    assert got == sorted(got, key=lambda p: (p[0], p[1]))


def test_cost_buckets_leave_pairs_with_non_finite_costs_or_values_alone():
    """An infinite or nan cost or value is never marked dominated by the buckets (nor breaks the others)."""
    state = np.zeros(8, dtype=np.int64)
    cost = np.array([0.0, 1.0, 2.0, np.inf, 3.0, np.nan, 4.0, 5.0])
    value = np.array([9.0, 1.0, -np.inf, 0.0, np.nan, 0.0, 2.0, 1.0])
    # the five finite pairs make two buckets over costs 0-5: {0, 1} and {4, 5}; the upper two are dominated
    assert pareto._coarse_dominated(state, cost, value).tolist() == [False] * 6 + [True, True]
    assert not pareto._coarse_dominated(state[:2], np.array([np.inf, 1.0]), np.array([np.nan, 0.0])).any()


def test_large_one_resource_filters_sift_most_pairs_before_sorting():
    """Where few pairs survive (values noisy around a rising trend, as the dp's joined messages are), the cost
    buckets drop nearly all the dominated pairs without a sort, and the answer is the sorting filter's."""
    rng = np.random.default_rng(7)
    n = 200_000
    state = np.sort(rng.integers(0, 4, n))
    cost = rng.random((n, 1)) * 100
    value = cost[:, 0] + rng.normal(size=n) * 20
    coarse = pareto._coarse_dominated(state, cost[:, 0], value)
    kept = pareto.pareto(state, cost, value)
    assert coarse.mean() > 0.9 and len(kept) < 0.01 * n
    assert not coarse[kept].any()
    got = {(state[i], cost[i, 0], value[i]) for i in kept}
    assert got == one_resource_front(state, cost[:, 0], value)
