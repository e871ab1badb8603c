"""The Lagrangian presolve shared by every backend that declares `Feature.PRESOLVE`, as a reduction.

`presolve(spec, limits)` applies it: the Lagrangian dual (`dual.py`) gives a proven upper
bound and feasible configurations, improved by local search (`local_search.py`); reduced-cost
fixing (`fixing.py`) then drops every dim choice and block state no configuration as good as
the incumbent can use. The result, `Presolved`, is either decided (proven optimal or
infeasible: `answer()`) or holds the reduced problem (`spec`, `limits`) whose answers `lift`
maps back, keeping the presolve's bound and incumbent.

Every comparison that removes something keeps a float-rounding margin in the safe direction:
when unsure, a choice is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..deadline import Deadline
from ..factor_graph import SpecGraph, TableTooLarge
from ..result import NUMERIC_TOLERANCE, OPTIMALITY_GAP, Answer, BackendError, Status, relative_gap
from ..spec import Spec
from .dual import LagrangianSearch
from .fixing import keep_masks, reduce_spec, state_bounds
from .probing import PROBE_MIN_CHOICES, PROBE_MIN_GAP, open_choices, probe
from .shared import SharedPresolve
from .warm import warm_start

# the presolve runs a dozen elimination passes; beyond this table size it would cost more than it
# saves, so it steps aside (status "skipped") and the backend gets the original spec
PRESOLVE_MEMORY_LIMIT = 256 * 1024**2

Configuration = tuple[dict[str, int], dict[str, bool]]


@dataclass
class Presolved:
    """What the presolve found (a `Reduction`).

    status: "optimal" (the incumbent is proven optimal), "infeasible" (proven), "reduced" (solve
        `spec` under `limits` and `lift` the answer), "skipped" (the factor graph exceeds the memory
        limit; `spec` is the original) or "stopped" (the deadline passed during the search).
    bound: proven upper bound on the best feasible value (None when skipped or infeasible).
    incumbent: (choice, active, value) of the best feasible configuration found, in the original
        spec's indices, or None.
    spec: the problem left to solve: same dim names, a subset of each dim's choices with sliced
        tables; blocks fixed active lose their gate, blocks fixed removed lose their terms.
    kept: dim name -> original indices of the reduced spec's choices.
    fixed_blocks: block name -> state, for blocks no longer in the reduced spec.
    """

    status: str
    bound: float | None
    incumbent: tuple[dict[str, int], dict[str, bool], float] | None
    spec: Spec
    limits: dict[str, float]
    kept: dict[str, tuple[int, ...]]
    fixed_blocks: dict[str, bool]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        """True when the presolve's own answer is final (no backend needed)."""
        return self.status in ("optimal", "infeasible", "stopped")

    def lift_configuration(self, choice: Mapping[str, int], active: Mapping[str, bool] | None) -> Configuration:
        """A configuration of the reduced spec in the original spec's indices."""
        return {d: self.kept[d][int(k)] for d, k in choice.items()}, {**dict(active or {}), **self.fixed_blocks}

    def restrict(self, choice: Mapping[str, int], active: Mapping[str, bool]) -> Configuration | None:
        """An original configuration in the reduced spec's indices; None when it uses a removed state."""
        if any(choice[d] not in kept for d, kept in self.kept.items()):
            return None
        if any(active[b] != state for b, state in self.fixed_blocks.items()):
            return None
        return ({d: kept.index(choice[d]) for d, kept in self.kept.items()},
                {b: active[b] for b in self.spec.block_names})

    def hint(self, user_hint: Configuration | None) -> tuple[Configuration | None, str | None]:
        """A starting configuration for the backend in the reduced spec's indices, and where it came from:
        the user's hint when it survived the fixing, else the incumbent (every feasible configuration using
        a removed state is worse than it)."""
        if user_hint is not None:
            restricted = self.restrict(*user_hint)
            if restricted is not None:
                return restricted, "user"
        if self.incumbent is not None:
            return self.restrict(*self.incumbent[:2]), "incumbent"
        return None, None

    def answer(self, out_of_time: bool = False) -> Answer:
        """The presolve's own answer: final when `decided`; with `out_of_time`, its incumbent as a feasible
        answer with its bound (time_limit_no_solution without one)."""
        stats: dict[str, Any] = {"presolve": self.stats, "solved_by": "presolve"}
        if self.status == "infeasible":
            return Answer(Status.INFEASIBLE, stats=stats)
        if self.status == "optimal":
            choice, active, value = self.incumbent
            return Answer(Status.OPTIMAL, choice, active, objective=value, bound=self.bound, stats=stats)
        if not (out_of_time or self.status == "stopped"):
            raise ValueError(f"presolve status {self.status!r} has no answer of its own; solve the reduced spec")
        stats["message"] = "the presolve used the whole time limit"
        if self.incumbent is None:
            return Answer(Status.TIME_LIMIT_NO_SOLUTION, bound=self.bound, stats=stats)
        choice, active, value = self.incumbent
        return Answer(Status.FEASIBLE, choice, active, objective=value, bound=self.bound, stats=stats)

    def lift(self, answer: Answer) -> Answer:
        """A backend's answer on the reduced spec, mapped to the original spec, with the presolve's bound
        and incumbent."""
        stats = {**answer.stats, "presolve": self.stats, "solved_by": "backend"}
        status = Status(answer.status)
        bound = self.bound
        if answer.bound is not None and status is not Status.INFEASIBLE:
            bound = answer.bound if bound is None else min(bound, answer.bound)
        best = None
        if status.has_solution and answer.choice is not None:
            choice, active = self.lift_configuration(answer.choice, answer.active)
            best = (choice, active, answer.objective)
            if self.incumbent is not None and answer.objective is not None and answer.objective < self.incumbent[2]:
                # a claimed optimum a hair below the incumbent is solver arithmetic; the incumbent wins
                if status is Status.OPTIMAL and relative_gap(self.incumbent[2], answer.objective) > NUMERIC_TOLERANCE:
                    raise BackendError(f"backend claims optimal value {answer.objective!r}, but the presolve "
                                       f"found a feasible configuration worth {self.incumbent[2]!r}")
                best = self.incumbent
        elif self.incumbent is not None:
            best = self.incumbent
            stats["backend_status"] = status.value
        if best is None:
            return Answer(status, bound=bound if status is not Status.INFEASIBLE else None, stats=stats)
        choice, active, value = best
        if status is not Status.OPTIMAL:
            proven = value is not None and bound is not None and relative_gap(bound, value) <= OPTIMALITY_GAP
            status = Status.OPTIMAL if proven else Status.FEASIBLE
        return Answer(status, choice, active, objective=value, bound=bound, stats=stats)


def presolve(spec: Spec, limits: Mapping[str, float], deadline: Deadline | None = None,
             memory_limit: float = PRESOLVE_MEMORY_LIMIT, shared: SharedPresolve | None = None,
             hint: Configuration | None = None) -> Presolved:
    """Apply the presolve to `spec` under `limits` (resource -> largest cost allowed; see `budgets.limits`).

    `shared`: a `SharedPresolve` of this same spec (its factor graph, earlier passes and incumbents are
    reused, and this call's incumbent is added to it; its own memory limit applies).
    `hint`: a configuration (choice, active), such as the user's hint: when it fits the limits it is the first
    incumbent, so the fixing keeps only what could beat it (`stats["hint_value"]`: its value, None when it
    does not fit).

    One round: repeating the fixing on the reduced spec was measured to remove nothing more (the
    configurations that attain the dual bound all survive, so the reduced spec has the same bound).
    """
    start = time.perf_counter()
    limits = dict(limits)
    identity = {d.name: tuple(range(d.size)) for d in spec.dims}

    def finish(status: str, bound: float | None, incumbent: Any, reduced: Spec = spec,
               kept: dict[str, tuple[int, ...]] = identity, fixed: dict[str, bool] | None = None,
               **stats: Any) -> Presolved:
        pre = Presolved(status, bound, incumbent, reduced, limits, kept, fixed or {})
        pre.stats = {"status": status, "bound": bound, "incumbent": None if incumbent is None else incumbent[2],
                     **stats,
                     "choices_total": sum(d.size for d in spec.dims),
                     "choices_kept": sum(d.size for d in reduced.dims),
                     "choices_fixed": sum(d.size for d in spec.dims) - sum(d.size for d in reduced.dims),
                     "blocks_total": len(spec.blocks), "blocks_fixed": len(pre.fixed_blocks),
                     "time": time.perf_counter() - start}
        return pre

    try:
        if shared is not None:
            graph = shared.graph()
        else:
            graph = SpecGraph(spec, memory_limit=memory_limit)
            graph.plan  # noqa: B018 - builds the elimination plan, which refuses a table over the memory limit
    except TableTooLarge as e:
        return finish("skipped", None, None, reason=str(e))
    warm = time.perf_counter()
    # a frontier's later budgets start from the passes of the earlier ones instead
    seeds = warm_start(graph, limits, deadline) if shared is None or not shared.stats["passes_run"] else []
    warm = time.perf_counter() - warm
    search = LagrangianSearch(graph, spec, limits, deadline, shared, seeds)
    if shared is not None:
        shared.stats["solves"] += 1
        for x, value, costs in shared.incumbents(limits):
            search.offer(x, value, costs)
    hint_value = None
    if hint is not None:
        x = graph.assignment(*hint)
        value, costs = graph.evaluate(x)
        if search.local.feasible(costs):
            hint_value = value
            search.offer(x, value, costs)
    infeasible = search.run()
    if shared is not None:
        shared.remember(search.incumbent, search.incumbent_value)
    stats = {"lambdas": dict(search.best_lambdas), "passes": search.passes, "local_moves": search.local.moves,
             "warm_start": {"seeds": len(seeds), "time": warm}}
    if hint is not None:
        stats["hint_value"] = hint_value        # None: the hint does not fit the limits
    if infeasible:
        return finish("infeasible", None, None, **stats)
    incumbent = search.incumbent_configuration()
    if incumbent is not None and relative_gap(search.bound, incumbent[2]) <= OPTIMALITY_GAP:
        return finish("optimal", search.bound, incumbent, **stats)
    if deadline is not None and deadline.expired:
        return finish("stopped", search.bound, incumbent, **stats)
    if incumbent is None:
        return finish("reduced", search.bound, None, **stats)
    bounds = state_bounds(graph, search.best_lambdas, limits)
    search.passes += 1
    stats["passes"] = search.passes
    keep = keep_masks(bounds, search.incumbent, search.incumbent_value)
    x, value, bound = search.incumbent, search.incumbent_value, search.bound
    if open_choices(spec, keep) >= PROBE_MIN_CHOICES or relative_gap(bound, value) >= PROBE_MIN_GAP:
        probed = probe(graph, limits, keep, bounds, x, value, search.hull_difference(), deadline)
        if probed is not None:
            keep, x, value, bound = probed.keep, probed.incumbent, probed.incumbent_value, probed.bound
            stats["probing"] = probed.stats
            if shared is not None:
                shared.remember(x, value)
    incumbent = (*graph.configuration(x), value)
    if relative_gap(bound, value) <= OPTIMALITY_GAP:
        return finish("optimal", bound, incumbent, **stats)
    reduced, kept, fixed = reduce_spec(spec, keep, x)
    if not reduced.blocks and all(d.size == 1 for d in reduced.dims):
        # only the incumbent is left, and fixing keeps every optimal configuration
        return finish("optimal", incumbent[2], incumbent, reduced, kept, fixed, **stats)
    return finish("reduced", bound, incumbent, reduced, kept, fixed, **stats)
