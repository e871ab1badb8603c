"""Measured latency tables on a hand-written ResNet-50: build time, and predicted vs measured
latency of the pruned models at several budgets, next to a FLOPs-proportional predictor.

    python benchmarks/torch_latency.py                       # full run: batch 1, 224 px, step 16
    python benchmarks/torch_latency.py --step 64 --size 160  # a quicker, coarser run

Prints one row per budget and the mean relative errors. The latency cache lives in
--cache-dir (a fresh temporary directory by default, so the table build time is real).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import mdp_opt
from mdp_opt.adapters.torch import MeasuredLatency, build_spec, measure_latency

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_models import resnet50  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step", type=int, default=16, help="channel granularity (default 16)")
    p.add_argument("--size", type=int, default=224, help="input image size (default 224)")
    p.add_argument("--budgets", default="30,45,60,75,90", help="latency budgets, percent of the full model")
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions per table entry (default 7)")
    p.add_argument("--model-repeats", type=int, default=30, help="timed repetitions per whole model (default 30)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for tables and models (default 1)")
    p.add_argument("--backend", default="milp", help="mdp-opt backend (default milp)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds per solve (default 300)")
    p.add_argument("--no-presolve", action="store_true", help="solve without the Lagrangian presolve")
    p.add_argument("--cache-dir", default=None, help="latency cache directory (default: a fresh temporary one)")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(1, 3, args.size, args.size)
    batches = [(torch.randn(2, 3, args.size, args.size), torch.randint(0, 1000, (2,))) for _ in range(2)]
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="mdp-latency-")
    timer = MeasuredLatency(threads=args.threads, repeats=args.repeats, cache_dir=cache_dir)

    start = time.perf_counter()
    spec, handle = build_spec(model, x, data=batches, loss_fn=F.cross_entropy, latency=timer,
                              costs=("latency", "flops"), step=args.step, blocks="auto")
    build_s = time.perf_counter() - start
    print(f"spec: {spec}")
    print(f"build_spec (importance + tables, batch 1, {args.size}px, step {args.step}, {args.threads} thread): "
          f"{build_s:.1f} s")

    full = spec.full_costs()
    noise = [measure_latency(model, x, threads=args.threads, repeats=args.model_repeats) for _ in range(3)]
    full_ms = statistics.median(noise)
    spread = (max(noise) - min(noise)) / full_ms
    print(f"full model: predicted {full['latency']:.2f} ms, measured {full_ms:.2f} ms "
          f"(3 runs, spread {100 * spread:.1f}%)")

    scale = full_ms / full["latency"]
    print(f"rescaled predictor: tables x {scale:.3f} (measured / predicted full model)")
    print("within: measured <= budget x (1 + spread); 'ms' = budget in the spec's milliseconds, "
          "'%' = the same percentage of the measured full model")
    print(f"{'budget':>7} {'status':>9} {'blocks':>6} {'predicted':>10} {'measured':>9} {'error':>7} "
          f"{'rescaled':>9} {'error':>7} {'flops-prop':>10} {'error':>7} {'within ms':>9} {'within %':>8}")
    errors, scaled_errors, flop_errors = [], [], []
    for pct in (float(b) for b in args.budgets.split(",")):
        budget = pct / 100 * full["latency"]
        result = mdp_opt.solve(spec, budget={"latency": budget}, backend=args.backend, time_limit=args.time_limit,
                               presolve=not args.no_presolve)
        small = handle.apply(result)
        measured = measure_latency(small, x, threads=args.threads, repeats=args.model_repeats)
        predicted = result.costs["latency"]
        flop_prop = full_ms * result.costs["flops"] / full["flops"]
        errors.append(abs(predicted - measured) / measured)
        scaled_errors.append(abs(scale * predicted - measured) / measured)
        flop_errors.append(abs(flop_prop - measured) / measured)
        within_ms = measured <= budget * (1 + spread)
        within_pct = measured <= pct / 100 * full_ms * (1 + spread)
        print(f"{pct:6.0f}% {result.status.value:>9} {sum(result.active.values()):>3}/{len(result.active):<2} "
              f"{predicted:9.2f}  {measured:8.2f}  {100 * errors[-1]:5.1f}%  {scale * predicted:8.2f}  "
              f"{100 * scaled_errors[-1]:5.1f}%  {flop_prop:9.2f}  {100 * flop_errors[-1]:5.1f}%  "
              f"{'yes' if within_ms else 'NO':>9} {'yes' if within_pct else 'NO':>8}")
    print(f"mean |error|: latency tables {100 * statistics.mean(errors):.1f}%, rescaled tables "
          f"{100 * statistics.mean(scaled_errors):.1f}%, FLOPs-proportional {100 * statistics.mean(flop_errors):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
