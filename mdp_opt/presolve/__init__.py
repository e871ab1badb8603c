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

import numpy as np

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

# the core near the bound (`Presolved.core_near_bound`): configurations worth at least bound - gap * this;
# a core is solved first only when the reduced problem has at least CORE_MIN_CHOICES dim choices
CORE_GAP_SHARE = 1 / 16
CORE_MIN_CHOICES = 200

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
    floor: every configuration of the original problem worth at least this is in `spec` (the incumbent's
        value; higher for a `core`), so an answer of `spec` below it bounds the original problem by it.
    """

    status: str
    bound: float | None
    incumbent: tuple[dict[str, int], dict[str, bool], float] | None
    spec: Spec
    limits: dict[str, float]
    kept: dict[str, tuple[int, ...]]
    fixed_blocks: dict[str, bool]
    stats: dict[str, Any] = field(default_factory=dict)
    floor: float = -np.inf
    fixing: _Fixing | None = field(default=None, repr=False)

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
        and incumbent. Every configuration worth at least `floor` is in the reduced spec, so its bound (its
        optimum's value when proven) bounds the original problem only up to `floor`."""
        stats = {**answer.stats, "presolve": self.stats, "solved_by": "backend"}
        status = Status(answer.status)
        bound = self.bound
        reduced_bound = answer.objective if status is Status.OPTIMAL and answer.objective is not None else answer.bound
        if reduced_bound is not None and status is not Status.INFEASIBLE:
            reduced_bound = max(reduced_bound, self.floor)
            bound = reduced_bound if bound is None else min(bound, reduced_bound)
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
        proven = value is not None and bound is not None and relative_gap(bound, value) <= OPTIMALITY_GAP
        return Answer(Status.OPTIMAL if proven else Status.FEASIBLE, choice, active, objective=value, bound=bound,
                      stats=stats)

    def core(self, value: float) -> Presolved:
        """The reduced problem that keeps only the incumbent's states and what a configuration worth at least
        `value` (>= the incumbent's) may use: smaller than `spec`, its optimum is the original problem's when
        worth at least `value`, and at least the incumbent's (mixing the incumbent with states near the bound
        is where better feasible configurations are found)."""
        if self.fixing is None or self.incumbent is None:
            raise ValueError("core: this presolve has no incumbent and fixing to start from")
        return self._refixed(self.fixing.x, max(value, self.incumbent[2]), self.incumbent, self.bound)

    def core_near_bound(self) -> Presolved | None:
        """The `core` of the configurations within `CORE_GAP_SHARE` of the gap below the bound, to solve first
        for a better incumbent (or the optimum); None when the reduced problem is small or already decided."""
        if self.status != "reduced" or self.fixing is None or self.stats["choices_kept"] < CORE_MIN_CHOICES:
            return None
        core = self.core(self.bound - CORE_GAP_SHARE * (self.bound - self.incumbent[2]))
        return core if core.stats["choices_kept"] < self.stats["choices_kept"] else None

    def improved(self, answer: Answer) -> Presolved:
        """This reduction again after a (lifted) answer of the original problem: its configuration, when better
        than the incumbent, becomes the incumbent and the fixing keeps only what could beat it; its bound, when
        lower, becomes the bound. Decided ("optimal") when the two meet."""
        if self.fixing is None or self.incumbent is None:
            raise ValueError("improved: this presolve has no incumbent and fixing to start from")
        bound = self.bound if answer.bound is None else min(self.bound, answer.bound)
        incumbent = self.incumbent
        if answer.choice is not None and answer.objective is not None and answer.objective > incumbent[2]:
            incumbent = (dict(answer.choice), dict(answer.active or {}), answer.objective)
        if incumbent is self.incumbent and bound == self.bound and self.floor <= incumbent[2]:
            return self             # nothing new, and not a core: the same reduction
        return self._refixed(self.fixing.graph.assignment(*incumbent[:2]), incumbent[2], incumbent, bound)

    def _refixed(self, x: np.ndarray, floor: float, incumbent: tuple[dict[str, int], dict[str, bool], float],
                 bound: float) -> Presolved:
        """Fixing again: the states of `x` and those some configuration worth `floor` may use."""
        fixing = self.fixing
        keep = [mask & (states >= floor) for mask, states in zip(fixing.keep, fixing.bounds)]
        for var, state in enumerate(x):
            keep[var][state] = True
        reduced, kept, fixed = reduce_spec(fixing.graph.spec, keep, x)
        decided = relative_gap(bound, incumbent[2]) <= OPTIMALITY_GAP
        stats = {**self.stats, "choices_kept": sum(d.size for d in reduced.dims), "blocks_fixed": len(fixed)}
        stats["choices_fixed"] = stats["choices_total"] - stats["choices_kept"]
        # the presolve's own masks travel on, so that a core's `improved` re-fixes from them, not from the core
        return Presolved("optimal" if decided else "reduced", bound, incumbent, reduced, self.limits, kept, fixed,
                         stats, floor, _Fixing(fixing.graph, fixing.bounds, fixing.keep, x))


@dataclass
class _Fixing:
    """What fixing at another value needs: the graph, per variable and state the bound of every feasible
    configuration using it, the states the presolve kept at its incumbent, and the assignment whose states the
    reduced problem keeps (the incumbent's)."""

    graph: SpecGraph
    bounds: list[np.ndarray]
    keep: list[np.ndarray]
    x: np.ndarray


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
               fixing: _Fixing | None = None, **stats: Any) -> Presolved:
        floor = -np.inf if incumbent is None else incumbent[2]
        pre = Presolved(status, bound, incumbent, reduced, limits, kept, fixed or {}, floor=floor, fixing=fixing)
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
    bounds = (shared.state_bounds(search.best_lambdas, limits, search.incumbent_value) if shared is not None
              else state_bounds(graph, search.best_lambdas, limits))
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
            # against probing's better incumbent: states kept only because the first incumbent used them go too,
            # so that fixing again at this incumbent (`Presolved.improved`) gives this same reduction
            keep = [mask & fresh for mask, fresh in zip(keep, keep_masks(bounds, x, value))]
    incumbent = (*graph.configuration(x), value)
    if relative_gap(bound, value) <= OPTIMALITY_GAP:
        return finish("optimal", bound, incumbent, **stats)
    reduced, kept, fixed = reduce_spec(spec, keep, x)
    if not reduced.blocks and all(d.size == 1 for d in reduced.dims):
        # only the incumbent is left, and fixing keeps every optimal configuration
        return finish("optimal", incumbent[2], incumbent, reduced, kept, fixed, **stats)
    return finish("reduced", bound, incumbent, reduced, kept, fixed, _Fixing(graph, bounds, keep, x), **stats)
