"""Text reports of the library's results: the benchmark's Markdown table and the frontier's table."""

from __future__ import annotations

import math
from typing import Sequence

from .bench import BenchReport
from .frontier import FrontierPoint
from .spec import Spec


def bench_markdown(report: BenchReport) -> str:
    """A Markdown table, one line per spec and backend, then the disagreements."""
    lines = ["| spec | backend | status | objective | bound | gap | time (s) | exact agree | note |",
             "|---|---|---|---:|---:|---:|---:|---|---|"]
    for r in report.rows:
        agree = {None: "", True: "yes", False: "**NO**"}[r.agree]
        lines.append(f"| {_cell(r.spec)} | {r.backend} | {r.status} | {_number(r.objective)} | {_number(r.bound)} "
                     f"| {_percent(r.gap)} | {_seconds(r.wall_time)} | {agree} | {_cell(r.message)} |")
    if report.disagreements:
        lines += ["", "**Disagreements between exact results:**", ""] + [f"- {d}" for d in report.disagreements]
    return "\n".join(lines) + "\n"


def frontier_table(spec: Spec, resource: str, points: Sequence[FrontierPoint], elapsed: float) -> str:
    """The frontier as a fixed-width table: budget, share of the full cost, objective, status, costs, blocks."""
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


def _number(x: float | None) -> str:
    return "" if x is None else f"{x:.10g}"


def _percent(x: float | None) -> str:
    if x is None:
        return ""
    return "inf" if math.isinf(x) else f"{100 * x:.3g}%"


def _seconds(x: float | None) -> str:
    return "" if x is None else f"{x:.3g}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
