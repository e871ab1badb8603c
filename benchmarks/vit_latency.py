"""ViT latency tables: build time, and predicted vs measured latency of pruned ViT-Tiny models.

    python benchmarks/vit_latency.py                 # ViT-Tiny, batch 1, CPU, 1 thread, fresh cache
    python benchmarks/vit_latency.py --depth 4       # a quicker, shallower run

Builds a spec with measured latency tables (attention over embedding x heads x head dim,
MLP over embedding x hidden), solves it exactly at several latency budgets, slims the
model and measures it like the tables are measured (`measure_latency`). Prints the
table build time, then per budget the predicted and measured latency, their error, the
error of the tables rescaled by one factor (measured / predicted latency of the full
model: parts timed alone miss some of the cost of running inside the network), and the
error of a FLOPs-proportional predictor (measured full latency x FLOPs ratio).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import mdp_opt
from mdp_opt.adapters.torch import MeasuredLatency, measure_latency
from mdp_opt.adapters.torch.vit import build_vit_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vit_models import TimmStyleViT  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=12, help="transformer blocks (ViT-Tiny: 12)")
    parser.add_argument("--step", type=int, default=16, help="embedding granularity")
    parser.add_argument("--mlp-step", type=int, default=64, help="MLP hidden granularity")
    parser.add_argument("--head-dim-step", type=int, default=8, help="q/k and v dim per head granularity")
    parser.add_argument("--budgets", default="30,45,60,75,90", help="latency budgets in percent")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per table entry")
    parser.add_argument("--model-repeats", type=int, default=30, help="timed repetitions per whole model")
    parser.add_argument("--flush-mb", type=int, default=None,
                        help="cache flush before each timing, MB (default: MeasuredLatency's, 8x L2)")
    parser.add_argument("--backend", default="milp")
    parser.add_argument("--cache-dir", default=None, help="latency cache (default: a fresh temporary directory)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = TimmStyleViT(image_size=224, patch=16, dim=192, depth=args.depth, num_heads=3, mlp_hidden=768,
                         num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    data = [(torch.randn(4, 3, 224, 224), torch.randint(0, 1000, (4,))) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        timer = MeasuredLatency(repeats=args.repeats, cache_dir=args.cache_dir or tmp, flush_mb=args.flush_mb)
        start = time.perf_counter()
        spec, handle = build_vit_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=timer,
                                      costs=("latency", "flops"), step=args.step, mlp_step=args.mlp_step,
                                      head_dim_step=args.head_dim_step)
        build_time = time.perf_counter() - start
    print(f"model: ViT embed 192, 3 heads, {args.depth} blocks, MLP 768, 224x224 patch 16, batch 1, CPU, 1 thread; "
          f"cache flush {timer.flush_mb} MB")
    print(f"spec: {spec}")
    print(f"table build (importance, then {sum(t.table.size for t in spec.costs['latency'])} table entries measured, "
          f"shapes deduplicated across blocks): {build_time:.1f} s")

    full_pred = spec.full_costs()["latency"]
    full_flops = spec.full_costs()["flops"]
    full_meas = measure_latency(model, x, repeats=args.model_repeats, flush_mb=timer.flush_mb)
    print(f"\nfull model: predicted {full_pred:.2f} ms, measured {full_meas:.2f} ms "
          f"({100 * (full_pred - full_meas) / full_meas:+.1f}%)")
    scale = full_meas / full_pred
    print(f"\n{'budget':>7} {'pred ms':>8} {'meas ms':>8} {'error':>7} {'rescaled':>8} {'flops-prop':>10} "
          f"{'its error':>9} {'in budget':>9} {'solve s':>7}")
    errors, scaled_errors, flop_errors = [], [], []
    for percent in (float(p) for p in args.budgets.split(",")):
        result = mdp_opt.solve(spec, {"latency": f"{percent}%"}, backend=args.backend)
        small = handle.apply(result)
        measured = measure_latency(small, x, repeats=args.model_repeats, flush_mb=timer.flush_mb)
        predicted = result.costs["latency"]
        by_flops = full_meas * result.costs["flops"] / full_flops
        errors.append(abs(predicted - measured) / measured)
        scaled_errors.append(abs(scale * predicted - measured) / measured)
        flop_errors.append(abs(by_flops - measured) / measured)
        budget = percent / 100 * full_pred
        print(f"{percent:6.0f}% {predicted:8.2f} {measured:8.2f} {100 * (predicted - measured) / measured:+6.1f}% "
              f"{100 * (scale * predicted - measured) / measured:+7.1f}% {by_flops:10.2f} {100 * (by_flops - measured) / measured:+8.1f}% "
              f"{'yes' if measured <= budget else 'no':>9} {result.wall_time:7.2f}")
    print(f"\nmean |error|: tables {100 * np.mean(errors):.1f}%, tables rescaled by the full model "
          f"{100 * np.mean(scaled_errors):.1f}%, FLOPs-proportional {100 * np.mean(flop_errors):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
