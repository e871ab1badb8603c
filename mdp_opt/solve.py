"""`solve()`: resolve budgets, run the presolve and the chosen backend, verify the answer.

The flow of one call: budgets are resolved and turned into limits (`budgets.py`, the one
tolerance); one `Deadline` starts; a backend declaring `Feature.PRESOLVE` gets the presolve's
reduced problem (`presolve.presolve`, lifted back with `Presolved.lift`), others the spec
itself; an optimal answer of an exact backend is moved, among configurations of exactly the
same value, to one that keeps more (`ties.keep_more`); every answer is re-evaluated by `verify`
before it is returned.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

from .backend import Backend, Feature, get_backend, load_backend, take_options
from .budgets import BudgetLike, limits, resolve_budgets, within_budget
from .deadline import Deadline, StillRunning, TimeUp
from .evaluate import configuration_from_hint, evaluate
from .presolve import Presolved, SharedPresolve
from .presolve import presolve as run_presolve
from .result import (NUMERIC_TOLERANCE, OPTIMALITY_GAP, Answer, BackendError, Interrupted, Result, Status,
                     relative_gap)
from .spec import Spec, SpecError
from .ties import keep_more


def solve(spec: Spec, budget: BudgetLike = None, backend: str = "cpsat", time_limit: float | None = None,
          presolve: bool | SharedPresolve = True, **options: Any) -> Result:
    """Find a configuration of maximum value whose costs are within budget.

    Args:
        spec: the problem.
        budget: a number (for the spec's only resource, its only budgeted one, or `latency`),
            a percentage string of the full unpruned cost (`"50%"`), or a mapping
            resource -> number or percentage, merged over the spec's own `budgets`.
            None uses the spec's budgets.
        backend: a registered backend name (`cpsat`, `milp`, `dp`, `mindtpy`, `brute`, ...).
        time_limit: seconds for the whole call; when reached, the best solution found is returned
            as `feasible` with the best proven bound.
        presolve: run the Lagrangian presolve first (for backends declaring `Feature.PRESOLVE`): it
            may prove the answer alone, else the backend solves a reduced spec. False skips it (for
            benchmarking); `stats["presolve"]` reports what it did. A `SharedPresolve(spec)` instead of True
            shares the presolve's factor graph, Lagrangian passes and incumbents across calls on the same spec
            at different budgets (what `frontier` does); the answers are the same.
        options: passed to the backend (e.g. `threads=2`); unknown ones are an error.

    Returns a verified `Result`; infeasible budgets give status `infeasible`, not an exception.
    Ctrl-C stops every built-in backend within 2 s and raises `mdp_opt.Interrupted` (a KeyboardInterrupt)
    whose `.result` holds the best verified configuration found so far (status `interrupted`).
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"spec: expected mdp_opt.Spec, got {type(spec).__name__}; load JSON with mdp_opt.load()")
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                   or not 0 < time_limit < math.inf):
        raise SpecError(f"time_limit: expected a positive finite number of seconds (or None), got {time_limit!r}")
    if isinstance(presolve, SharedPresolve):
        if presolve.spec is not spec:
            raise SpecError("presolve: this SharedPresolve was made for another spec; make one with "
                            "SharedPresolve(spec) for the spec you solve")
    elif not isinstance(presolve, bool):
        raise SpecError(f"presolve: expected True, False or a SharedPresolve, got {presolve!r}")
    budgets = resolve_budgets(spec, budget)
    caps = limits(budgets)
    info = get_backend(backend)
    fn = load_backend(backend)
    if info.options is not None:  # names and values, before the presolve, which may answer without the backend
        merged = take_options(options, info.options, backend)
        if info.check is not None:
            info.check(merged, spec, caps)
    start = time.perf_counter()
    deadline = Deadline(time_limit)
    progress: dict[str, Any] = {}
    try:
        answer = deadline.run(lambda: _answer(spec, caps, info, fn, dict(options), deadline, presolve, progress))
    except StillRunning as e:
        answer = _abandoned(progress, str(e))
    if deadline.interrupted and isinstance(answer, Answer) and answer.status not in (Status.OPTIMAL,
                                                                                    Status.INFEASIBLE):
        answer = Answer(Status.INTERRUPTED, answer.choice, answer.active, answer.objective, answer.bound,
                        {**answer.stats, "stopped_by": "Ctrl-C"})
    result = verify(spec, budgets, answer, backend, time.perf_counter() - start)
    if deadline.interrupted:
        raise Interrupted(result)       # the user asked to stop: loops around solve() stop too
    return result


def _abandoned(progress: dict[str, Any], why: str) -> Answer:
    """The answer when the backend did not stop in time: the presolve's incumbent and bound, if it ran."""
    pre = progress.get("presolved")
    answer = pre.answer(out_of_time=True) if pre is not None else Answer(Status.TIME_LIMIT_NO_SOLUTION)
    answer.stats["message"] = f"{why}; the backend was abandoned" + (
        " and the presolve's answer is returned" if pre is not None else "")
    return answer


def _answer(spec: Spec, caps: Mapping[str, float], info: Backend, fn: Any, options: dict[str, Any],
            deadline: Deadline, presolve: bool, progress: dict[str, Any]) -> Answer:
    answer = _solved(spec, caps, info, fn, options, deadline, presolve, progress)
    if isinstance(answer, Answer) and answer.status is Status.OPTIMAL and info.has(Feature.EXACT) \
            and answer.choice is not None:
        choice, active, moves = keep_more(spec, caps, answer.choice, answer.active or {}, deadline)
        answer = Answer(answer.status, choice, active, None if moves else answer.objective, answer.bound,
                        {**answer.stats, "ties": {"moves": moves}})
    return answer


def _solved(spec: Spec, caps: Mapping[str, float], info: Backend, fn: Any, options: dict[str, Any],
            deadline: Deadline, presolve: bool | SharedPresolve, progress: dict[str, Any]) -> Answer:
    if presolve is False or not info.has(Feature.PRESOLVE):
        return _call(fn, spec, caps, options, deadline)
    user_hint = options.pop("hint", None) if info.has(Feature.HINT) else None
    if user_hint is not None:
        user_hint = configuration_from_hint(spec, user_hint)
    shared = presolve if isinstance(presolve, SharedPresolve) else None
    pre = progress["presolved"] = run_presolve(spec, caps, deadline, shared=shared, hint=user_hint)
    if pre.decided:
        return pre.answer()
    if deadline.expired:
        return pre.answer(out_of_time=True)
    core = pre.core_near_bound()
    if core is not None:
        # the configurations nearest the bound first: a small problem, whose optimum is the answer when it
        # is worth the core's floor, and else a better incumbent that shrinks the full reduced problem
        started = time.perf_counter()
        first = _reduced_answer(fn, core, options, user_hint, info, deadline, shared)
        if not isinstance(first, Answer):
            return first
        report = {"floor": core.floor, "choices": core.stats["choices_kept"], "status": Status(first.status).value,
                  "value": first.objective, "time": time.perf_counter() - started}
        if Status(first.status) is Status.OPTIMAL or deadline.expired:
            core.stats["core"] = report
            return first
        pre = progress["presolved"] = pre.improved(first)
        pre.stats["core"] = report
        if pre.decided:
            return pre.answer()
    return _reduced_answer(fn, pre, options, user_hint, info, deadline, shared)


def _reduced_answer(fn: Any, pre: Presolved, options: dict[str, Any], user_hint: Any, info: Backend,
                    deadline: Deadline, shared: SharedPresolve | None) -> Answer:
    """The backend's answer to the presolve's reduced problem, lifted to the original spec."""
    options = dict(options)
    if info.has(Feature.HINT):
        hint, source = pre.hint(user_hint)
        if hint is not None:
            options["hint"] = {"choice": hint[0], "active": hint[1]}
            pre.stats["hint"] = source
    answer = _call(fn, pre.spec, pre.limits, options, deadline)
    if not isinstance(answer, Answer):
        return answer  # verify() reports the wrong type
    answer = pre.lift(answer)
    if shared is not None and answer.choice is not None and answer.objective is not None \
            and Status(answer.status).has_solution and pre.status == "reduced":
        shared.remember_configuration(answer.choice, answer.active or {}, answer.objective)
    return answer


def _call(fn: Any, spec: Spec, caps: Mapping[str, float], options: dict[str, Any], deadline: Deadline) -> Answer:
    """One backend call with the call's deadline; a backend stopped before it had any answer (it raised
    `TimeUp` from `deadline.check()`) gives `time_limit_no_solution`."""
    try:
        return fn(spec, caps, {**options, "time_limit": deadline.seconds(), "deadline": deadline})
    except TimeUp:
        return Answer(Status.TIME_LIMIT_NO_SOLUTION, stats={"message": "stopped before the backend had an answer"})


def verify(spec: Spec, budgets: Mapping[str, float], answer: Answer, backend: str, wall_time: float) -> Result:
    """Re-evaluate a backend's answer with the core; any disagreement raises BackendError."""
    if not isinstance(answer, Answer):
        raise BackendError(f"backend {backend!r} returned {type(answer).__name__}, expected mdp_opt.Answer")
    status = Status(answer.status)
    stats = dict(answer.stats)
    if answer.choice is None:
        if status.has_solution:
            raise BackendError(f"backend {backend!r}: status {status.value} without a configuration")
        return Result(status, None, answer.bound, None, {}, {}, {}, backend, wall_time, stats, dict(budgets))
    if not status.has_solution and status is not Status.INTERRUPTED:
        raise BackendError(f"backend {backend!r}: status {status.value} but a configuration was returned")
    choice = {k: int(v) for k, v in answer.choice.items()}
    active = {k: bool(v) for k, v in (answer.active or {}).items()}
    try:
        ev = evaluate(spec, choice, active, budgets)
    except SpecError as e:
        raise BackendError(f"backend {backend!r} returned an invalid configuration: {e}") from None
    if not ev.feasible:
        over = {r: (ev.costs[r], b) for r, b in budgets.items() if not within_budget(ev.costs[r], b)}
        raise BackendError(f"backend {backend!r} returned a configuration over budget: {over}")
    scale = max(1.0, abs(ev.value))
    if answer.objective is not None and abs(answer.objective - ev.value) > NUMERIC_TOLERANCE * scale:
        raise BackendError(f"backend {backend!r} reported objective {answer.objective!r}, "
                           f"but the configuration is worth {ev.value!r}")
    bound = answer.bound
    if bound is not None and bound < ev.value - NUMERIC_TOLERANCE * scale:
        raise BackendError(f"backend {backend!r} reported bound {bound!r} below its own solution's value {ev.value!r}")
    if status is Status.OPTIMAL:
        bound = ev.value if bound is None else max(bound, ev.value)
        if relative_gap(bound, ev.value) > OPTIMALITY_GAP:
            raise BackendError(f"backend {backend!r} claims optimal with bound {bound!r} above value {ev.value!r}")
        bound = ev.value
    elif bound is not None:
        bound = max(bound, ev.value)
    return Result(status, ev.value, bound, relative_gap(bound, ev.value), ev.kept, active, ev.costs,
                  backend, wall_time, stats, dict(budgets), choice)
