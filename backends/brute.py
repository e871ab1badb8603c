"""The `brute` backend: enumerates every configuration (vectorised). Exact, for tiny specs and tests.

It is the reference the conformance tests hold every exact backend to (`Feature.REFERENCE`),
so benchmarks leave it out. Option `limit`: the most configurations it enumerates (default
2,000,000); a larger spec is refused with a message naming the count.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping

import numpy as np

from mdp_opt.backend import Feature, register_backend, take_options
from mdp_opt.evaluate import count_configurations
from mdp_opt.result import Answer, Status
from mdp_opt.spec import Spec, SpecError

BRUTE_FORCE_LIMIT = 2_000_000
DEFAULTS: dict[str, Any] = {"limit": BRUTE_FORCE_LIMIT}


def check_options(opts: Mapping, spec: Spec, limits: Mapping[str, float]) -> None:
    limit = opts["limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise SpecError(f"option limit: expected a whole number of configurations >= 1, got {limit!r:.40}")


def solve(spec: Spec, limits: Mapping[str, float], options: Mapping | None = None) -> Answer:
    """The best configuration with every cost within its limit, by enumerating all of them."""
    opts = take_options(options or {}, DEFAULTS, "brute")
    check_options(opts, spec, limits)
    n = count_configurations(spec)
    if n > opts["limit"]:
        raise SpecError(f"spec: {n} configurations exceed the brute-force limit of {opts['limit']}; "
                        "use an exact backend (cpsat, milp, dp) or pass limit=")
    names, blocks = spec.dim_names, spec.block_names
    axes = [range(d.size) for d in spec.dims] + [range(2)] * len(blocks)
    grid = np.array(list(itertools.product(*axes)), dtype=np.int64).reshape(n, len(axes))
    column = {name: i for i, name in enumerate(names + blocks)}

    def total(terms) -> np.ndarray:
        acc = np.zeros(n)
        for t in terms:
            vals = t.table[tuple(grid[:, column[d]] for d in t.dims)] if t.dims else np.full(n, float(t.table))
            if t.block is not None:
                vals = vals * grid[:, column[t.block]]
            acc += vals
        return acc

    value = total(spec.objective)
    ok = np.ones(n, dtype=bool)
    for r, limit in limits.items():
        ok &= total(spec.costs[r]) <= limit
    if not ok.any():
        return Answer(Status.INFEASIBLE, stats={"configurations": n})
    masked = np.where(ok, value, -np.inf)
    best = int(np.argmax(masked))
    row = grid[best]
    choice = {name: int(row[i]) for i, name in enumerate(names)}
    active = {b: bool(row[len(names) + j]) for j, b in enumerate(blocks)}
    return Answer(Status.OPTIMAL, choice, active, objective=float(masked[best]), bound=float(masked[best]),
                  stats={"configurations": n})


register_backend("brute", solve, features={Feature.EXACT, Feature.REFERENCE}, options=DEFAULTS, check=check_options,
                 description="enumerates every configuration (tiny specs only, exact)")
