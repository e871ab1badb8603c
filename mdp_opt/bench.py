"""Run backends side by side over specs: status, objective, gap to the best known bound, time, agreement.

    report = mdp_opt.bench.bench(["example:instances", "example:resnet50,choices=32"], backends=["cpsat", "dp"])
    print(mdp_opt.reports.bench_markdown(report))
    assert not report.disagreements

A result counts as a proof when it claims one: status `optimal` (its value is an upper
bound), a reported `bound`, or status `infeasible`. Heuristic backends (e.g. `mindtpy`,
which reports `feasible` without a bound) make no claim, so they never cause a
disagreement, but a verified configuration of theirs that beats another backend's proven
bound does. A disagreement is a verified value above some backend's proven bound (beyond
1e-9 relative), which covers two `optimal` claims with different objectives, or an
`infeasible` claim where another backend found a feasible configuration.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

from .backend import Feature, backends_with, load_backend
from .pool import run_jobs
from .result import BackendError, Status, relative_gap
from .solve import solve
from .spec import Spec, SpecError, load

AGREEMENT_TOLERANCE = 1e-9
DEFAULT_EXAMPLES = ("resnet50", "resnet101", "mobilenetv2", "vit12", "vit-tiny", "chain")
EXAMPLE_PREFIX = "example:"
DEFAULT_EXAMPLES_SOURCES = tuple(EXAMPLE_PREFIX + n for n in DEFAULT_EXAMPLES)

SpecSource = Union[Spec, str, Path]


@dataclass(frozen=True)
class BenchRow:
    """One backend on one spec. `gap` is to the best bound any backend proved on that spec;
    `agree` says whether every proof on the spec is consistent with every verified value
    (None when the spec has fewer than two proofs and no contradiction)."""

    spec: str
    backend: str
    status: str
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    wall_time: float | None = None
    times: tuple[float, ...] = ()
    agree: bool | None = None
    message: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def proves_bound(self) -> bool:
        return self.bound is not None and self.status in (Status.OPTIMAL.value, Status.FEASIBLE.value)


@dataclass
class BenchReport:
    """The rows of a benchmark, and the disagreements found between proofs (empty when all agree)."""

    rows: list[BenchRow]
    disagreements: list[str]

    def to_dicts(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows:
            d = asdict(row)
            d["times"] = list(row.times)
            for key in ("objective", "bound", "gap"):
                if d[key] is not None and not math.isfinite(d[key]):
                    d[key] = None
            out.append(d)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """A JSON list with one object per row."""
        return json.dumps(self.to_dicts(), indent=indent, allow_nan=False)

# ---- running ------------------------------------------------------------------------------

def bench(specs: Iterable[SpecSource] | None = None, backends: Sequence[str] | None = None,
          time_limit: float | None = None, repeats: int = 1, options: Mapping[str, Any] | None = None,
          progress: bool = False, ray: str | None = None) -> BenchReport:
    """Solve every spec with every backend under the spec's own budgets.

    Args:
        specs: Specs, spec files, directories of spec files, `example:NAME[,size=value...]` (see
            `mdp_opt.examples`) or `example:instances` (the four shipped real instances); None runs the
            generated families `DEFAULT_EXAMPLES`.
        backends: backend names; None means every installed backend but the test references (`brute`).
        time_limit: seconds per solve.
        repeats: solves per spec and backend; the reported time is their median.
        options: backend options; `key` goes to every backend, `backend.key` to that backend only.
        progress: show a progress bar (tqdm when installed, else lines on stderr).
        ray: run the (spec, backend) jobs on a Ray cluster (an address, "auto" or "local:N"; see
            `mdp_opt.pool`); the rows are the same as here, the times are each worker's.

    A backend that fails on a spec gives a row with status `error` and the message.
    """
    cases = load_specs(DEFAULT_EXAMPLES_SOURCES if specs is None else specs)
    names = _check_backends(backends)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise SpecError(f"repeats: expected a positive integer, got {repeats!r}")
    per_backend = _split_options(options or {}, names)
    jobs = [(label, spec, backend, time_limit, repeats, per_backend[backend]) for label, spec in cases
            for backend in names]
    with _Progress(len(jobs), progress) as bar:
        def done(i: int, row: BenchRow) -> None:
            bar.advance(f"{row.spec} {row.backend}: {row.status} {row.wall_time or 0:.3g} s")
        rows = run_jobs(run_one, jobs, ray, done)
    compared: list[BenchRow] = []
    disagreements: list[str] = []
    for label, _ in cases:
        spec_rows, found = compare([r for r in rows if r.spec == label])
        compared += spec_rows
        disagreements += found
    return BenchReport(compared, disagreements)


def run_one(label: str, spec: Spec, backend: str, time_limit: float | None, repeats: int,
            options: Mapping[str, Any]) -> BenchRow:
    """Solve `spec` `repeats` times with `backend`; any exception becomes a row with status `error`."""
    times = []
    first = None
    for _ in range(repeats):
        try:
            result = solve(spec, backend=backend, time_limit=time_limit, **options)
        except Exception as e:  # a failing backend is a result of the benchmark, not a crash
            return BenchRow(label, backend, Status.ERROR.value, message=f"{type(e).__name__}: {e}")
        first = result if first is None else first
        times.append(result.wall_time)
    stats = first.to_dict()["stats"]
    return BenchRow(label, backend, first.status.value, first.objective, first.bound, None,
                    statistics.median(times), tuple(times), None, str(stats.get("message", "")), stats)


def compare(rows: Sequence[BenchRow]) -> tuple[list[BenchRow], list[str]]:
    """Fill in `gap` and `agree` for the rows of one spec; return them and the disagreements found."""
    bounds = [r for r in rows if r.proves_bound]
    solved = [r for r in rows if r.objective is not None]
    infeasible = [r for r in rows if r.status == Status.INFEASIBLE.value]
    found = []
    for b in bounds:
        for s in solved:
            if s.objective - b.bound > AGREEMENT_TOLERANCE * max(1.0, abs(s.objective), abs(b.bound)):
                found.append(f"{s.spec}: {b.backend} proves bound {b.bound:.12g} ({b.status}) but {s.backend}'s "
                             f"verified configuration is worth {s.objective:.12g} ({s.status})")
    for r in infeasible:
        for s in solved:
            found.append(f"{s.spec}: {r.backend} proves the budget infeasible but {s.backend} found a verified "
                         f"feasible configuration worth {s.objective:.12g}")
    best = min((r.bound for r in bounds), default=None)
    agree = None if len(bounds) + len(infeasible) < 2 and not found else not found
    return [replace(r, gap=relative_gap(best, r.objective), agree=agree) for r in rows], found


# ---- spec sources -------------------------------------------------------------------------


def load_specs(sources: Iterable[SpecSource]) -> list[tuple[str, Spec]]:
    """(label, spec) for each source: a Spec, a JSON file, a directory (its *.json, sorted) or `example:...`."""
    out: list[tuple[str, Spec]] = []
    for source in sources:
        for label, spec in _expand(source):
            taken = {lab for lab, _ in out}
            unique, n = label, 2
            while unique in taken:
                unique, n = f"{label}#{n}", n + 1
            out.append((unique, spec))
    if not out:
        raise SpecError("specs: nothing to benchmark (the sources given hold no spec)")
    return out


def _expand(source: SpecSource) -> Iterator[tuple[str, Spec]]:
    if isinstance(source, Spec):
        yield source.name or "spec", source
    elif isinstance(source, str) and source == EXAMPLE_PREFIX + "instances":
        from . import examples
        for name in examples.INSTANCES:
            yield name, examples.instance(name)
    elif isinstance(source, str) and source.startswith(EXAMPLE_PREFIX):
        spec = parse_example(source[len(EXAMPLE_PREFIX):])
        yield spec.name, spec
    elif isinstance(source, (str, Path)) and Path(source).is_dir():
        files = sorted(Path(source).glob("*.json"))
        if not files:
            raise SpecError(f"{source}: the directory holds no *.json spec files")
        for f in files:
            yield f.stem, load(f)
    elif isinstance(source, (str, Path)):
        yield Path(source).stem, load(source)
    else:
        raise SpecError(f"specs: expected a Spec, a path or 'example:NAME', got {type(source).__name__}")


def parse_example(text: str) -> Spec:
    """`resnet50` or `resnet50,choices=32,seed=1,blocks=[1,1]` (values as JSON) -> the generated spec."""
    from . import examples

    name, *items = re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", text)
    sizes: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            sizes[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            raise SpecError(f"example:{text}: value {value!r} of {key.strip()!r} is not a number, "
                            "true/false or a JSON list") from None
    sizes = {k: tuple(v) if isinstance(v, list) else v for k, v in sizes.items()}
    seed = sizes.pop("seed", 0)
    return examples.make(name.strip(), seed=seed, **sizes)


def _check_backends(backends: Sequence[str] | None) -> list[str]:
    if backends is None:
        names = backends_with(without=[Feature.REFERENCE])
        if not names:
            raise BackendError("no backend besides the test references is installed; pip install "
                               "'mdp-opt[cpsat]' or name backends explicitly")
        return names
    names = list(dict.fromkeys(backends))
    if not names:
        raise SpecError("backends: name at least one backend")
    for name in names:
        load_backend(name)  # imports only the backends named; unknown or missing ones raise a clear error
    return names


def _split_options(options: Mapping[str, Any], backends: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {b: {} for b in backends}
    for key, value in options.items():
        target, dot, option = key.rpartition(".") if "." in key else ("", "", key)
        if dot and target not in out:
            raise SpecError(f"option {key!r}: {target!r} is not one of the benchmarked backends {list(backends)}")
        for b in ([target] if dot else backends):
            out[b][option] = value
    return out


# ---- progress -----------------------------------------------------------------------------

class _Progress:
    """A tqdm bar on a terminal when tqdm is installed, else one line per finished solve on stderr;
    silent when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.done, self.bar = total, enabled, 0, None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="solve", file=sys.stderr)
            except ImportError:
                pass

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    def advance(self, text: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)
