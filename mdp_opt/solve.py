"""`solve()`: resolve budgets, dispatch to a backend by name, verify its answer.

A backend is a function `(spec, budgets, options) -> Answer`. `options` always holds
`time_limit` (seconds or None) plus whatever the user passed; a backend must reject an
option it does not understand (see `take_options`). Backends are looked up in one table
and imported on first use, so the core never imports a solver.
"""

from __future__ import annotations

import importlib
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from .evaluate import evaluate, within_budget
from .presolve import solve_with_presolve
from .result import NUMERIC_TOLERANCE, OPTIMALITY_GAP, Answer, Result, Status, relative_gap
from .spec import Spec, SpecError

BackendFn = Callable[[Spec, Mapping[str, float], dict], Answer]
BudgetLike = Union[None, float, int, str, Mapping[str, Union[float, int, str]]]


class BackendError(RuntimeError):
    """A backend is unknown or not installed, or returned an answer that failed verification."""


@dataclass(frozen=True)
class BackendInfo:
    name: str
    target: str | BackendFn   # "module:function" or a callable
    extra: str | None         # pip extra that installs its dependencies
    description: str
    presolve: bool = False    # solve() runs the shared Lagrangian presolve (presolve.py) before it
    hint: bool = False        # it takes option `hint` = {"choice", "active"}; the presolve passes its incumbent
    options: Mapping[str, Any] | None = None  # accepted options -> defaults, when declared at registration


_REGISTRY: dict[str, BackendInfo] = {}


def register_backend(name: str, fn: str | BackendFn, extra: str | None = None, description: str = "",
                     presolve: bool = False, hint: bool = False, options: Mapping[str, Any] | None = None) -> None:
    """Add (or replace) a backend: `fn(spec, budgets, options) -> Answer`, or a "module:function" path.

    With `presolve=True`, `solve()` first runs the shared Lagrangian presolve and hands the
    backend the reduced spec (fewer choices, some blocks fixed), unless the presolve decides alone.
    With `hint=True` the backend accepts option `hint` = {"choice": ..., "active": ...} and the
    presolve passes its best configuration as one. `options` (name -> default) lets `solve()` reject
    an unknown option even when the presolve answers without calling the backend; a backend given as
    "module:function" declares them in its module's `DEFAULTS`.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"backend name {name!r}: use letters, digits, '_', '-', '.'")
    _REGISTRY[name] = BackendInfo(name, fn, extra, description, presolve, hint, options)


for _name, _target, _extra, _desc, _presolve, _hint in [
    ("cpsat", "mdp_opt.backends.cpsat:solve", "cpsat", "OR-Tools CP-SAT on the marginal linearisation (exact)", True, True),
    ("milp", "mdp_opt.backends.milp:solve", "milp", "HiGHS MILP on the marginal linearisation (exact)", True, True),
    ("dp", "mdp_opt.backends.dp:solve", None, "dynamic programming over the factor graph, numpy only (exact)", True, False),
    ("mindtpy", "mdp_opt.backends.mindtpy:solve", "mindtpy", "Pyomo MindtPy outer approximation, the paper's solver (heuristic)", False, False),
    ("brute", "mdp_opt.evaluate:brute_force", None, "enumerates every configuration (tiny specs only, exact)", False, False),
]:
    register_backend(_name, _target, _extra, _desc, _presolve, _hint)


def declared_options(name: str) -> Mapping[str, Any] | None:
    """The options backend `name` accepts (name -> default), or None when it declares none."""
    info = _REGISTRY[name]
    if info.options is not None or callable(info.target):
        return info.options
    return getattr(importlib.import_module(info.target.partition(":")[0]), "DEFAULTS", None)


def load_backend(name: str) -> BackendFn:
    """The backend function for `name`; a clear BackendError when unknown or not installed."""
    info = _REGISTRY.get(name)
    if info is None:
        raise BackendError(f"backend {name!r}: unknown; choose one of {sorted(_REGISTRY)} "
                           f"(installed: {installed_backends()})")
    if callable(info.target):
        return info.target
    module_name, _, attr = info.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = f"pip install 'mdp-opt[{info.extra}]'" if info.extra else "reinstall mdp-opt"
        raise BackendError(f"backend {name!r}: not installed ({e}); {hint}. "
                           f"Installed backends: {installed_backends()}") from None
    return getattr(module, attr)


def backend_status() -> dict[str, tuple[bool, str]]:
    """name -> (installed, description or the reason it is missing and how to install it)."""
    out = {}
    for name, info in _REGISTRY.items():
        try:
            load_backend(name)
            out[name] = (True, info.description)
        except BackendError as e:
            out[name] = (False, str(e).split(". Installed")[0])
    return out


def installed_backends() -> list[str]:
    names = []
    for name, info in _REGISTRY.items():
        if callable(info.target):
            names.append(name)
            continue
        try:
            importlib.import_module(info.target.partition(":")[0])
            names.append(name)
        except ImportError:
            pass
    return names


def take_options(options: Mapping[str, Any], defaults: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """Merge `options` over `defaults`; an unknown option raises SpecError listing the accepted ones."""
    unknown = sorted(set(options) - set(defaults) - {"time_limit"})
    if unknown:
        raise SpecError(f"option {unknown[0]!r}: not understood by backend {backend!r}; "
                        f"it accepts {sorted(set(defaults) | {'time_limit'})}")
    merged = dict(defaults)
    merged.update(options)
    return merged


_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*%\s*$")


def resolve_budgets(spec: Spec, budget: BudgetLike = None) -> dict[str, float]:
    """Turn a budget argument into resource -> absolute number (see `solve`)."""
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
            if not m:
                raise SpecError(f"budget.{r}: {b!r} is neither a number nor a percentage like '50%'")
            full = spec.full_costs() if full is None else full
            resolved[r] = float(m.group(1)) / 100.0 * full[r]
        elif isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b):
            resolved[r] = float(b)
        else:
            raise SpecError(f"budget.{r}: expected a finite number or a percentage string, got {b!r}")
    return resolved


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


def solve(spec: Spec, budget: BudgetLike = None, backend: str = "cpsat", time_limit: float | None = None,
          presolve: bool = True, **options: Any) -> Result:
    """Find a configuration of maximum value whose costs are within budget.

    Args:
        spec: the problem.
        budget: a number (for the spec's only resource, its only budgeted one, or `latency`),
            a percentage string of the full unpruned cost (`"50%"`), or a mapping
            resource -> number or percentage, merged over the spec's own `budgets`.
            None uses the spec's budgets.
        backend: a registered backend name (`cpsat`, `milp`, `dp`, `mindtpy`, `brute`, ...).
        time_limit: seconds; when reached, the best solution found is returned as `feasible`.
        presolve: run the Lagrangian presolve first (for backends registered with it; not `brute`):
            it may prove the answer alone, else the backend solves a reduced spec. False skips it
            (for benchmarking); `stats["presolve"]` reports what it did.
        options: passed to the backend (e.g. `threads=2`); unknown ones are an error.

    Returns a verified `Result`; infeasible budgets give status `infeasible`, not an exception.
    """
    if not isinstance(spec, Spec):
        raise TypeError(f"spec: expected mdp_opt.Spec, got {type(spec).__name__}; load JSON with mdp_opt.load()")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise SpecError(f"time_limit: expected a positive number of seconds, got {time_limit!r}")
    if not isinstance(presolve, bool):
        raise SpecError(f"presolve: expected True or False, got {presolve!r}")
    budgets = resolve_budgets(spec, budget)
    fn = load_backend(backend)
    accepted = declared_options(backend)
    if accepted is not None:
        take_options(options, accepted, backend)  # before the presolve, which may answer without the backend
    start = time.perf_counter()
    info = _REGISTRY[backend]
    if presolve and info.presolve:
        answer = solve_with_presolve(fn, spec, budgets, {"time_limit": time_limit, **options}, info.hint)
    else:
        answer = fn(spec, budgets, {"time_limit": time_limit, **options})
    wall = time.perf_counter() - start
    return verify(spec, budgets, answer, backend, wall)


def verify(spec: Spec, budgets: Mapping[str, float], answer: Answer, backend: str, wall_time: float) -> Result:
    """Re-evaluate a backend's answer with the core; any disagreement raises BackendError."""
    if not isinstance(answer, Answer):
        raise BackendError(f"backend {backend!r} returned {type(answer).__name__}, expected mdp_opt.Answer")
    status = Status(answer.status)
    stats = dict(answer.stats)
    if not status.has_solution:
        if answer.choice is not None:
            raise BackendError(f"backend {backend!r}: status {status.value} but a configuration was returned")
        return Result(status, None, answer.bound, None, {}, {}, {}, backend, wall_time, stats, dict(budgets))
    if answer.choice is None:
        raise BackendError(f"backend {backend!r}: status {status.value} without a configuration")
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
