"""What a solve returns: `Result` (user-facing) and `Answer` (what a backend hands to `solve`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Mapping


class BackendError(RuntimeError):
    """A backend is unknown or not installed, or returned an answer that failed verification."""


class Status(str, Enum):
    """Outcome of a solve. `optimal` means proven optimal within a relative gap of 1e-9; `interrupted`
    (Ctrl-C) carries the best verified configuration found before the stop, when there was one."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    TIME_LIMIT_NO_SOLUTION = "time_limit_no_solution"
    INTERRUPTED = "interrupted"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value

    @property
    def has_solution(self) -> bool:
        """Answers of this status always carry a configuration (`interrupted` ones may or may not)."""
        return self in (Status.OPTIMAL, Status.FEASIBLE)


OPTIMALITY_GAP = 1e-9
# How far (relative) a solver's own arithmetic may drift from the core's re-evaluation before it is an
# error: floating-point solvers (HiGHS) check optimality with tolerances of about this size.
NUMERIC_TOLERANCE = 1e-6


def relative_gap(bound: float | None, objective: float | None) -> float | None:
    """(bound - objective) / max(|bound|, |objective|), 0 when both are 0; None when unknown."""
    if bound is None or objective is None:
        return None
    if math.isinf(bound):
        return math.inf
    scale = max(abs(bound), abs(objective))
    return 0.0 if scale == 0 else max(0.0, (bound - objective) / scale)


@dataclass
class Answer:
    """A backend's raw answer: choice indices and block states; `solve()` verifies and completes it.

    `objective` is the value the backend believes its configuration has (checked by `solve`);
    `bound` a proven upper bound on the best feasible value, when the backend has one.
    """

    status: Status
    choice: Mapping[str, int] | None = None
    active: Mapping[str, bool] | None = None
    objective: float | None = None
    bound: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    """A verified solve result. Print it for a summary; `to_dict()` for JSON."""

    status: Status
    objective: float | None
    bound: float | None
    gap: float | None
    kept: dict[str, int]
    active: dict[str, bool]
    costs: dict[str, float]
    backend: str
    wall_time: float
    stats: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, float] = field(default_factory=dict)
    choice: dict[str, int] = field(default_factory=dict)

    @property
    def has_solution(self) -> bool:
        """A verified configuration is attached (always for optimal and feasible; maybe for interrupted)."""
        return self.objective is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields: status, objective, bound, gap, kept, active, costs, budgets, backend, wall_time, stats."""
        out = asdict(self)
        out.pop("choice")
        out["status"] = self.status.value
        for key in ("objective", "bound", "gap"):
            if out[key] is not None and not math.isfinite(out[key]):
                out[key] = None
        out["stats"] = _jsonable(out["stats"])
        return out

    def summary(self) -> str:
        lines = [f"status     {self.status.value}  (backend {self.backend}, {self.wall_time:.3f} s)"]
        if self.objective is not None:
            lines.append(f"objective  {self.objective:.10g}" + (
                f"   bound {self.bound:.10g}   gap {self.gap:.3g}" if self.bound is not None and self.gap is not None else ""))
        for r, c in self.costs.items():
            b = self.budgets.get(r)
            lines.append(f"cost       {r} = {c:.10g}" + (f"  (budget {b:.10g}, {100 * c / b:.1f}% used)" if b else ""))
        if self.kept:
            removed = [b for b, a in self.active.items() if not a]
            lines.append(f"blocks     {sum(self.active.values())}/{len(self.active)} active"
                         + (f"; removed: {', '.join(removed)}" if removed else ""))
            lines.append("kept       " + ", ".join(f"{d}={k}" for d, k in self.kept.items()))
        if "message" in self.stats:
            lines.append(f"message    {self.stats['message']}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        obj = "None" if self.objective is None else f"{self.objective:.10g}"
        return (f"Result(status={self.status.value!r}, objective={obj}, gap={self.gap!r}, "
                f"costs={self.costs}, backend={self.backend!r}, wall_time={self.wall_time:.3f})")

    __str__ = summary


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Enum):
        return x.value
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return _jsonable(x.item())
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a solve. `result` is the verified `Result` (status `interrupted`): the best configuration
    found before the stop, with its bound, when there was one. A KeyboardInterrupt, so loops stop."""

    def __init__(self, result: Result) -> None:
        super().__init__(f"interrupted: {result!r}")
        self.result = result
