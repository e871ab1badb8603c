"""The paper's solver: Pyomo MindtPy outer approximation on MDP's MINLP (a heuristic).

`formulation="product"` (default) builds the model as NVlabs/MDP's `knapsack_pyomo` does:
one-hot binaries `z[d, k]` per dim, a binary `y[b]` per block, every arity-2 table as the
quadratic form `z_cur^T T z_pre` (arity 3+ as the nested product over its dims, arity 1
linear), each blocked term multiplied by its block's `y`. That model is a nonconvex MINLP,
solved as the paper does with `SolverFactory('mindtpy')`, strategy `OA`, `init_strategy='FP'`.
`formulation="marginal"` hands MindtPy the exact linear (marginal) model of
`mdp_opt.linear_model` instead, so users can see what the formulation costs.

Outer approximation is a heuristic here: on the product model its cuts are not valid for
nonconvex terms, and MindtPy's dual bound is the main MILP's incumbent at the MILP gap
(`mip_solver_mipgap`, default 1e-4), so neither formulation yields a proof. Answers are
`feasible`, with no bound; MindtPy's own bounds are reported in `stats` for information.
Needs Pyomo, a MILP solver (`appsi_highs`, `glpk`, `cbc`) and an NLP solver (`cyipopt`, which
needs scipy and Pyomo's PyNumero library): `mdp-opt setup-mindtpy` installs and builds them.
MindtPy runs in a worker process, so that the time limit and Ctrl-C stop it at once.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import math
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mdp_opt.backend import Feature, register_backend, take_options
from mdp_opt.deadline import Deadline
from mdp_opt.evaluate import evaluate
from mdp_opt.linear_model import build as build_linear_model
from mdp_opt.result import Answer, BackendError, Status
from mdp_opt.spec import Spec, SpecError, Term

from .mindtpy_setup import stack_problems

try:
    import pyomo.environ as pyo
    from pyomo.common.tee import capture_output
    from pyomo.core.expr.visitor import identify_variables
    from pyomo.opt import TerminationCondition
    MISSING = None
except ImportError as e:  # registered as missing; `solve` is never called then
    MISSING = f"Pyomo is not importable ({e}); run `mdp-opt setup-mindtpy`"

FORMULATIONS = ("product", "marginal")
DEFAULTS: dict[str, Any] = {
    "formulation": "product",
    "strategy": "OA",
    "init_strategy": "FP",
    "mip_solver": "appsi_highs",
    "nlp_solver": "cyipopt",
    "iteration_limit": 50,
    "mindtpy_options": {},
}
# MindtPy needs an integer time limit; None (no limit) becomes this many seconds.
NO_TIME_LIMIT = 10**9
# Lines of captured solver output kept in stats when there is no solution.
OUTPUT_TAIL = 10
# A binary further than this from 0 or 1 means MindtPy returned no usable configuration.
INTEGRALITY_TOLERANCE = 1e-4


@dataclass
class _Model:
    """A Pyomo model plus how to read and write a configuration in its variables."""

    model: Any
    objective: Any
    set_configuration: Any   # (choice, active) -> None: puts 0/1 values in the variables
    read_configuration: Any  # () -> (choice, active) or None when the variables are not integral


def solve(spec: Spec, limits: Mapping[str, float], options: dict) -> Answer:
    """Solve with MindtPy; see the module docstring. Options (beyond `time_limit`):

    formulation: "product" (the paper's MINLP, default) or "marginal" (the exact linear model).
    strategy, init_strategy: MindtPy's (default "OA" and "FP", as the paper).
    mip_solver, nlp_solver: MindtPy sub-solvers (default "appsi_highs" and "cyipopt").
    iteration_limit: MindtPy main iterations (default 50).
    mindtpy_options: any other MindtPy keyword options, e.g. {"mip_solver_mipgap": 1e-9}.
    """
    opts = take_options(options, DEFAULTS, "mindtpy")
    kwargs = check_options(opts, spec, limits)
    stats: dict[str, Any] = {"formulation": opts["formulation"], "strategy": kwargs["strategy"],
                             "mip_solver": kwargs["mip_solver"], "nlp_solver": kwargs["nlp_solver"]}
    if not spec.dims and not spec.blocks:   # one configuration and nothing to decide: MindtPy cannot run on it
        ev = evaluate(spec, {}, {})
        if any(ev.costs[r] > limit for r, limit in limits.items()):
            return Answer(Status.INFEASIBLE, stats={**stats, "message": "the only configuration is over budget"})
        return Answer(Status.FEASIBLE, {}, {}, objective=ev.value, stats=stats)
    return _in_worker(opts["deadline"], spec, dict(limits), opts["formulation"], kwargs, stats)


def _solve_here(spec: Spec, limits: Mapping[str, float], formulation: str, kwargs: dict[str, Any],
                stats: dict[str, Any]) -> Answer:
    """Build the Pyomo model and run MindtPy in this process."""
    start = time.perf_counter()
    try:
        built = (_product_model if formulation == "product" else _marginal_model)(spec, limits)
    except _FixedCostsOverBudget as e:
        return Answer(Status.INFEASIBLE, stats={**stats, "message": str(e)})
    stats["build_seconds"] = time.perf_counter() - start
    for variable in built.model.component_data_objects(pyo.Var):
        variable.set_value(0)  # where IPOPT starts anyway; without it MindtPy's pump fails on unused variables
    try:
        with _captured_output() as output:
            results = pyo.SolverFactory("mindtpy").solve(built.model, **kwargs)
    except Exception as e:  # MindtPy or a sub-solver failed on this spec: a status, not a crash
        answer = _failure(e, stats)
    else:
        answer = _answer(spec, limits, built, results, formulation, stats)
    if not answer.status.has_solution and output:
        answer.stats["solver_output_tail"] = output[-OUTPUT_TAIL:]
    return answer


# ---- MindtPy in a worker process ----------------------------------------------------------------------
# MindtPy spends most of its time in Python (model copies, transformations) and in sub-solvers that do not
# look at a stop signal, and it captures the process's output file descriptors while it runs. In a worker
# process it can be stopped at once, at the deadline or on Ctrl-C, without touching the caller's process.
# One worker (`python -m mdp_opt.backends.mindtpy`, its imports done once) serves the solves one after the
# other through two pipes; the stop signal kills it, and the next solve starts a new one. It ignores Ctrl-C
# itself (the terminal sends it to the whole process group): the caller decides.

class _Worker:
    """A worker process that runs `_solve_here` on pickled jobs."""

    _current: "_Worker | None" = None

    def __init__(self) -> None:
        jobs_read, self._jobs = os.pipe()
        self._answers, answers_write = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(jobs_read), str(answers_write)], pass_fds=(jobs_read, answers_write),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(jobs_read)
        os.close(answers_write)
        self._send, self._receive = os.fdopen(self._jobs, "wb"), os.fdopen(self._answers, "rb")

    @classmethod
    def get(cls) -> "_Worker":
        if cls._current is None or cls._current.process.poll() is not None:
            cls._current = cls()
        return cls._current

    def kill(self) -> None:
        self.process.kill()

    def close(self) -> None:
        for stream in (self._send, self._receive):
            with contextlib.suppress(OSError):
                stream.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if _Worker._current is self:
            _Worker._current = None

    def run(self, deadline: Deadline, job: tuple) -> tuple[str, Any]:
        """Send one job; its outcome, or ("stopped", None) when the stop signal killed the worker."""
        try:
            with deadline.hook(self.kill):
                pickle.dump(job, self._send)
                self._send.flush()
                return pickle.load(self._receive)
        except (EOFError, OSError, pickle.UnpicklingError):
            self.close()
            return "stopped", None


def _in_worker(deadline: Deadline, *job: Any) -> Answer:
    """`_solve_here(*job)` in the worker process; stopped by the deadline."""
    kind, payload = _Worker.get().run(deadline, job)
    if kind == "error":
        raise payload
    if kind == "answer":
        return payload
    why = {"interrupted": "Ctrl-C", "time_limit": "the time limit"}.get(deadline.reason or "")
    if why is None:
        return Answer(Status.ERROR, stats={"message": "the MindtPy worker process ended without an answer"})
    return Answer(Status.TIME_LIMIT_NO_SOLUTION, stats={"message": f"MindtPy was stopped by {why} before it "
                                                         "returned a configuration"})


def _serve(jobs_fd: int, answers_fd: int) -> None:
    """The worker's loop: read a job, answer it, until the caller closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(jobs_fd, "rb") as jobs, os.fdopen(answers_fd, "wb") as answers:
        while True:
            try:
                job = pickle.load(jobs)
            except EOFError:
                return
            try:
                outcome: tuple[str, Any] = ("answer", _solve_here(*job))
            except Exception as e:  # noqa: BLE001 - the caller raises it
                outcome = ("error", e)
            try:
                data = pickle.dumps(outcome)
            except Exception as e:  # an exception that does not pickle: its text
                data = pickle.dumps(("error", BackendError(f"backend 'mindtpy': {outcome[1]!r} ({e})")))
            answers.write(data)
            answers.flush()


atexit.register(lambda: _Worker._current is not None and _Worker._current.close())


def check_options(opts: Mapping[str, Any], spec: Spec, limits: Mapping[str, float]) -> dict[str, Any]:
    """Validate the options (with MindtPy's own checks) and the sub-solvers; the MindtPy keyword arguments."""
    kwargs = _mindtpy_arguments(opts)
    _check_with_mindtpy(kwargs)
    problems = stack_problems(kwargs["mip_solver"], kwargs["nlp_solver"])
    if problems:
        raise BackendError("backend 'mindtpy': " + "; ".join(problems) + ". Run `mdp-opt setup-mindtpy` "
                           "(or pick other solvers with the mip_solver / nlp_solver options)")
    return kwargs


def _mindtpy_arguments(opts: Mapping[str, Any]) -> dict[str, Any]:
    """MindtPy keyword arguments from the backend's options; bad values raise SpecError."""
    if opts["formulation"] not in FORMULATIONS:
        raise SpecError(f"option formulation: {opts['formulation']!r} is not one of {list(FORMULATIONS)}")
    for key in ("strategy", "init_strategy", "mip_solver", "nlp_solver"):
        if not isinstance(opts[key], str) or not opts[key]:
            raise SpecError(f"option {key}: expected a solver or strategy name, got {opts[key]!r}")
    limit = opts["iteration_limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise SpecError(f"option iteration_limit: expected a non-negative integer, got {limit!r}")
    raw = opts["mindtpy_options"]
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise SpecError(f"option mindtpy_options: expected a dict of MindtPy options, got {raw!r}")
    kwargs = {key: opts[key] for key in ("strategy", "init_strategy", "mip_solver", "nlp_solver", "iteration_limit")}
    clash = sorted(set(raw) & (set(kwargs) | {"time_limit"}))
    if clash:
        raise SpecError(f"option mindtpy_options.{clash[0]}: pass it as the backend option {clash[0]}= instead")
    if raw.get("mip_solver_mipgap", None) == 0:
        raise SpecError("option mindtpy_options.mip_solver_mipgap: MindtPy rejects 0; use a small "
                        "positive gap such as 1e-9")
    time_limit = opts["time_limit"]
    # MindtPy takes whole seconds; the deadline stops its process at the true limit anyway
    kwargs["time_limit"] = NO_TIME_LIMIT if time_limit is None else max(1, math.floor(time_limit))
    kwargs.update(raw)
    return kwargs


def _check_with_mindtpy(kwargs: Mapping[str, Any]) -> None:
    """MindtPy's own validation of its options (the strategy first, then that strategy's options)."""
    try:
        pyo.SolverFactory("mindtpy").CONFIG(preserve_implicit=True).set_value(dict(kwargs), skip_implicit=True)
        pyo.SolverFactory(f"mindtpy.{kwargs['strategy'].lower()}").CONFIG().set_value(dict(kwargs))
    except ValueError as e:
        raise SpecError("option: MindtPy rejects it: " + " ".join(str(e).split())) from None


class _FixedCostsOverBudget(Exception):
    """A budgeted resource whose terms involve no decision has a cost above its budget."""


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Keep Pyomo's log (its handler prints to stdout) and the sub-solvers' printing (HiGHS writes
    to the stdout file descriptor) off the user's terminal, so `--json` stays clean. Yields a list
    that receives the captured lines when the block ends."""
    lines: list[str] = []
    buffer = io.StringIO()
    logger = logging.getLogger("pyomo")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [logging.StreamHandler(buffer)], False
    logger.setLevel(logging.ERROR)  # drop warnings such as "value set a hair outside [0, 1]"
    try:
        with warnings.catch_warnings(), capture_output(buffer, capture_fd=True):
            warnings.simplefilter("ignore", RuntimeWarning)  # MindtPy's gap arithmetic on infinite bounds
            yield lines
    finally:
        logger.handlers, logger.propagate, logger.level = saved
        lines.extend(line for line in buffer.getvalue().splitlines() if line.strip())


# ---- the paper's product formulation -------------------------------------------------------

def _product_model(spec: Spec, limits: Mapping[str, float]) -> _Model:
    m = pyo.ConcreteModel(name=spec.name or "mdp")
    dim_index = {d.name: i for i, d in enumerate(spec.dims)}
    m.z = pyo.Var([(i, k) for i, d in enumerate(spec.dims) for k in range(d.size)], domain=pyo.Binary)
    m.y = pyo.Var(range(len(spec.blocks)), domain=pyo.Binary)
    m.one_hot = pyo.Constraint(range(len(spec.dims)),
                               rule=lambda m, i: sum(m.z[i, k] for k in range(spec.dims[i].size)) == 1)
    one_hots = [[m.z[i, k] for k in range(d.size)] for i, d in enumerate(spec.dims)]
    block_var = {b: m.y[j] for j, b in enumerate(spec.block_names)}

    def total(terms: Sequence[Term]) -> tuple[Any, float]:
        """(expression over the variables, constant part) of a sum of terms."""
        parts, constant = [], 0.0
        for t in terms:
            if not t.dims and t.block is None:
                constant += float(t.table)
                continue
            form = _table_form(t.table, [one_hots[dim_index[n]] for n in t.dims])
            if t.block is not None:
                form = block_var[t.block] * form
            parts.append(form)
        return pyo.quicksum(parts), constant

    value, value_constant = total(spec.objective)
    m.obj = pyo.Objective(expr=value + value_constant, sense=pyo.maximize)
    m.budget = pyo.ConstraintList()
    for r, limit in limits.items():
        cost, constant = total(spec.costs[r])
        if next(identify_variables(cost), None) is None:  # only constants, or tables of zeros
            _check_fixed_cost(r, constant + float(pyo.value(cost)), limit)
            continue
        m.budget.add(cost <= limit - constant)

    def set_configuration(choice: Mapping[str, int], active: Mapping[str, bool]) -> None:
        for i, d in enumerate(spec.dims):
            for k in range(d.size):
                m.z[i, k].set_value(float(k == choice[d.name]))
        for j, b in enumerate(spec.block_names):
            m.y[j].set_value(float(active[b]))

    def read_configuration() -> tuple[dict[str, int], dict[str, bool]] | None:
        z = [_values(row) for row in one_hots]
        y = _values([m.y[j] for j in range(len(spec.blocks))])
        for row in z:
            _undecided_keeps_largest(row)
        y[np.isnan(y)] = 1.0
        if not _integral(np.concatenate([y, *z])):
            return None
        return ({d.name: int(np.argmax(z[i])) for i, d in enumerate(spec.dims)},
                {b: bool(y[j] > 0.5) for j, b in enumerate(spec.block_names)})

    return _Model(m, m.obj, set_configuration, read_configuration)


def _table_form(table: np.ndarray, one_hots: Sequence[Sequence[Any]]) -> Any:
    """`table` as a polynomial in one-hot variables: sum_i x0_i * (sum_j x1_j * (...)).

    Arity 1 is linear, arity 2 the quadratic form `x0^T T x1` of MDP's latency terms, arity 3+
    the natural nested products; all-zero sub-tables are left out.
    """
    if table.ndim == 0:
        return float(table)
    if table.ndim == 1:
        return pyo.quicksum(float(c) * x for c, x in zip(table, one_hots[0]) if c != 0.0)
    return pyo.quicksum(x * _table_form(sub, one_hots[1:]) for sub, x in zip(table, one_hots[0]) if np.any(sub))


def _check_fixed_cost(resource: str, cost: float, limit: float) -> None:
    if cost > limit:
        raise _FixedCostsOverBudget(f"resource {resource!r} has fixed cost {cost:.10g} above its budget "
                                    f"{limit:.10g}: no configuration is feasible")


def _values(variables: Sequence[Any]) -> np.ndarray:
    """Variable values, NaN for a variable MindtPy left without one (it appears in no constraint)."""
    return np.array([np.nan if v.value is None else v.value for v in variables], dtype=float)


def _undecided_keeps_largest(one_hot: np.ndarray) -> None:
    """A dim that nothing in the model constrains keeps its largest choice (as good as any other)."""
    if np.all(np.isnan(one_hot)):
        one_hot[:] = 0.0
        one_hot[-1] = 1.0


def _integral(values: np.ndarray) -> bool:
    return bool(np.all(np.abs(values - np.round(values)) <= INTEGRALITY_TOLERANCE))


# ---- the exact linear (marginal) formulation --------------------------------------------------

def _marginal_model(spec: Spec, limits: Mapping[str, float]) -> _Model:
    lm = build_linear_model(spec, limits)
    m = pyo.ConcreteModel(name=spec.name or "mdp")
    m.x = pyo.Var(range(lm.num_vars), bounds=(0, 1),
                  domain=lambda m, i: pyo.Binary if lm.integral[i] else pyo.Reals)
    m.rows = pyo.ConstraintList()
    for index, coef, lower, upper in lm.rows():
        expr = pyo.quicksum(float(c) * m.x[int(i)] for i, c in zip(index, coef))
        if lower == upper:
            m.rows.add(expr == float(lower))
        else:
            m.rows.add((None if math.isinf(lower) else float(lower), expr, None if math.isinf(upper) else float(upper)))

    def linear(expression) -> Any:
        nonzero = np.flatnonzero(expression.coef)
        return pyo.quicksum(float(expression.coef[i]) * m.x[int(i)] for i in nonzero)

    m.obj = pyo.Objective(expr=linear(lm.objective) + lm.objective.constant, sense=pyo.maximize)
    m.budget = pyo.ConstraintList()
    for r, limit in limits.items():
        cost = lm.costs[r]
        if not np.any(cost.coef):
            _check_fixed_cost(r, cost.constant, limit)
            continue
        m.budget.add(linear(cost) <= limit - cost.constant)

    def set_configuration(choice: Mapping[str, int], active: Mapping[str, bool]) -> None:
        for i, v in enumerate(lm.values(choice, active)):
            m.x[i].set_value(float(v))

    def read_configuration() -> tuple[dict[str, int], dict[str, bool]] | None:
        x = _values([m.x[i] for i in range(lm.num_vars)])
        for index in lm.z.values():
            row = x[index]
            _undecided_keeps_largest(row)
            x[index] = row
        for i in lm.y.values():
            x[i] = 1.0 if np.isnan(x[i]) else x[i]
        if not _integral(x[lm.integral]):
            return None
        return lm.decode(x)

    return _Model(m, m.obj, set_configuration, read_configuration)


# ---- reading MindtPy's answer -------------------------------------------------------------------

def _answer(spec: Spec, limits: Mapping[str, float], built: _Model, results: Any, formulation: str,
            stats: dict[str, Any]) -> Answer:
    """Turn MindtPy's results into an Answer: a verified-feasible configuration, or why there is none."""
    condition = results.solver.termination_condition
    stats.update(termination=str(condition), iterations=getattr(results.solver, "iterations", None),
                 mindtpy_primal_bound=_finite_or_none(results.problem.lower_bound),
                 mindtpy_dual_bound=_finite_or_none(results.problem.upper_bound))
    found = stats["mindtpy_primal_bound"] is not None
    configuration = built.read_configuration() if found else None
    if configuration is None:
        return _no_solution(condition, formulation, stats)
    choice, active = configuration
    costs = evaluate(spec, choice, active).costs
    over = {r: f"{costs[r]:.10g} > {limit:.10g}" for r, limit in limits.items() if costs[r] > limit}
    if over:
        return Answer(Status.ERROR, stats={**stats, "message": "MindtPy's configuration is over budget once its "
                                           f"binaries are rounded (its constraint tolerance): {over}"})
    built.set_configuration(choice, active)
    return Answer(Status.FEASIBLE, choice, active, objective=float(pyo.value(built.objective)), stats=stats)


def _failure(error: Exception, stats: dict[str, Any]) -> Answer:
    message = f"MindtPy failed: {type(error).__name__}: {error}"
    if "condition of maxTimeLimit" in str(error):  # MindtPy raises when a sub-solver hits the time limit
        return Answer(Status.TIME_LIMIT_NO_SOLUTION, stats={**stats, "message": "a MindtPy sub-solver reached the "
                                                           f"time limit and MindtPy stopped without a configuration ({message})"})
    return Answer(Status.ERROR, stats={**stats, "message": message})


def _no_solution(condition: Any, formulation: str, stats: dict[str, Any]) -> Answer:
    if condition == TerminationCondition.maxTimeLimit:
        return Answer(Status.TIME_LIMIT_NO_SOLUTION, stats={**stats, "message": "MindtPy reached the time limit "
                                                           "before finding a feasible configuration"})
    if condition == TerminationCondition.infeasible and formulation == "marginal":
        return Answer(Status.INFEASIBLE, stats={**stats, "message": "the MILP solver proved the linear model "
                                                "infeasible: no configuration fits the budget"})
    if condition == TerminationCondition.infeasible:
        message = ("MindtPy found no feasible configuration; on the nonconvex product formulation this does not "
                   "prove the budget infeasible (formulation='marginal' or an exact backend can)")
    else:
        message = (f"MindtPy ended (termination condition {condition}) without a feasible configuration; "
                   "raise iteration_limit, or try another strategy or formulation")
    return Answer(Status.ERROR, stats={**stats, "message": message})


def _finite_or_none(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


register_backend("mindtpy", solve, options=DEFAULTS, extra="mindtpy", missing=MISSING, check=check_options,
                 features={Feature.TIME_LIMIT, Feature.INTERRUPT},
                 setup=lambda: [p + " (run `mdp-opt setup-mindtpy`)" for p in stack_problems()],
                 description="Pyomo MindtPy outer approximation, the paper's solver (heuristic)")


if __name__ == "__main__":      # the worker process (see _Worker)
    _serve(int(sys.argv[1]), int(sys.argv[2]))
