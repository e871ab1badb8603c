"""The value-versus-budget frontier: the optimal value (and configuration) at a grid of budgets.

    from mdp_opt.frontier import frontier, plot
    points = frontier(spec, resource="latency", points=50)
    plot(points, spec=spec, path="frontier.png")

With the `dp` backend one DP pass gives the best value at every budget at once; the
configurations at the grid's budgets are read off its final Pareto sets. Where that pass
would cost more than solving each budget alone (wide cost ranges make the Pareto sets
large), and for any other backend, `solve()` (with its presolve) is called once per budget.
Either way every point is verified like a `solve()` result, and the values never decrease
with the budget.

Also the `mdp-opt frontier` subcommand (`add_arguments`, `run`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .result import Answer, Result, Status
from .solve import default_resource, resolve_budgets, solve, take_options, verify
from .spec import Spec, SpecError, Term

# One solve() with presolve costs about as much as building this many candidate pairs in a DP pass: the
# one-pass frontier is tried with a budget of this many pairs per point, else each budget is solved alone.
PAIRS_PER_SOLVE = 50_000
# how each point was computed, in its result's stats["frontier"]
ONE_PASS = "one dp pass for every budget"
ONE_SOLVE_PER_BUDGET = "one solve per budget"


@dataclass(frozen=True)
class FrontierPoint:
    """The outcome at one budget: `result` is the verified `Result` (kept counts, active blocks, stats)."""

    budget: float
    result: Result

    @property
    def objective(self) -> float | None:
        return self.result.objective

    @property
    def status(self) -> Status:
        return self.result.status

    @property
    def costs(self) -> dict[str, float]:
        return self.result.costs

    def to_dict(self) -> dict[str, Any]:
        """{"budget", "objective", "costs", "status"}, ready for JSON."""
        return {"budget": self.budget, "objective": self.objective, "costs": dict(self.costs),
                "status": self.status.value}


def frontier(spec: Spec, resource: str | None = None, budgets: Sequence[float] | None = None, points: int = 50,
             backend: str = "dp", **options: Any) -> list[FrontierPoint]:
    """The optimal value of `spec` at a grid of budgets of `resource`, other budgets of the spec enforced.

    Args:
        resource: the resource whose budget varies (default: the spec's only resource, its only budgeted
            one, or `latency`).
        budgets: the budgets to evaluate (absolute numbers); None for `points` budgets evenly spaced from
            the cheapest feasible configuration's cost to the full (unpruned) cost.
        points: the grid size when `budgets` is None.
        backend: `dp` (one pass for every budget, unless that pass would cost more than one `solve()`
            per budget) or any registered backend (one `solve()` per budget, presolve included).
        options: passed to the backend (`resolution`, `memory_cap`, `time_limit`, ...). With the one dp
            pass, `time_limit` bounds the whole pass and reaching it raises TimeoutError; otherwise it
            applies to each solve.

    Returns the points in increasing budget order (an empty list when no configuration satisfies the
    spec's other budgets); `point.result.stats["frontier"]` says how they were computed. A budget below
    the cheapest configuration gives status `infeasible`.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"spec: expected mdp_opt.Spec, got {type(spec).__name__}; load JSON with mdp_opt.load()")
    resource = _resource(spec, resource)
    others = {r: b for r, b in spec.budgets.items() if r != resource}
    grid = None if budgets is None else _checked_budgets(budgets)
    if grid is None and (isinstance(points, bool) or not isinstance(points, int) or points < 1):
        raise SpecError(f"points: expected a positive whole number of budgets, got {points!r}")
    full = spec.full_cost(resource)
    if backend == "dp":
        from .backends import dp     # the core never imports a backend at import time
        try:
            return _frontier_dp(spec, resource, others, grid, points, full, options)
        except dp.TooManyCandidates:
            pass                     # the one pass would cost more than solving budget by budget
    return _frontier_by_solving(spec, resource, others, grid, points, full, backend, options)


def _frontier_dp(spec: Spec, resource: str, others: dict[str, float], grid: list[float] | None, points: int,
                 full: float, options: dict[str, Any]) -> list[FrontierPoint]:
    from .backends import dp

    opts = take_options(options, dp.DEFAULTS, "dp")
    start = time.perf_counter()
    work = PAIRS_PER_SOLVE * len(grid or range(points))

    def one_pass(direction: str, cap: float | None) -> "dp.Front":
        limit = opts.get("time_limit")
        if limit is not None:
            limit = max(0.0, limit - (time.perf_counter() - start))
        return dp.pareto_front(spec, resource, others, cap=cap, resolution=opts["resolution"],
                               direction=direction, memory_cap=opts["memory_cap"], time_limit=limit,
                               max_candidates=work)

    up = one_pass("up", full if grid is None else max(grid))
    cheapest = up.cheapest()
    if grid is None and cheapest is None:
        up = one_pass("up", None)         # every configuration within the other budgets costs more than full
        cheapest = up.cheapest()
    if grid is None:
        if cheapest is None:
            return []
        grid = _grid(cheapest, max(full, cheapest), points)
    rounded = any(up.stats["resolution"].values())
    down = one_pass("down", max(grid)) if rounded else None
    wall = (time.perf_counter() - start) / len(grid)
    out: list[FrontierPoint] = []
    for budget in grid:
        limits = {resource: budget, **others}
        if down is None:
            answer = dp.exact_answer(up.best(budget), {**up.stats, "frontier": ONE_PASS})
        else:
            answer = dp.rounded_answer(spec, limits, down.best(budget), {**down.stats, "frontier": ONE_PASS},
                                       lambda: up.best(budget))
        out.append(_never_worse(spec, out, budget, limits, verify(spec, limits, answer, "dp", wall)))
    return out


def _frontier_by_solving(spec: Spec, resource: str, others: dict[str, float], grid: list[float] | None,
                         points: int, full: float, backend: str, options: dict[str, Any]) -> list[FrontierPoint]:
    """One solve() per budget; a configuration found at a smaller budget is carried forward when the
    backend (e.g. stopped by a time limit) returns something worse, so values never decrease."""
    if grid is None:
        cheapest = _cheapest_by_solving(spec, resource, others, backend, options)
        if cheapest is None:
            return []
        grid = _grid(cheapest, max(full, cheapest), points)
    out: list[FrontierPoint] = []
    for budget in grid:
        limits = {resource: budget, **others}
        result = solve(spec, limits, backend=backend, **options)
        result.stats["frontier"] = ONE_SOLVE_PER_BUDGET
        out.append(_never_worse(spec, out, budget, limits, result))
    return out


def _never_worse(spec: Spec, done: list[FrontierPoint], budget: float, limits: dict[str, float],
                 result: Result) -> FrontierPoint:
    """The point at `budget`; when `result` is worse than the previous point (a heuristic or rounded answer),
    the previous configuration, which fits the larger budget too, is carried forward (status feasible)."""
    previous = done[-1].result if done else None
    if previous is None or not previous.has_solution or (
            result.has_solution and result.objective >= previous.objective):
        return FrontierPoint(budget, result)
    carried = Answer(Status.FEASIBLE, previous.choice, previous.active, previous.objective, result.bound,
                     {**result.stats, "carried_forward_from_budget": done[-1].budget})
    return FrontierPoint(budget, verify(spec, limits, carried, result.backend, result.wall_time))


def _cheapest_by_solving(spec: Spec, resource: str, others: dict[str, float], backend: str,
                         options: dict[str, Any]) -> float | None:
    """The least cost of `resource` within the other budgets: maximise minus that cost."""
    least_cost = spec.replace(objective=tuple(Term(t.dims, -t.table, t.block) for t in spec.costs[resource]),
                              budgets=others)
    result = solve(least_cost, backend=backend, **options)
    return -result.objective if result.has_solution else None


def _resource(spec: Spec, resource: str | None) -> str:
    if resource is None:
        return default_resource(spec, "resource")
    if resource not in spec.costs:
        raise SpecError(f"resource: {resource!r} is not in the spec's costs ({sorted(spec.costs)})")
    return resource


def _checked_budgets(budgets: Sequence[float]) -> list[float]:
    values = []
    for i, b in enumerate(budgets):
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)) or not math.isfinite(b):
            raise SpecError(f"budgets[{i}]: expected a finite number, got {b!r}")
        values.append(float(b))
    if not values:
        raise SpecError("budgets: expected at least one budget (or None for an automatic grid)")
    return sorted(values)


def _grid(low: float, high: float, points: int) -> list[float]:
    return [float(b) for b in np.linspace(low, high, points)] if points > 1 else [high]


# ---- plotting ------------------------------------------------------------------------------------

UNIT_SUFFIXES = {"ns": "ns", "us": "µs", "ms": "ms", "s": "s", "kb": "kB", "mb": "MB", "gb": "GB",
                 "mj": "mJ", "j": "J", "w": "W", "mflops": "MFLOPs", "gflops": "GFLOPs"}


def axis_label(spec: Spec | None, resource: str) -> str:
    """`<resource> budget (<unit>)`: the unit named by the spec's meta["units"], else by a unit suffix of the
    resource name (`latency_ms`), else "spec units"."""
    units = (spec.meta.get("units") if spec is not None else None) or {}
    unit = units.get(resource) if isinstance(units, dict) else None
    suffix = resource.rpartition("_")[2].lower()
    unit = unit or (UNIT_SUFFIXES.get(suffix) if "_" in resource else None)
    return f"{resource} budget ({unit or 'spec units'})"


def plot(points: Sequence[FrontierPoint], spec: Spec | None = None, resource: str | None = None,
         path: str | Path | None = None, ax: Any = None, title: str | None = None) -> Any:
    """Draw objective versus budget with matplotlib (the `plot` extra); returns the figure.

    Marks the spec's own budget of `resource` when it has one; writes `path` when given.
    """
    try:
        from matplotlib.figure import Figure     # no pyplot: no global state, works without a display
    except ImportError:
        raise SpecError("plot: matplotlib is not installed; pip install 'mdp-opt[plot]'") from None
    if resource is None:
        resource = _resource(spec, None) if spec is not None else "budget"
    solved = [p for p in points if p.objective is not None]
    figure = ax.figure if ax is not None else Figure(figsize=(7, 4.5))
    ax = ax if ax is not None else figure.add_subplot()
    ax.plot([p.budget for p in solved], [p.objective for p in solved], marker=".", linewidth=1.5,
            drawstyle="steps-post", label="optimal value" if all(p.status is Status.OPTIMAL for p in solved)
            else "best value found")
    if spec is not None and resource in spec.budgets:
        b = spec.budgets[resource]
        ax.axvline(b, color="tab:red", linestyle="--", linewidth=1, label=f"spec budget = {b:.6g}")
    if spec is not None and resource in spec.costs:
        ax.axvline(spec.full_cost(resource), color="gray", linestyle=":", linewidth=1, label="full (unpruned) cost")
    units = (spec.meta.get("units") if spec is not None else None) or {}
    objective_unit = units.get("objective") if isinstance(units, dict) else None
    ax.set_xlabel(axis_label(spec, resource))
    ax.set_ylabel(f"objective ({objective_unit})" if objective_unit else "objective (kept importance)")
    ax.set_title(title or f"Value versus {resource} budget" + (f": {spec.name}" if spec is not None and spec.name
                                                                 else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


# ---- command line --------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `mdp-opt frontier`."""
    from .cli import add_spec_arguments
    add_spec_arguments(parser)
    parser.add_argument("--resource", help="the resource whose budget varies (default: latency, or the only one)")
    parser.add_argument("--points", type=int, default=50, help="budgets in the grid (default 50)")
    parser.add_argument("--budgets", metavar="B1,B2,...",
                        help="explicit budgets (numbers or percentages of the full cost) instead of the grid")
    parser.add_argument("--backend", default="dp", help="dp (one pass for every budget, default) or any backend")
    parser.add_argument("--time-limit", type=float, metavar="S", help="seconds (per solve with other backends)")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="backend option, e.g. resolution=10")
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"budget", "objective", "costs", "status"}')
    parser.add_argument("--plot", metavar="OUT.png", help="draw objective versus budget to this image file")


def run(args: argparse.Namespace) -> int:
    """`mdp-opt frontier`: print the frontier as a table (or JSON) and optionally plot it."""
    from .cli import UsageError, parse_options, spec_from_args
    spec = spec_from_args(args)
    resource = _resource(spec, args.resource)
    budgets = None
    if args.budgets:
        budgets = []
        for item in args.budgets.split(","):
            text = item.strip()
            try:
                value = text if text.endswith("%") else float(text)
            except ValueError:
                raise UsageError(f"--budgets: {text!r} is neither a number nor a percentage like 50%") from None
            budgets.append(resolve_budgets(spec, {resource: value})[resource])
    options = parse_options(args.option)
    if args.time_limit is not None:
        options["time_limit"] = args.time_limit
    if args.points < 1:
        raise UsageError(f"--points: expected a positive number of budgets, got {args.points}")
    start = time.perf_counter()
    try:
        points = frontier(spec, resource, budgets, args.points, backend=args.backend, **options)
    except TimeoutError as e:
        print(f"mdp-opt: {e}; raise --time-limit or pass --option resolution=R", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps([p.to_dict() for p in points], indent=2))
    else:
        print(_table(spec, resource, points, elapsed))
    if args.plot:
        plot(points, spec=spec, resource=resource, path=args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def _table(spec: Spec, resource: str, points: Sequence[FrontierPoint], elapsed: float) -> str:
    if not points:
        return f"no configuration satisfies the spec's other budgets {dict(spec.budgets)}"
    full = spec.full_cost(resource)
    others = [r for r in spec.costs if r != resource]
    header = f"{'budget':>14} {'% full':>7} {'objective':>16} {'status':<10} {resource:>14}" + "".join(
        f" {r:>14}" for r in others) + f" {'blocks':>7}"
    lines = [header, "-" * len(header)]
    for p in points:
        share = f"{100 * p.budget / full:6.1f}%" if full else "      -"
        objective = f"{p.objective:16.10g}" if p.objective is not None else f"{'-':>16}"
        costs = "".join(f" {p.costs[r]:14.8g}" if r in p.costs else f" {'-':>14}" for r in [resource] + others)
        active = p.result.active
        blocks = f"{sum(active.values())}/{len(active)}" if p.objective is not None and active else "-"
        lines.append(f"{p.budget:14.8g} {share} {objective} {p.status.value:<10}{costs} {blocks:>7}")
    lines.append(f"{len(points)} budgets in {elapsed:.2f} s ({points[0].result.stats.get('frontier', '')})")
    return "\n".join(lines)
