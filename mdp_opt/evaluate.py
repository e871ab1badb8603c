"""Value and costs of a configuration, feasibility, and a brute-force solver for tiny specs."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .result import Answer, Status
from .spec import Spec, SpecError

FEASIBILITY_TOLERANCE = 1e-9
BRUTE_FORCE_LIMIT = 2_000_000


def budget_limit(budget, share: float = 1.0):
    """The largest cost the core accepts as within `budget` (1e-9 relative for float summation noise).

    `share` < 1 keeps only part of that tolerance, for solvers whose own tolerances take the rest.
    Works on a number or a numpy array of budgets."""
    return budget + share * FEASIBILITY_TOLERANCE * np.maximum(1.0, np.abs(budget))


def within_budget(cost: float, budget: float) -> bool:
    """cost <= budget up to float summation noise (see `budget_limit`)."""
    return bool(cost <= budget_limit(budget))


@dataclass(frozen=True)
class Evaluation:
    value: float
    costs: dict[str, float]
    feasible: bool
    kept: dict[str, int]


def check_configuration(spec: Spec, choice: Mapping[str, int], active: Mapping[str, bool]) -> None:
    """Raise SpecError unless `choice` gives a valid index for every dim and `active` a bool for every block."""
    for d in spec.dims:
        if d.name not in choice:
            raise SpecError(f"choice.{d.name}: missing; give a choice index for every dim")
        k = choice[d.name]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < d.size:
            raise SpecError(f"choice.{d.name}: index {k!r} out of range 0..{d.size - 1}")
    extra = set(choice) - set(spec.dim_names)
    if extra:
        raise SpecError(f"choice.{sorted(extra)[0]}: not a dim of this spec")
    for b in spec.block_names:
        if b not in active:
            raise SpecError(f"active.{b}: missing; give active/removed for every block")
        if not isinstance(active[b], (bool, np.bool_)):
            raise SpecError(f"active.{b}: expected a bool, got {active[b]!r}")
    extra = set(active) - set(spec.block_names)
    if extra:
        raise SpecError(f"active.{sorted(extra)[0]}: not a block of this spec")


def removed_dims(spec: Spec, active: Mapping[str, bool]) -> set[str]:
    """Dims named by at least one term, all of whose terms belong to removed blocks."""
    live: set[str] = set()
    named: set[str] = set()
    for _, _, t in spec.terms():
        named.update(t.dims)
        if t.block is None or active[t.block]:
            live.update(t.dims)
    return named - live


def kept_counts(spec: Spec, choice: Mapping[str, int], active: Mapping[str, bool]) -> dict[str, int]:
    """Kept count per dim: the chosen count, or 0 for a dim removed with its blocks."""
    gone = removed_dims(spec, active)
    return {d.name: 0 if d.name in gone else d.choices[choice[d.name]] for d in spec.dims}


def evaluate(spec: Spec, choice: Mapping[str, int], active: Mapping[str, bool] | None = None,
             budgets: Mapping[str, float] | None = None) -> Evaluation:
    """Value, per-resource costs and feasibility of a configuration (choice indices, block states)."""
    active = {b: True for b in spec.block_names} if active is None else dict(active)
    check_configuration(spec, choice, active)

    def total(terms) -> float:
        return math.fsum(float(t.table[tuple(choice[n] for n in t.dims)])
                         for t in terms if t.block is None or active[t.block])

    value = total(spec.objective)
    costs = {r: total(ts) for r, ts in spec.costs.items()}
    budgets = spec.budgets if budgets is None else budgets
    feasible = all(within_budget(costs[r], b) for r, b in budgets.items())
    return Evaluation(value, costs, feasible, kept_counts(spec, choice, active))


def count_configurations(spec: Spec) -> int:
    return math.prod(d.size for d in spec.dims) * 2 ** len(spec.blocks)


def brute_force(spec: Spec, budgets: Mapping[str, float], options: Mapping | None = None) -> Answer:
    """Exact answer by enumerating every configuration (vectorised); for specs up to `limit` configurations."""
    options = dict(options or {})
    options.pop("time_limit", None)
    limit = options.pop("limit", BRUTE_FORCE_LIMIT)
    if options:
        raise SpecError(f"option {sorted(options)[0]!r}: not understood by the brute-force backend "
                        "(it takes only 'limit')")
    n = count_configurations(spec)
    if n > limit:
        raise SpecError(f"spec: {n} configurations exceed the brute-force limit of {limit}; "
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
    for r, b in budgets.items():
        cost = total(spec.costs[r])
        ok &= cost <= budget_limit(b)
    if not ok.any():
        return Answer(Status.INFEASIBLE, stats={"configurations": n})
    masked = np.where(ok, value, -np.inf)
    best = int(np.argmax(masked))
    row = grid[best]
    choice = {name: int(row[i]) for i, name in enumerate(names)}
    active = {b: bool(row[len(names) + j]) for j, b in enumerate(blocks)}
    return Answer(Status.OPTIMAL, choice, active, objective=float(masked[best]), bound=float(masked[best]),
                  stats={"configurations": n})
