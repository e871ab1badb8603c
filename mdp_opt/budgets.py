"""Budgets: what the user asks for, and the one tolerance that turns a budget into a limit.

A budget is resolved (`resolve_budgets`) from a number, a percentage of the full cost or a
mapping, merged over the spec's own budgets. The core then applies its one feasibility
tolerance, once (`limits`): a configuration is within budget when its cost is at most the
budget's *limit*, `budget + 1e-9 * max(1, |budget|)` (float summation noise). Backends and
the presolve receive these limits ready and compare costs with `<=`; nothing else adds or
removes tolerance.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Union

import numpy as np

from .spec import Spec, SpecError, check_magnitude

FEASIBILITY_TOLERANCE = 1e-9

BudgetLike = Union[None, float, int, str, Mapping[str, Union[float, int, str]]]

_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*%\s*$")


def budget_limit(budget):
    """The largest cost within `budget`: budget + 1e-9 * max(1, |budget|). Works on numbers and arrays."""
    return budget + FEASIBILITY_TOLERANCE * np.maximum(1.0, np.abs(budget))


def limits(budgets: Mapping[str, float]) -> dict[str, float]:
    """resource -> limit for resource -> budget (see `budget_limit`)."""
    return {r: float(budget_limit(b)) for r, b in budgets.items()}


def within_budget(cost: float, budget: float) -> bool:
    """cost <= budget up to float summation noise (see `budget_limit`)."""
    return bool(cost <= budget_limit(budget))


def resolve_budgets(spec: Spec, budget: BudgetLike = None) -> dict[str, float]:
    """Turn a budget argument into resource -> absolute number (see `mdp_opt.solve`)."""
    resolved = dict(spec.budgets)
    if budget is None:
        return resolved
    if isinstance(budget, Mapping):
        items = dict(budget)
    else:
        items = {default_resource(spec, "budget"): budget}
    full = None
    for r, b in items.items():
        if r not in spec.costs:
            raise SpecError(f"budget.{r}: resource {r!r} is not in the spec's costs ({sorted(spec.costs)})")
        if isinstance(b, str):
            m = _PERCENT.match(b)
            if not m or not math.isfinite(float(m.group(1))):
                raise SpecError(f"budget.{r}: {b!r:.40} is neither a number nor a finite percentage like '50%'")
            full = spec.full_costs() if full is None else full
            resolved[r] = float(m.group(1)) / 100.0 * full[r]
        elif isinstance(b, (int, float)) and not isinstance(b, bool) and _finite(b):
            resolved[r] = float(b)
        else:
            raise SpecError(f"budget.{r}: expected a finite number or a percentage string, got {b!r:.40}")
        check_magnitude(np.array(resolved[r]), f"budget.{r}")
    return resolved


def _finite(x: float) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:      # an int too large for a float
        return False


def default_resource(spec: Spec, field: str = "budget") -> str:
    """The resource a bare budget refers to: the spec's only resource, its only budgeted one, or `latency`.

    Ambiguity raises SpecError naming `field` (the argument the caller should spell out)."""
    if not spec.costs:
        raise SpecError(f"{field}: the spec has no cost terms, so there is no resource to budget")
    if len(spec.costs) == 1:
        return next(iter(spec.costs))
    if len(spec.budgets) == 1:
        return next(iter(spec.budgets))
    if "latency" in spec.costs:
        return "latency"
    raise SpecError(f"{field}: the spec has several resources {sorted(spec.costs)}; name one "
                    "(e.g. a mapping such as {'params': 1e6})")
