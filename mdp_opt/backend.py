"""The backend contract: what a backend is, what it declares it can do, and the one registry.

A backend is a function `solve(spec, limits, options) -> Answer`:

- `spec` is a validated `Spec` (the presolve's reduced spec when the backend declares
  `Feature.PRESOLVE`);
- `limits` maps each budgeted resource to the largest cost allowed; the core's feasibility
  tolerance is already in it (`budgets.limits`), so a backend compares costs with `<=`;
- `options` holds `deadline` (the call's `Deadline`: its clock and stop signal), `time_limit`
  (the seconds left of the call, or None) and the user's options, already checked against the
  names the backend declared. A backend honours the deadline by checking `deadline.expired` in
  its loops and registering stop hooks around solver calls (`with deadline.hook(stop): ...`),
  then returning its best answer so far.

It returns an `Answer`, which `solve()` verifies with the core's evaluator before the user
sees it. A backend registers itself with one call in its own module, `register_backend(...)`,
declaring its `Feature`s; `solve`, `frontier`, `bench`, the CLI and the tests ask for
features, never for names. The built-in backends live in `mdp_opt.backends` (one file each)
and are imported the first time they are asked for, so the core imports no solver.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterable, Mapping

from .deadline import Deadline
from .result import Answer, BackendError
from .spec import Spec, SpecError

BackendFn = Callable[[Spec, Mapping[str, float], dict], Answer]
# frontier hook: (spec, resource, other limits, budgets of `resource` or None, points, options) -> [(budget, Answer)];
# raises FrontierUnavailable when solving budget by budget would be cheaper
FrontierFn = Callable[..., list]

BUILTIN = ("cpsat", "milp", "dp", "mindtpy", "brute")   # modules of mdp_opt.backends, imported on first use


class Feature(str, Enum):
    """What a backend declares it can do."""

    EXACT = "exact"            # claims `optimal` only with a proof; the conformance tests hold it to brute force
    BOUND = "bound"            # reports a proven upper bound with a `feasible` answer
    HINT = "hint"              # takes option `hint` (a Result or {"choice", "active"}); the presolve passes its incumbent
    PRESOLVE = "presolve"      # solve() runs the shared Lagrangian presolve first and hands over the reduced spec
    FRONTIER = "frontier"      # computes the value-versus-budget frontier in one pass (its `frontier` hook)
    THREADS = "threads"        # takes option `threads`
    TIME_LIMIT = "time_limit"  # stops near `time_limit` with the best answer found so far
    INTERRUPT = "interrupt"    # stops on Ctrl-C (KeyboardInterrupt) with the best answer found so far
    REFERENCE = "reference"    # a test reference (enumerates every configuration): left out of benchmarks

    def __str__(self) -> str:
        return self.value


class FrontierUnavailable(Exception):
    """A backend's one-pass frontier would cost more than solving budget by budget."""


@dataclass(frozen=True)
class Backend:
    """A registered backend. `missing` says why it cannot run here (None when it is installed)."""

    name: str
    solve: BackendFn
    features: frozenset[Feature]
    options: Mapping[str, Any] | None     # accepted options -> defaults (besides time_limit); None: unchecked
    description: str = ""
    extra: str | None = None              # the pip extra that installs what it needs
    missing: str | None = None
    frontier: FrontierFn | None = None
    setup: Callable[[], list[str]] | None = None   # what keeps it from running with its default options
    check: Callable[[dict, Spec, Mapping[str, float]], None] | None = None   # validates option values

    def has(self, *features: Feature | str) -> bool:
        return all(Feature(f) in self.features for f in features)

    @property
    def installed(self) -> bool:
        return self.missing is None

    def setup_problems(self) -> list[str]:
        """What keeps an installed backend from running with its default options (empty when ready)."""
        return list(self.setup()) if self.installed and self.setup is not None else []

    @property
    def ready(self) -> bool:
        return self.installed and not self.setup_problems()

    def install_hint(self) -> str:
        return f"pip install 'mdp-opt[{self.extra}]'" if self.extra else "reinstall mdp-opt"


_REGISTRY: dict[str, Backend] = {}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def register_backend(name: str, solve: BackendFn, *, features: Iterable[Feature | str] = (),
                     options: Mapping[str, Any] | None = None, description: str = "", extra: str | None = None,
                     missing: str | None = None, frontier: FrontierFn | None = None,
                     setup: Callable[[], list[str]] | None = None,
                     check: Callable[[dict, Spec, Mapping[str, float]], None] | None = None) -> Backend:
    """Add (or replace) backend `name`: `solve(spec, limits, options) -> Answer` (see the module docstring).

    Args:
        features: what it can do (`Feature` members or their names); e.g. `{"exact", "presolve", "hint"}`.
        options: the options it accepts, name -> default (`time_limit` is always accepted); `solve()`
            rejects any other before doing any work. None leaves checking to the backend.
        description: one line for `mdp-opt backends`.
        extra, missing: the pip extra that installs its dependencies, and why it cannot run here (None
            when it can), e.g. the ImportError of its solver.
        frontier: with `Feature.FRONTIER`, the one-pass frontier hook (see `mdp_opt.frontier`).
        setup: for a backend that needs more than its packages, a check returning what keeps it from
            running with its default options (e.g. a solver library not built); shown by `mdp-opt backends`.
        check: `check(options, spec, limits)` raises SpecError for a bad option value; `solve()` calls it
            with the merged options before any work, so a bad value is refused even when the presolve
            answers alone.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"backend name {name!r}: use letters, digits, '_', '-', '.'")
    if not callable(solve):
        raise TypeError(f"backend {name!r}: solve must be a callable (spec, limits, options) -> Answer")
    try:
        declared = frozenset(Feature(f) for f in features)
    except ValueError as e:
        raise ValueError(f"backend {name!r}: {e}; features are {[f.value for f in Feature]}") from None
    if (Feature.FRONTIER in declared) != (frontier is not None):
        raise ValueError(f"backend {name!r}: declare Feature.FRONTIER together with a frontier hook")
    backend = Backend(name, solve, declared, None if options is None else dict(options), description, extra,
                      missing, frontier, setup, check)
    _REGISTRY[name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The registered backend `name` (built-in ones are imported on first use); BackendError when unknown."""
    if name not in _REGISTRY and name in BUILTIN:
        _import_builtin(name)
    backend = _REGISTRY.get(name)
    if backend is None:
        raise BackendError(f"backend {name!r}: unknown; choose one of {sorted(all_backends())} "
                           f"(installed: {installed_backends()})")
    return backend


def load_backend(name: str) -> BackendFn:
    """The solve function of `name`; BackendError when it is unknown or not installed (with the pip hint)."""
    backend = get_backend(name)
    if not backend.installed:
        raise BackendError(f"backend {name!r}: not installed ({backend.missing}); {backend.install_hint()}. "
                           f"Installed backends: {installed_backends()}")
    return backend.solve


def all_backends() -> dict[str, Backend]:
    """Every registered backend, the built-in ones first (imported to read their declarations)."""
    for name in BUILTIN:
        if name not in _REGISTRY:
            _import_builtin(name)
    return dict(sorted(_REGISTRY.items(), key=lambda item: (item[0] not in BUILTIN,
                                                            BUILTIN.index(item[0]) if item[0] in BUILTIN else 0)))


def backends_with(*features: Feature | str, without: Iterable[Feature | str] = (), ready: bool = True) -> list[str]:
    """Names of the backends declaring every feature in `features` and none in `without` (only those ready to
    run here unless `ready=False`)."""
    excluded = [Feature(f) for f in without]
    return [name for name, b in all_backends().items()
            if b.has(*features) and not any(f in b.features for f in excluded) and (b.ready or not ready)]


def installed_backends() -> list[str]:
    """Names of the backends that can run here."""
    return [name for name, b in all_backends().items() if b.installed]


def backend_status() -> dict[str, tuple[bool, str]]:
    """name -> (ready to run, its description, or why it is missing or not set up and how to fix that)."""
    out = {}
    for name, b in all_backends().items():
        if not b.installed:
            out[name] = (False, f"{b.missing}; {b.install_hint()}")
        elif b.setup_problems():
            out[name] = (False, "installed but not set up: " + "; ".join(b.setup_problems()))
        else:
            out[name] = (True, b.description)
    return out


CALL_OPTIONS = ("time_limit", "deadline")   # what solve() passes every backend besides the user's options


def take_options(options: Mapping[str, Any], defaults: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """Merge `options` over `defaults`; an unknown option raises SpecError listing the accepted ones.

    The result always has a `deadline`: solve()'s, or one started now from `time_limit` when the backend
    is called directly."""
    unknown = sorted(set(options) - set(defaults) - set(CALL_OPTIONS))
    if unknown:
        raise SpecError(f"option {unknown[0]!r}: not understood by backend {backend!r}; "
                        f"it accepts {sorted(set(defaults) | {'time_limit'})}")
    merged = {"time_limit": None, "deadline": None, **defaults}
    merged.update(options)
    if merged["deadline"] is None:
        merged["deadline"] = Deadline(merged["time_limit"])
    return merged


MAX_THREADS = 256


def check_threads(value: Any) -> None:
    """None, or a whole number of threads in 1..MAX_THREADS."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THREADS):
        raise SpecError(f"option threads: expected a whole number from 1 to {MAX_THREADS} (or None for the "
                        f"solver's default), got {value!r:.40}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise SpecError(f"option {name}: expected True or False, got {value!r:.40}")


def check_number(name: str, value: Any, low: float = 0.0, low_open: bool = False) -> float:
    """A finite number >= low (> low when low_open)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value > low if low_open else value >= low)
    if not ok:
        raise SpecError(f"option {name}: expected a finite number {'>' if low_open else '>='} {low:g}, "
                        f"got {value!r:.40}")
    return float(value)


def _import_builtin(name: str) -> None:
    module = f"mdp_opt.backends.{name}"
    try:
        importlib.import_module(module)   # the module registers itself
    except ImportError as e:              # a backend module guards its solver import; this is a broken install
        register_backend(name, _unavailable(name), missing=f"{module} does not import ({e})")
    if name not in _REGISTRY:
        raise BackendError(f"{module} did not register backend {name!r}")


def _unavailable(name: str) -> BackendFn:
    def solve(spec: Spec, limits: Mapping[str, float], options: dict) -> Answer:
        raise BackendError(f"backend {name!r} is not installed")
    return solve
