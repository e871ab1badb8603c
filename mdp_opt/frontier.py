"""The value-versus-budget frontier: the optimal value (and configuration) at a grid of budgets.

    from mdp_opt import frontier
    from mdp_opt.plots import plot_frontier
    points = frontier(spec, resource="latency", points=50)
    plot_frontier(points, spec=spec, path="frontier.png")

A backend declaring `Feature.FRONTIER` (`dp`) computes the best value at every budget from one
pass: its hook `frontier(spec, resource, other_limits, cap, points, options)` returns an object
with `cheapest()` (the least cost of `resource` within the other limits) and `answer(limit)`;
it raises `FrontierUnavailable` when that pass would cost more than solving each budget alone.
Then, and for any other backend, `solve()` (with its presolve) is called once per budget, every tenth
budget first and then the others in increasing order, all sharing one `presolve.SharedPresolve` (graph,
Lagrangian passes, incumbents, and the fixings' max-marginals that bracket the budgets between them).
Either way every point is verified like a `solve()` result, and the values never decrease with
the budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .backend import Feature, FrontierUnavailable, get_backend
from .budgets import budget_limit, default_resource, limits
from .factor_graph import TableTooLarge
from .pool import run_jobs
from .presolve import SharedPresolve
from .result import Answer, Result, Status
from .solve import solve, verify
from .spec import Spec, SpecError, Term
# how each point was computed, in its result's stats["frontier"]
ONE_PASS = "one pass for every budget"
ONE_SOLVE_PER_BUDGET = "one solve per budget"
SHARED_PRESOLVE = "one solve per budget, sharing the presolve's graph, passes and incumbents"
COARSE_STRIDE = 10      # sharing the presolve: every 10th budget first, then those between them


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
             backend: str = "dp", ray: str | None = None, share: bool = True, workers: int = 1,
             **options: Any) -> list[FrontierPoint]:
    """The optimal value of `spec` at a grid of budgets of `resource`, other budgets of the spec enforced.

    Args:
        resource: the resource whose budget varies (default: the spec's only resource, its only budgeted
            one, or `latency`).
        budgets: the budgets to evaluate (absolute numbers); None for `points` budgets evenly spaced from
            the cheapest feasible configuration's cost to the full (unpruned) cost.
        points: the grid size when `budgets` is None.
        backend: a backend with `Feature.FRONTIER` (`dp`: one pass for every budget, unless that pass
            would cost more than one `solve()` per budget) or any registered backend (one `solve()` per
            budget, presolve included).
        ray: solve budget by budget on a Ray cluster (an address, "auto" or "local:N"; see `mdp_opt.pool`),
            one job per budget; the points are the same as here. (A one-pass frontier runs here.)
        share: when solving budget by budget here with a backend that runs the presolve, share one
            `SharedPresolve` across the budgets (the factor graph, the Lagrangian passes and the incumbents of
            smaller budgets are reused, and budgets between two fixed ones run on a smaller graph); the answers are
            the same. False solves each
            budget alone (for benchmarking).
        workers: with `share`, solve in this many processes of this machine, each taking every `workers`-th
            budget with its own `SharedPresolve` (the points are the same; on 2 cores a 100-point frontier of a
            10,000-choice spec took 17 s with 2 workers, 26 s with 1). The processes are spawned: a script
            calling this needs the usual `if __name__ == "__main__":` guard. Not with `ray` or `share=False`;
            unused where dp's one pass applies.
        options: passed to the backend (`resolution`, `memory_cap`, `time_limit`, ...). With one pass,
            `time_limit` bounds the whole pass and reaching it raises TimeoutError; otherwise it applies
            to each solve.

    Returns the points in increasing budget order (an empty list when no configuration satisfies the
    spec's other budgets); `point.result.stats["frontier"]` says how they were computed. A budget below
    the cheapest configuration gives status `infeasible`.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"spec: expected mdp_opt.Spec, got {type(spec).__name__}; load JSON with mdp_opt.load()")
    resource = checked_resource(spec, resource)
    others = {r: b for r, b in spec.budgets.items() if r != resource}
    grid = None if budgets is None else _checked_budgets(budgets)
    if not isinstance(share, bool):
        raise SpecError(f"share: expected True or False, got {share!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers: expected a positive whole number of processes, got {workers!r}")
    if workers > 1 and (ray is not None or not share):
        raise SpecError("workers: processes here share the presolve within each; with ray= or share=False use "
                        "ray='local:N' for N processes instead")
    if grid is None and (isinstance(points, bool) or not isinstance(points, int) or points < 1):
        raise SpecError(f"points: expected a positive whole number of budgets, got {points!r}")
    full = spec.full_cost(resource)
    hook = get_backend(backend).frontier if get_backend(backend).has(Feature.FRONTIER) else None
    shared = SharedPresolve(spec) if share and ray is None else None
    if hook is not None and ray is None:
        try:
            return _frontier_one_pass(hook, spec, resource, others, grid, points, full, backend, options)
        except FrontierUnavailable:
            pass                     # the one pass would cost more than solving budget by budget
    return _frontier_by_solving(spec, resource, others, grid, points, full, backend, options, ray, shared, workers)


def _frontier_one_pass(hook: Any, spec: Spec, resource: str, others: dict[str, float], grid: list[float] | None,
                       points: int, full: float, backend: str, options: dict[str, Any]) -> list[FrontierPoint]:
    start = time.perf_counter()
    other_limits = limits(others)
    count = len(grid) if grid is not None else points
    front = hook(spec, resource, other_limits, budget_limit(full if grid is None else max(grid)), count, options)
    cheapest = front.cheapest()
    if grid is None and cheapest is None:
        # every configuration within the other budgets costs more than full
        front = hook(spec, resource, other_limits, None, count, options)
        cheapest = front.cheapest()
    if grid is None:
        if cheapest is None:
            return []
        grid = _grid(cheapest, max(full, cheapest), points)
    wall = (time.perf_counter() - start) / len(grid)
    out: list[FrontierPoint] = []
    for budget in grid:
        answer = front.answer(float(budget_limit(budget)))
        answer.stats["frontier"] = ONE_PASS
        result = verify(spec, {resource: budget, **others}, answer, backend, wall)
        out.append(_never_worse(spec, out, budget, {resource: budget, **others}, result))
    return out


def _least_cost(shared: SharedPresolve, resource: str) -> float | None:
    """The cost of `resource` of a least-cost configuration (one elimination pass of the shared graph, where
    the spec has no other budget, instead of a solve); None when the graph is over the presolve's memory limit."""
    try:
        graph = shared.graph()
    except TableTooLarge:
        return None
    _, x = shared.max_sum({resource: 1.0}, value_weight=0.0)
    return graph.evaluate(x)[1][resource]


def _frontier_by_solving(spec: Spec, resource: str, others: dict[str, float], grid: list[float] | None,
                         points: int, full: float, backend: str, options: dict[str, Any],
                         ray: str | None = None, shared: SharedPresolve | None = None, workers: int = 1
                         ) -> list[FrontierPoint]:
    """One solve() per budget; a configuration found at a smaller budget is carried forward when the
    backend (e.g. stopped by a time limit) returns something worse, so values never decrease. Without
    Ray, a backend with the presolve shares one `SharedPresolve` across the budgets (one per worker process)."""
    if grid is None:
        cheapest = _least_cost(shared, resource) if shared is not None and not others else None
        if cheapest is None:
            cheapest = _cheapest_by_solving(spec, resource, others, backend, options)
        if cheapest is None:
            return []
        grid = _grid(cheapest, max(full, cheapest), points)
    jobs = [(spec, {resource: budget, **others}, backend, options) for budget in grid]
    out: list[FrontierPoint] = []
    if shared is not None and get_backend(backend).has(Feature.PRESOLVE) and options.get("presolve", True) is True:
        # each solve reuses the factor graph, the Lagrangian passes and the incumbents of the solves before it
        # (an answer at a smaller budget fits every larger one), and the fixings' max-marginals (see `_solve_shared`)
        all_budgets = [budgets for _, budgets, _, _ in jobs]
        if workers == 1:
            results = _solve_shared(spec, all_budgets, backend, options, shared)
        else:
            results = _solve_in_processes(spec, all_budgets, backend, options, workers)
        for budgets, result in zip(all_budgets, results):
            out.append(_never_worse(spec, out, budgets[resource], budgets, result))
        return out
    for (_, budgets, _, _), result in zip(jobs, run_jobs(_solve_one, jobs, ray)):
        result.stats["frontier"] = ONE_SOLVE_PER_BUDGET
        out.append(_never_worse(spec, out, budgets[resource], budgets, result))
    return out


def _solve_shared(spec: Spec, all_budgets: list[dict[str, float]], backend: str, options: dict[str, Any],
                  shared: SharedPresolve | None = None) -> list[Result]:
    """`solve()` at each budget (given in increasing order), all sharing one `SharedPresolve`: every
    COARSE_STRIDE-th budget and the last first, then the others, which their fixings bracket (`presolve.interval`)."""
    shared = shared or SharedPresolve(spec)
    results: list[Result] = [None] * len(all_budgets)  # type: ignore[list-item]
    for i in coarse_first(len(all_budgets)):
        result = solve(spec, all_budgets[i], backend=backend, **{**options, "presolve": shared})
        result.stats["frontier"] = SHARED_PRESOLVE
        results[i] = result
    for result in results:
        result.stats["shared_presolve"] = dict(shared.stats)     # what was shared over all these budgets
    return results


def coarse_first(n: int, stride: int | None = None) -> list[int]:
    """0, stride, 2 stride, ..., n - 1 (stride: COARSE_STRIDE), then the other indices in increasing order."""
    stride = stride or COARSE_STRIDE
    coarse = sorted(set(range(0, n, stride)) | ({n - 1} if n else set()))
    return coarse + [i for i in range(n) if i not in set(coarse)]


def _solve_in_processes(spec: Spec, all_budgets: list[dict[str, float]], backend: str, options: dict[str, Any],
                        workers: int) -> list[Result]:
    """`_solve_shared` split over `workers` spawned processes, worker w taking budgets w, w + workers, ... (each
    still in increasing order, and the costly small budgets spread over all of them)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    workers = min(workers, len(all_budgets))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [pool.submit(_solve_shared, spec, all_budgets[w::workers], backend, options) for w in range(workers)]
        chunks = [part.result() for part in parts]
    results: list[Result] = [None] * len(all_budgets)  # type: ignore[list-item]
    for w, chunk in enumerate(chunks):
        results[w::workers] = chunk
    return results


def _solve_one(spec: Spec, budgets: dict[str, float], backend: str, options: dict[str, Any]) -> Result:
    return solve(spec, budgets, backend=backend, **options)


def _never_worse(spec: Spec, done: list[FrontierPoint], budget: float, budgets: dict[str, float],
                 result: Result) -> FrontierPoint:
    """The point at `budget`; when `result` is worse than the previous point (a heuristic or rounded answer),
    the previous configuration, which fits the larger budget too, is carried forward (status feasible)."""
    previous = done[-1].result if done else None
    if previous is None or not previous.has_solution or (
            result.has_solution and result.objective >= previous.objective):
        return FrontierPoint(budget, result)
    carried = Answer(Status.FEASIBLE, previous.choice, previous.active, previous.objective, result.bound,
                     {**result.stats, "carried_forward_from_budget": done[-1].budget})
    return FrontierPoint(budget, verify(spec, budgets, carried, result.backend, result.wall_time))


def _cheapest_by_solving(spec: Spec, resource: str, others: dict[str, float], backend: str,
                         options: dict[str, Any]) -> float | None:
    """The least cost of `resource` within the other budgets: maximise minus that cost."""
    least_cost = spec.replace(objective=tuple(Term(t.dims, -t.table, t.block) for t in spec.costs[resource]),
                              budgets=others)
    result = solve(least_cost, backend=backend, **options)
    return -result.objective if result.has_solution else None


def checked_resource(spec: Spec, resource: str | None) -> str:
    """`resource`, or the spec's default one when None; a SpecError names an unknown one."""
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
