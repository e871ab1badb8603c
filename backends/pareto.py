"""Pareto sets of (cost, value) pairs: the dominance filters that keep the `dp` backend's messages small.

A pair is dominated when another pair of the same state costs no more in every resource and is worth at least as
much; `pareto` keeps the rest. One resource: cost buckets first sift out most dominated pairs of a large set
without sorting, then a running maximum over the rest sorted by cost. Two: a staircase searched by bisection.
Three: survivors sealed into merge-sort trees answering two-way dominance-maximum lookups, and the latest ones
compared pair by pair. More: block against block. Costs are compared resource by resource (`np.all` over a
short last axis was measured 10x slower).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

CHUNK_PAIRS = 1 << 21      # pairs built or compared at once (bounds temporary memory)
BLOCK = 256                # pairs compared at once in the several-resource dominance filter
SEALED = 128               # survivors sealed at once into a tree of the three-resource filter (64 to 1,024 took
                           # the same within noise on the twelve longest filters of a ResNet-152 core)
LARGEST_TREE = 1 << 16     # sealed trees merge up to this many survivors (a tree over 10^6 took 2.4 s to build,
                           # with no deadline check inside, and 336 MB; one over 65,536 about 0.06 s)
COARSE_FROM = 4096         # one resource: pairs from which dominated ones are first sifted out by cost buckets
                           # (`_coarse_dominated`; ResNet-101's frontier pass: 3.1 s in this filter -> 0.65 s)
COARSE_PAIRS_PER_BUCKET = 16
COARSE_MAX_BUCKETS = 1 << 14
RECENT = 512               # sealed survivors also compared pair by pair, the latest first (on a 740,000-pair
                           # filter 95% of the dominated pairs had a dominator among the last 512: 5.1 -> 3.0 s)


def pareto(state: np.ndarray, cost: np.ndarray, value: np.ndarray, check: Callable[[], None] = lambda: None
           ) -> np.ndarray:
    """Indices of the non-dominated pairs within each state (`state` non-decreasing), ordered by (state, cost).
    `check` is called between blocks of the several-resource filter (it raises to stop)."""
    if len(value) == 0:
        return np.zeros(0, dtype=np.int64)
    if cost.shape[1] > 1:
        order = np.lexsort((-value,) + tuple(cost[:, r] for r in range(cost.shape[1] - 1, -1, -1)) + (state,))
        return order[~_dominated(state[order], cost[order], value[order], check)]
    if len(value) < COARSE_FROM:
        return _pareto_sorted(state, cost[:, 0], value)
    rest = np.flatnonzero(~_coarse_dominated(state, cost[:, 0], value))
    return rest[_pareto_sorted(state[rest], cost[rest, 0], value[rest])]


def _pareto_sorted(state: np.ndarray, cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """`pareto` for one resource (`cost` one number per pair) by sorting."""
    if len(value) == 0:
        return np.zeros(0, dtype=np.int64)
    # sort by cost within each state: by cost, then stably by state (a radix sort when states are few)
    order = np.argsort(cost)
    segment = state[order]
    order = order[np.argsort(segment.astype(np.uint16) if state[-1] < 2**16 else segment, kind="stable")]
    s, c, v = state[order], cost[order], value[order]
    # keep a pair when it is worth more than every pair before it in its state: a running maximum of
    # (state, value), compared lexicographically as the complex number state + i value (exact)
    running = np.maximum.accumulate(s + 1j * v)
    keep = np.ones(len(s), dtype=bool)
    keep[1:] = (s[1:] != running.real[:-1]) | (v[1:] > running.imag[:-1])
    kept = np.flatnonzero(keep)
    # of kept pairs with equal state and cost (values increasing), only the last is not dominated
    last = np.ones(len(kept), dtype=bool)
    last[:-1] = (s[kept[1:]] != s[kept[:-1]]) | (c[kept[1:]] != c[kept[:-1]])
    return order[kept[last]]


def _coarse_dominated(state: np.ndarray, cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """One resource, `state` non-decreasing: whether each pair is dominated by a strictly cheaper pair of its
    state, found without sorting. Each state's cost range is cut into equal buckets; a pair worth no more than
    the best pair of a lower bucket of its state is dominated (a lower bucket costs strictly less: the bucket
    index is non-decreasing in cost). Finds most of the dominated pairs where few survive (a ResNet-101
    frontier pass keeps 0.5% of its 18 million pairs); pairs with non-finite costs or values are left alone."""
    out = np.zeros(len(value), dtype=bool)
    finite = np.isfinite(cost) & np.isfinite(value)
    if not finite.any():
        return out
    if not finite.all():
        kept = np.flatnonzero(finite)
        out[kept] = _coarse_dominated(state[kept], cost[kept], value[kept])
        return out
    first = np.flatnonzero(np.concatenate([[True], state[1:] != state[:-1]]))
    segment = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(state))))
    buckets = int(np.clip(len(value) // (COARSE_PAIRS_PER_BUCKET * len(first)), 2, COARSE_MAX_BUCKETS))
    low, high = np.minimum.reduceat(cost, first), np.maximum.reduceat(cost, first)
    width = high - low
    scale = np.divide(buckets, width, out=np.zeros_like(width), where=width > 0)
    bucket = np.minimum(((cost - low[segment]) * scale[segment]).astype(np.int64), buckets - 1)
    key = segment * buckets + bucket
    best = np.full(len(first) * buckets, -np.inf)
    np.maximum.at(best, key, value)
    before = np.full((len(first), buckets), -np.inf)             # best value of the lower buckets of the state
    before[:, 1:] = np.maximum.accumulate(best.reshape(len(first), buckets), axis=1)[:, :-1]
    before = before.ravel()[key]
    return (value <= before) & np.isfinite(before)


def _dominated(state: np.ndarray, cost: np.ndarray, value: np.ndarray, check: Callable[[], None] = lambda: None
               ) -> np.ndarray:
    """For pairs sorted by (state, costs, -value), whether a pair of the same state dominates each.

    Several resources. Only an earlier pair in that order can dominate (or duplicate) a pair, and
    dominance is transitive, so each block of pairs is compared with the earlier pairs of its block
    and with the survivors of the earlier blocks only.
    """
    starts = np.concatenate([[0], np.flatnonzero(np.diff(state)) + 1])
    counts = np.diff(np.concatenate([starts, [len(state)]]))
    out = np.zeros(len(state), dtype=bool)
    for start, n in zip(starts[counts > 1], counts[counts > 1]):
        c, v = cost[start:start + n], value[start:start + n]
        if c.shape[1] == 2:
            out[start:start + n] = _dominated_two(c, v, check)
            continue
        if c.shape[1] == 3:
            out[start:start + n] = _dominated_three(c, v, check)
            continue
        kept_c, kept_v = c[:0], v[:0]
        for lo in range(0, n, BLOCK):
            check()
            bc, bv = c[lo:lo + BLOCK], v[lo:lo + BLOCK]
            dominated = _dominated_within(bc, bv)
            for k in range(0, len(kept_v), max(1, CHUNK_PAIRS // BLOCK)):
                check()
                dominated |= _dominated_by_earlier(kept_c[k:k + CHUNK_PAIRS // BLOCK],
                                                   kept_v[k:k + CHUNK_PAIRS // BLOCK], bc, bv)
            out[start + lo:start + lo + len(bv)] = dominated
            kept_c = np.concatenate([kept_c, bc[~dominated]])
            kept_v = np.concatenate([kept_v, bv[~dominated]])
    return out


def fits(cost: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Whether each cost vector (the last axis: one entry per resource) is within `caps` in every resource;
    resource by resource (see `_dominated_by_earlier`)."""
    ok = cost[..., 0] <= caps[..., 0]
    for r in range(1, cost.shape[-1]):
        ok &= cost[..., r] <= caps[..., r]
    return ok


def _dominated_within(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per pair of a block (sorted as in `_dominated`), whether an earlier pair of the block costs no more in
    every resource and is worth at least as much."""
    earlier = np.tri(len(value), k=-1, dtype=bool).T           # [i, j]: pair i comes before pair j
    return _dominated_by_earlier(cost, value, cost, value, earlier)


def _dominated_by_earlier(kept_cost: np.ndarray, kept_value: np.ndarray, cost: np.ndarray, value: np.ndarray,
                          among: np.ndarray | None = None) -> np.ndarray:
    """Per pair (cost, value), whether one of the kept pairs (those marked in `among[kept, pair]`, when given)
    costs no more in every resource and is worth at least as much. The kept pairs come earlier in the order of
    `_dominated`, so they cost no more in resource 0: only the others are compared, one by one (`np.all` over
    a two- or three-long axis was measured 10x slower)."""
    no_worse = kept_value[:, None] >= value[None]
    if among is not None:
        no_worse &= among
    for r in range(1, cost.shape[1]):
        no_worse &= kept_cost[:, None, r] <= cost[None, :, r]
    return no_worse.any(axis=0)


def _dominated_two(cost: np.ndarray, value: np.ndarray, check: Callable[[], None]) -> np.ndarray:
    """`_dominated` for one state and two resources, pairs sorted by (cost 0, cost 1, -value): every earlier
    pair costs no more in resource 0, so a pair is dominated exactly when an earlier one costs no more in
    resource 1 and is worth at least as much. The earlier survivors are kept as a staircase (cost 1 ->
    best value at that cost or less), so each block of pairs is checked by binary search in it (and
    against the earlier pairs of its own block), not against every earlier pair."""
    out = np.zeros(len(value), dtype=bool)
    stair_cost, stair_value = cost[:0, 1], value[:0]
    for lo in range(0, len(value), BLOCK):
        check()
        bc, bv = cost[lo:lo + BLOCK], value[lo:lo + BLOCK]
        dominated = np.zeros(len(bv), dtype=bool)
        if len(stair_cost):
            at = np.searchsorted(stair_cost, bc[:, 1], side="right") - 1
            dominated = (at >= 0) & (stair_value[np.maximum(at, 0)] >= bv)
        dominated |= _dominated_within(bc, bv)
        out[lo:lo + len(bv)] = dominated
        merged_cost = np.concatenate([stair_cost, bc[~dominated, 1]])
        merged_value = np.concatenate([stair_value, bv[~dominated]])
        order = np.argsort(merged_cost, kind="stable")
        merged_cost, running = merged_cost[order], np.maximum.accumulate(merged_value[order])
        rises = np.ones(len(running), dtype=bool)                # keep the first cost of each new best value
        rises[1:] = running[1:] > running[:-1]
        stair_cost, stair_value = merged_cost[rises], running[rises]
    return out


def _dominated_three(cost: np.ndarray, value: np.ndarray, check: Callable[[], None]) -> np.ndarray:
    """`_dominated` for one state and three resources, pairs sorted by (cost 0, cost 1, cost 2, -value): every
    earlier pair costs no more in resource 0, so a pair is dominated exactly when an earlier one costs no more
    in resources 1 and 2 and is worth at least as much. Each block of pairs is compared with its own earlier
    pairs, the survivors not yet sealed and the last RECENT sealed ones (most dominated pairs have a dominator
    among the survivors just before them), then what is left is looked up in the sealed survivors' trees
    (`_Sealed`)."""
    out = np.zeros(len(value), dtype=bool)
    sealed = _Sealed(cost[:, 1:])
    tail = np.zeros(0, dtype=np.int64)                        # survivors not sealed yet (indices)
    recent = np.zeros(0, dtype=np.int64)                      # the last RECENT sealed survivors
    for lo in range(0, len(value), BLOCK):
        check()
        bc, bv = cost[lo:lo + BLOCK], value[lo:lo + BLOCK]
        dominated = _dominated_within(bc, bv) | _dominated_by_earlier(cost[tail], value[tail], bc, bv)
        open_ = np.flatnonzero(~dominated)
        if len(recent) and len(open_):
            hit = _dominated_by_earlier(cost[recent], value[recent], bc[open_], bv[open_])
            dominated[open_[hit]] = True
            open_ = open_[~hit]
        dominated[open_[sealed.dominates(lo + open_, value[lo + open_])]] = True
        out[lo:lo + len(bv)] = dominated
        tail = np.concatenate([tail, lo + np.flatnonzero(~dominated)])
        while len(tail) >= SEALED:
            sealed.add(tail[:SEALED], value[tail[:SEALED]])
            recent = np.concatenate([recent, tail[:SEALED]])[-RECENT:]
            tail = tail[SEALED:]
    return out


class _Sealed:
    """Survivors of the three-resource filter, sealed SEALED at a time into static `_Tree`s kept like a binary
    counter (a new tree is merged with the last one while that one is no larger, up to LARGEST_TREE survivors), so
    that there are about log2(survivors / SEALED) trees and a lookup costs a few binary searches per tree, not one
    per group of survivors (the previous 128-pair prefix-maximum tables took 25 of 40 s on a ResNet-152 core with
    three resources). Ranks are dense ranks over all pairs of the filter (equal costs, equal ranks)."""

    def __init__(self, costs: np.ndarray) -> None:
        self.ranks = np.stack([np.unique(costs[:, r], return_inverse=True)[1].reshape(-1) for r in range(2)], axis=1)
        self.base = int(self.ranks.max(initial=0)) + 1        # above every rank
        self.trees: list[_Tree] = []

    def add(self, pairs: np.ndarray, value: np.ndarray) -> None:
        """Seal the pairs `pairs` (indices into the filter's pairs) with their values."""
        ranks, values = self.ranks[pairs], np.asarray(value, dtype=float)
        while self.trees and self.trees[-1].size <= len(values) and self.trees[-1].size + len(values) <= LARGEST_TREE:
            last = self.trees.pop()
            ranks, values = np.concatenate([last.ranks, ranks]), np.concatenate([last.values, values])
        self.trees.append(_Tree(ranks, values, self.base))

    def dominates(self, pairs: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Per pair (indices into the filter's pairs, with `value`), whether a sealed pair ranks no higher in
        resources 1 and 2 and is worth at least as much."""
        hit = np.zeros(len(pairs), dtype=bool)
        for tree in self.trees:
            open_ = np.flatnonzero(~hit)
            if len(open_) == 0:
                break
            hit[open_] = tree.best(self.ranks[pairs[open_]]) >= value[open_]
        return hit


class _Tree:
    """A static two-way dominance maximum over m points (rank 1, rank 2, value): `best(x, y)` is the best value
    of the points with rank 1 <= x and rank 2 <= y. Points sorted by rank 1; at level l they fall into blocks
    of 2**l consecutive points, each block sorted by rank 2 with a running maximum of the values (a merge-sort
    tree). The points with rank 1 <= x are a prefix of p points: one block per set bit of p. Every level's keys
    (block number counted across levels, then rank 2) form one sorted array, so all the blocks of a set of
    lookups are searched at once."""

    def __init__(self, ranks: np.ndarray, values: np.ndarray, base: int) -> None:
        self.ranks, self.values = ranks, values
        self.size = m = len(values)
        order = np.argsort(ranks[:, 0], kind="stable")
        self.rank1 = ranks[order, 0]
        r2, v = ranks[order, 1], values[order]
        self.base = base                                       # above every rank: keys are block * base + rank 2
        self.levels = m.bit_length()
        keys, best, first_block, starts = [], [], [], []
        blocks = 0
        position = np.arange(m)
        inner = position                                       # level 0: blocks of one point
        for level in range(self.levels):
            if level:
                # by block, then rank 2: the previous level's blocks are sorted runs, merged pairwise by the
                # stable sort (a merge of runs, not a full sort)
                inner = inner[np.argsort((position[inner] >> level) * self.base + r2[inner], kind="stable")]
            b = position[inner] >> level
            # running maximum within each block: (block, value) compared lexicographically as block + i value
            best.append(np.maximum.accumulate(b + 1j * v[inner]).imag)
            keys.append((blocks + b) * self.base + r2[inner])
            first_block.append(blocks)
            count = ((m - 1) >> level) + 1                      # blocks at this level
            starts.append(level * m + (np.arange(count) << level))
            blocks += count
        self.keys = np.concatenate(keys)
        self.best_value = np.concatenate(best)
        self.first_block = np.array(first_block, dtype=np.int64)
        self.block_start = np.concatenate(starts)

    def best(self, ranks: np.ndarray) -> np.ndarray:
        """Per lookup (rank 1, rank 2), the best value of the points ranking no higher in both (-inf if none)."""
        p = np.searchsorted(self.rank1, ranks[:, 0], side="right")
        shifted = p[None, :] >> np.arange(self.levels)[:, None]   # [level, lookup]
        used = (shifted & 1).astype(bool)                      # a block at this level
        block = self.first_block[:, None] + shifted - 1
        wanted = block * self.base + ranks[None, :, 1]
        at = np.searchsorted(self.keys, wanted[used], side="right") - 1
        found = at >= self.block_start[block[used]]
        out = np.full(used.shape, -np.inf)
        out[used] = np.where(found, self.best_value[np.maximum(at, 0)], -np.inf)
        return out.max(axis=0, initial=-np.inf)
