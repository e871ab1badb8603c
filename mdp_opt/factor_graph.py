"""Exact max-sum variable elimination over small discrete factor graphs (numpy only).

A factor graph has variables `0..n-1` with `sizes[v]` states and factors given by
their scopes (tuples of variable indices) and tables. `elimination_order` picks the
order in which variables are summed out.
"""

from __future__ import annotations

from typing import Sequence

HEURISTICS = ("min-fill", "min-degree")


def elimination_order(sizes: Sequence[int], scopes: Sequence[Sequence[int]],
                      heuristic: str = "min-fill") -> list[int]:
    """An order eliminating every variable, chosen greedily.

    Args:
        sizes: state count of each variable `0..n-1`.
        scopes: the factors' scopes, as sequences of variable indices.
        heuristic: "min-fill" (fewest fill-in edges, ties by min weighted degree) or
            "min-degree" (fewest neighbours, ties by min weighted degree). The weighted
            degree is the size of the table eliminating the variable creates; remaining
            ties go to the lowest index, so the order is deterministic.
    """
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic: {heuristic!r} is not one of {list(HEURISTICS)}")
    n = len(sizes)
    for v, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, int) and not hasattr(s, "__index__") or int(s) < 1:
            raise ValueError(f"sizes[{v}]: expected a positive integer state count, got {s!r}")
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for i, scope in enumerate(scopes):
        for v in scope:
            if not 0 <= v < n:
                raise ValueError(f"scopes[{i}]: variable {v} is not in 0..{n - 1}")
            neighbours[v].update(scope)
    for v in range(n):
        neighbours[v].discard(v)

    def weight(v: int) -> int:
        w = int(sizes[v])
        for u in neighbours[v]:
            w *= int(sizes[u])
        return w

    def fill(v: int) -> int:
        near = list(neighbours[v])
        return sum(1 for i, a in enumerate(near) for b in near[i + 1:] if b not in neighbours[a])

    remaining = set(range(n))
    order: list[int] = []
    while remaining:
        if heuristic == "min-fill":
            v = min(remaining, key=lambda u: (fill(u), weight(u), u))
        else:
            v = min(remaining, key=lambda u: (len(neighbours[u]), weight(u), u))
        near = neighbours[v]
        for u in near:
            neighbours[u].discard(v)
            neighbours[u].update(near - {u})
        neighbours[v] = set()
        remaining.remove(v)
        order.append(v)
    return order
