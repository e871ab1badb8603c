"""Shared by benchmarks/torch_latency.py and benchmarks/vit_latency.py: calibrate a spec built with
raw measured tables, then solve it at several budgets, slim, measure, and print predicted vs
measured latency next to three other predictors (raw tables, tables x one factor from the full
model, FLOPs-proportional)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

import mdp_opt
from mdp_opt.adapters.torch import MeasuredLatency, measure_latency
from mdp_opt.adapters.torch.calibration import (Calibration, calibrate_latency, calibrated_spec, configuration, fit,
                                                split_costs, uniform_choice)

PREDICTORS = ("factor", "parts", "raw tables", "FLOPs-prop.")
RELATIVE = ("parts", "tables", "FLOPs")


@dataclass
class Row:
    percent: float
    status: str
    blocks: str
    budget_ms: float
    measured_ms: float
    full_ms: float                      # the full configuration, measured in alternation with this one
    predictions: dict[str, float]
    fractions: dict[str, float]         # predicted fraction of the full configuration

    def error(self, predictor: str) -> float:
        return (self.predictions[predictor] - self.measured_ms) / self.measured_ms

    def relative_error(self, predictor: str) -> float:
        """Predicted vs measured fraction of the full configuration (measured in alternation): free of the
        machine's drift between the calibration and this measurement."""
        return self.fractions[predictor] / (self.measured_ms / self.full_ms) - 1


def timed_in_alternation(models: list[nn.Module], x: torch.Tensor, timer: MeasuredLatency, repeats: int,
                         rounds: int) -> list[float]:
    """Median over `rounds` of each model's `measure_latency` (median of `repeats`), models taken in turn."""
    samples: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model, out in zip(models, samples):
            out.append(measure_latency(model, x, threads=timer.threads, repeats=repeats, flush_mb=timer.flush_mb))
    return [statistics.median(s) for s in samples]


def full_configuration(spec: mdp_opt.Spec, handle) -> nn.Module:
    """The model `handle.apply` builds for the full configuration (what the spec's full latency describes)."""
    return handle.apply(configuration(spec, uniform_choice(spec, 1.0), "full"))


def noise(model: nn.Module, x: torch.Tensor, timer: MeasuredLatency, repeats: int, runs: int) -> float:
    """Print `runs` measurements of `model` (the full configuration) and return their spread (max - min) / median."""
    samples = [measure_latency(model, x, threads=timer.threads, repeats=repeats, flush_mb=timer.flush_mb)
               for _ in range(runs)]
    spread = (max(samples) - min(samples)) / statistics.median(samples)
    print(f"noise: full configuration measured {runs} times (median of {repeats} runs each): "
          f"{', '.join(f'{s:.2f}' for s in samples)} ms; spread (max - min) / median {100 * spread:.1f}%, "
          f"stdev {100 * statistics.stdev(samples) / statistics.mean(samples):.1f}%")
    return spread


def calibrate(raw: mdp_opt.Spec, handle, x: torch.Tensor, timer: MeasuredLatency, method: str
              ) -> tuple[mdp_opt.Spec, Calibration, Calibration]:
    """Both calibrations from one set of reference models (timed as build_spec times them); returns the
    spec calibrated by `method` (what build_spec with MeasuredLatency(calibrate=method) gives), and the
    "factor" and "parts" fits."""
    start = time.perf_counter()
    _, parts = calibrate_latency(raw, handle, lambda m: timer.measure(m, x), timer.describe(), "parts")
    seconds = time.perf_counter() - start
    factor = fit(parts.points[:1])
    print(f"calibration reference models ({seconds:.1f} s): " + "; ".join(
        f"{p.name}: tables {p.tables_ms:.2f} ms (fixed parts {p.fixed_ms:.2f}), measured {p.measured_ms:.2f} ms"
        for p in parts.points))
    print(f"  factor: latency = {factor.variable_factor:.3f} x tables; parts: latency = {parts.variable_factor:.3f} "
          f"x variable parts + {parts.fixed_factor:.3f} x fixed parts" + (f" ({parts.note})" if parts.note else ""))
    print(f"  the budgets below are solved on the {method!r} spec")
    chosen = {"factor": factor, "parts": parts}[method]
    return calibrated_spec(raw, chosen, timer.describe()), factor, parts


def run_budgets(raw: mdp_opt.Spec, spec: mdp_opt.Spec, factor: Calibration, parts: Calibration, handle,
                model: nn.Module, full_model: nn.Module, x: torch.Tensor, timer: MeasuredLatency,
                percents: list[float], backend: str,
                time_limit: float | None, repeats: int, rounds: int) -> list[Row]:
    full_ms = factor.points[0].measured_ms
    original, applied = timed_in_alternation([model, full_model], x, timer, repeats, rounds)
    print(f"the original model measures {original:.2f} ms, the full configuration built by handle.apply "
          f"{applied:.2f} ms ({100 * (applied - original) / original:+.1f}%); budgets are percentages of the "
          "spec's full latency (the latter, as calibrated)")
    full_flops = spec.full_cost("flops")
    rows = []
    for pct in percents:
        budget = pct / 100 * spec.full_cost("latency")
        result = mdp_opt.solve(spec, {"latency": budget}, backend=backend, time_limit=time_limit)
        if not result.has_solution:
            print(f"{pct:5.0f}%: {result.status.value}, no configuration")
            continue
        small = handle.apply(result)
        full_now, measured = timed_in_alternation([full_model, small], x, timer, repeats, rounds)
        variable, fixed = split_costs(raw, result)
        rows.append(Row(pct, result.status.value, f"{sum(result.active.values())}/{len(result.active)}", budget,
                        measured, full_now,
                        {"spec": result.costs["latency"], "factor": factor.predict(variable, fixed),
                         "parts": parts.predict(variable, fixed), "raw tables": variable + fixed,
                         "FLOPs-prop.": full_ms * result.costs["flops"] / full_flops},
                        {"parts": parts.predict(variable, fixed) / parts.predict(*_full_parts(parts)),
                         "tables": (variable + fixed) / raw.full_cost("latency"),
                         "FLOPs": result.costs["flops"] / full_flops}))
    return rows


def print_rows(rows: list[Row], spread: float) -> None:
    print(f"within: measured <= budget x (1 + noise spread {100 * spread:.1f}%); 'ms' against the budget in "
          "milliseconds, 'rel' the measured model / the full configuration measured in alternation with it, "
          "against the budget's percentage. Errors: (predicted - measured) / measured in ms ('pred ms' and 'error': "
          "the spec solved; then each predictor); 'rel err' the same for fractions of the full configuration (free "
          "of the machine's drift; a factor cancels: 'tables' is the raw tables and 'factor' alike)")
    print(f"{'budget':>6} {'status':>8} {'blocks':>6} {'budget ms':>9} {'pred ms':>8} {'meas ms':>8} {'error':>7} "
          f"{'within ms':>9} {'within rel':>10} " + " ".join(f"{p + ' err':>15}" for p in PREDICTORS)
          + " " + " ".join(f"{p + ' rel err':>18}" for p in RELATIVE))
    for r in rows:
        within_ms = r.measured_ms <= r.budget_ms * (1 + spread)
        within_rel = r.measured_ms / r.full_ms <= r.percent / 100 * (1 + spread)
        print(f"{r.percent:5.0f}% {r.status:>8} {r.blocks:>6} {r.budget_ms:9.2f} {r.predictions['spec']:8.2f} "
              f"{r.measured_ms:8.2f} {100 * r.error('spec'):+6.1f}% {'yes' if within_ms else 'NO':>9} "
              f"{'yes' if within_rel else 'NO':>10} "
              + " ".join(f"{100 * r.error(p):+14.1f}%" for p in PREDICTORS) + " "
              + " ".join(f"{100 * r.relative_error(p):+17.1f}%" for p in RELATIVE))
    if rows:
        print("mean |error|: " + ", ".join(
            f"{p} {100 * statistics.mean(abs(r.error(p)) for r in rows):.1f}%" for p in PREDICTORS)
            + "; worst under-prediction (model slower than predicted): " + ", ".join(
            f"{p} {100 * max(0.0, max(-r.error(p) for r in rows)):.1f}%" for p in PREDICTORS))
        print("mean |rel error|: " + ", ".join(
            f"{p} {100 * statistics.mean(abs(r.relative_error(p)) for r in rows):.1f}%" for p in RELATIVE)
            + "; worst: " + ", ".join(
            f"{p} {100 * max(0.0, max(-r.relative_error(p) for r in rows)):.1f}%" for p in RELATIVE))


def measured_search(spec: mdp_opt.Spec, handle, full_model: nn.Module, x: torch.Tensor, timer: MeasuredLatency,
                    percents: list[float], backend: str, time_limit: float | None, repeats: int, rounds: int) -> None:
    """Meet every budget on measured latency with `mdp_opt.solve_measured` and print what it took. The measured
    cost is the slimmed model / the full configuration timed in alternation, times the spec's full latency."""
    print("budgets met on measured latency (mdp_opt.solve_measured; 'rel' as above, the loop's own measurement):")
    print(f"{'budget':>6} {'solves':>6} {'first rel':>9} {'rel':>7} {'within':>6} {'pred ms':>8} {'seconds':>8}")
    full = spec.full_cost("latency")

    def measure(result: mdp_opt.Result) -> float:
        full_now, measured = timed_in_alternation([full_model, handle.apply(result)], x, timer, repeats, rounds)
        return full * measured / full_now

    for pct in percents:
        start = time.perf_counter()
        fit = mdp_opt.solve_measured(spec, {"latency": f"{pct}%"}, measure, backend=backend, time_limit=time_limit)
        first = fit.rounds[0].measured
        print(f"{pct:5.0f}% {len(fit.rounds):6d} "
              f"{'-' if first is None else f'{100 * first / full:8.1f}%'} "
              f"{'-' if fit.measured is None else f'{100 * fit.measured / full:6.1f}%'} {'yes' if fit.within else 'NO':>6} "
              f"{fit.result.costs.get('latency', float('nan')):8.2f} {time.perf_counter() - start:8.1f}")


def report(raw: mdp_opt.Spec, handle, model: nn.Module, x: torch.Tensor, timer: MeasuredLatency, args) -> None:
    """The whole comparison for a spec built with raw tables: noise, calibration, every budget, the table.

    `args` carries the options both benchmark scripts share: model_repeats, noise_runs, calibration, budgets
    (comma-separated percentages), backend, time_limit, rounds, measured (also meet each budget on measured
    latency with `solve_measured`)."""
    full_model = full_configuration(raw, handle)
    spread = noise(full_model, x, timer, args.model_repeats, args.noise_runs)
    spec, factor, parts = calibrate(raw, handle, x, timer, args.calibration)
    rows = run_budgets(raw, spec, factor, parts, handle, model, full_model, x, timer,
                       [float(b) for b in args.budgets.split(",")], args.backend, args.time_limit,
                       args.model_repeats, args.rounds)
    print_rows(rows, spread)
    if args.measured:
        measured_search(spec, handle, full_model, x, timer, [float(b) for b in args.budgets.split(",")], args.backend,
                        args.time_limit, args.model_repeats, args.rounds)


def _full_parts(calibration: Calibration) -> tuple[float, float]:
    full = calibration.points[0]
    return full.tables_ms - full.fixed_ms, full.fixed_ms
