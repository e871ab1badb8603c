"""Plots of the library's results, with matplotlib (the `plot` extra): the frontier, and benchmark times.

Figures are built without pyplot (no global state; works without a display) and files are
written atomically (`files.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .bench import BenchReport
from .files import atomic_write
from .frontier import FrontierPoint, checked_resource
from .result import Status
from .spec import Spec, SpecError

UNIT_SUFFIXES = {"ns": "ns", "us": "µs", "ms": "ms", "s": "s", "kb": "kB", "mb": "MB", "gb": "GB",
                 "mj": "mJ", "j": "J", "w": "W", "mflops": "MFLOPs", "gflops": "GFLOPs"}


def _figure(size: tuple[float, float]) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SpecError("plot: matplotlib is not installed; pip install 'mdp-opt[plot]'") from None
    return Figure(figsize=size)


def _save(figure: Any, path: str | Path) -> None:
    suffix = Path(path).suffix.lstrip(".") or "png"
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=120, format=suffix))


def axis_label(spec: Spec | None, resource: str) -> str:
    """`<resource> budget (<unit>)`: the unit named by the spec's meta["units"], else by a unit suffix of the
    resource name (`latency_ms`), else "spec units"."""
    units = (spec.meta.get("units") if spec is not None else None) or {}
    unit = units.get(resource) if isinstance(units, dict) else None
    suffix = resource.rpartition("_")[2].lower()
    unit = unit or (UNIT_SUFFIXES.get(suffix) if "_" in resource else None)
    return f"{resource} budget ({unit or 'spec units'})"


def plot_frontier(points: Sequence[FrontierPoint], spec: Spec | None = None, resource: str | None = None,
                  path: str | Path | None = None, ax: Any = None, title: str | None = None) -> Any:
    """Draw objective versus budget; returns the figure. Marks the spec's own budget of `resource` when it
    has one and the full (unpruned) cost; writes `path` when given."""
    if resource is None:
        resource = checked_resource(spec, None) if spec is not None else "budget"
    solved = [p for p in points if p.objective is not None]
    figure = ax.figure if ax is not None else _figure((7, 4.5))
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
        _save(figure, path)
    return figure


def plot_bench(report: BenchReport, path: str | Path) -> Any:
    """Wall time per spec and backend as grouped bars on a log scale (hatched: not proven optimal)."""
    specs = list(dict.fromkeys(r.spec for r in report.rows))
    backends = list(dict.fromkeys(r.backend for r in report.rows))
    width = 0.8 / max(1, len(backends))
    figure = _figure((max(6.0, 1.2 * len(specs) * max(1, len(backends)) ** 0.5), 4.5))
    ax = figure.add_subplot()
    for j, backend in enumerate(backends):
        timed = [(specs.index(r.spec), r) for r in report.rows if r.backend == backend and r.wall_time]
        bars = ax.bar([i + j * width for i, _ in timed], [r.wall_time for _, r in timed], width, label=backend)
        for bar, (_, r) in zip(bars, timed):
            if r.status != Status.OPTIMAL.value:
                bar.set_hatch("//")
    ax.set_yscale("log")
    ax.set_ylabel("wall time (s, median of repeats)")
    ax.set_xticks([i + width * (len(backends) - 1) / 2 for i in range(len(specs))])
    ax.set_xticklabels(specs, rotation=30, ha="right", fontsize=8)
    ax.set_title("time per backend (hatched: not proven optimal)")
    ax.legend()
    figure.tight_layout()
    _save(figure, path)
    return figure
