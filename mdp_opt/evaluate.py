"""Value and costs of a configuration, and its feasibility: the core's one evaluator.

`evaluate` is what `solve()` verifies every backend answer with; feasibility is judged against
budgets with the core's one tolerance (`budgets.within_budget`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .budgets import within_budget
from .spec import Spec, SpecError, Term


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
        return math.fsum(term_value(t, choice, active) for t in terms)

    value = total(spec.objective)
    costs = {r: total(ts) for r, ts in spec.costs.items()}
    budgets = spec.budgets if budgets is None else budgets
    feasible = all(within_budget(costs[r], b) for r, b in budgets.items())
    return Evaluation(value, costs, feasible, kept_counts(spec, choice, active))


def term_value(term: Term, choice: Mapping[str, int], active: Mapping[str, bool]) -> float:
    """One term's entry for a configuration: 0 while its block is removed."""
    if term.block is not None and not active[term.block]:
        return 0.0
    return float(term.table[tuple(choice[n] for n in term.dims)])


def count_configurations(spec: Spec) -> int:
    return math.prod(d.size for d in spec.dims) * 2 ** len(spec.blocks)


def configuration_from_hint(spec: Spec, hint: Any) -> tuple[dict[str, int], dict[str, bool]]:
    """Validate a `hint` option: a Result (its choice and active) or {"choice": {...}, "active": {...}}."""
    if hasattr(hint, "choice") and hasattr(hint, "active"):
        if not getattr(hint, "has_solution", True):
            raise SpecError(f"option hint: the Result has no configuration (status {hint.status.value})")
        choice, active = hint.choice, hint.active
    elif isinstance(hint, Mapping) and set(hint) <= {"choice", "active"} and "choice" in hint:
        choice, active = hint["choice"], hint.get("active", {})
    else:
        raise SpecError("option hint: expected a Result or {'choice': {dim: index}, 'active': {block: bool}}, "
                        f"got {type(hint).__name__}")
    choice = dict(choice)
    active = {b: True for b in spec.block_names} | dict(active or {})
    try:
        check_configuration(spec, choice, active)
    except SpecError as e:
        raise SpecError(f"option hint: {e}") from None
    return {d: int(k) for d, k in choice.items()}, {b: bool(a) for b, a in active.items()}
