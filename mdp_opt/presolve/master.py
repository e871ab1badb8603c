"""The cutting-plane master of the Lagrangian dual with several limited resources (pure numpy).

Every configuration x met by an elimination pass gives a plane under the dual function

    L(lambda) >= value(x) - sum_r lambda_r * (cost_r(x) - limit_r)      for every lambda >= 0,

so the lowest point of the upper envelope of the planes met,

    min over 0 <= lambda <= upper of  max_k  value_k - lambda . (cost_k - limit),

is a lower estimate of min L, and its lambda is where the next pass is most useful (Kelley's
cutting-plane method: it reaches the dual's minimum exactly after finitely many passes, since
there are finitely many configurations). The master is a linear program with one column per
plane and a row per resource; it is solved here through its dual, a convex combination of
the configurations met (Dantzig-Wolfe), by a dense primal simplex with Bland's rule: a few
rows, so each pivot is a small linear solve.

What the master returns only chooses the next multipliers; every bound the presolve reports is
a pass's own value. An inexact master can slow the search down, never make a bound wrong.
"""

from __future__ import annotations

import numpy as np

MAX_PIVOTS = 10_000


def envelope_minimum(values: np.ndarray, excess: np.ndarray, upper: np.ndarray, tolerance: float = 1e-12
                     ) -> tuple[np.ndarray, float]:
    """(lambda, model): the minimiser of max_k values[k] - lambda . excess[k] over 0 <= lambda <= upper, and
    the minimum.

    values: shape (K,), each plane's value at lambda = 0 (K >= 1).
    excess: shape (K, R), each plane's cost minus the limit, per resource (the planes' slopes, negated).
    upper: shape (R,), positive: the box the multipliers stay in (the envelope may fall without end where
        every plane is within a limit; the box keeps the master bounded).
    tolerance: reduced costs below it (relative to the largest value) count as zero.
    """
    values = np.asarray(values, dtype=float)
    excess = np.asarray(excess, dtype=float)
    upper = np.asarray(upper, dtype=float)
    k, r = excess.shape
    # columns: theta (k), pi (r: the price of leaving the box), s (r: slack); rows: sum theta = 1, and per resource
    # sum_k theta_k excess_kr - pi_r + s_r = 0. maximise values . theta - upper . pi
    a = np.zeros((r + 1, k + 2 * r))
    a[0, :k] = 1.0
    a[1:, :k] = excess.T
    a[1:, k:k + r] = -np.eye(r)
    a[1:, k + r:] = np.eye(r)
    c = np.concatenate([values, -upper, np.zeros(r)])
    b = np.zeros(r + 1)
    b[0] = 1.0
    first = int(np.argmax(values))
    basis = [first] + [k + i if excess[first, i] > 0 else k + r + i for i in range(r)]
    scale = max(1.0, float(np.abs(values).max()), float(np.abs(upper).max()))
    for _ in range(MAX_PIVOTS):
        inverse = np.linalg.inv(a[:, basis])
        prices = c[basis] @ inverse
        reduced = c - prices @ a
        reduced[basis] = 0.0
        entering = np.flatnonzero(reduced > tolerance * scale)
        if not len(entering):
            break
        j = int(entering[0])                        # Bland's rule: no cycling on degenerate pivots
        column = inverse @ a[:, j]
        level = inverse @ b
        rows = np.flatnonzero(column > 1e-12)
        if not len(rows):                           # unbounded: cannot happen (sum theta = 1, pi priced)
            break
        ratios = level[rows] / column[rows]
        best = ratios.min()
        ties = rows[ratios <= best + 1e-15 * max(1.0, abs(best))]
        leaving = int(min(ties, key=lambda i: basis[i]))
        basis[leaving] = j
    inverse = np.linalg.inv(a[:, basis])
    prices = c[basis] @ inverse
    lambdas = np.clip(prices[1:], 0.0, upper)
    model = float(np.max(values - excess @ lambdas))
    return lambdas, model
