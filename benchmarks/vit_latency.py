"""ViT latency tables: build time, calibration, and predicted vs measured latency of pruned ViT-Tiny models.

    python benchmarks/vit_latency.py                 # ViT-Tiny, batch 1, CPU, 1 thread, fresh cache
    python benchmarks/vit_latency.py --depth 4       # a quicker, shallower run

Builds a spec with raw measured tables (attention over embedding x heads x head dim, MLP over
embedding x hidden; calibrate=False, timed as "table build"), calibrates it exactly as
build_spec does by default (timed separately), solves it exactly at several latency
budgets, slims the model and measures it like the tables are measured (`measure_latency`,
in alternation with the full model). Per budget: the calibrated prediction, the measurement,
their error, whether the model is within its budget, and the errors of the raw tables, the
tables times one factor (measured / predicted full model) and a FLOPs-proportional predictor.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from mdp_opt.adapters.torch import MeasuredLatency, build_spec
from latency_report import report  # benchmarks/

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vit_models import TimmStyleViT  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=12, help="transformer blocks (ViT-Tiny: 12)")
    parser.add_argument("--step", type=int, default=16, help="embedding granularity")
    parser.add_argument("--mlp-step", type=int, default=64, help="MLP hidden granularity")
    parser.add_argument("--head-dim-step", type=int, default=8, help="q/k and v dim per head granularity")
    parser.add_argument("--budgets", default="30,45,60,75,90", help="latency budgets in percent")
    parser.add_argument("--repeats", type=int, default=21, help="timed repetitions per table entry")
    parser.add_argument("--model-repeats", type=int, default=20, help="timed repetitions per whole-model measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each pruned model, alternating with the full model")
    parser.add_argument("--calibration", choices=("factor", "parts"), default="factor",
                        help="the calibration of the spec solved (default factor, build_spec's default)")
    parser.add_argument("--measured", action="store_true",
                        help="also meet every budget on measured latency with mdp_opt.solve_measured")
    parser.add_argument("--noise-runs", type=int, default=5, help="repeated measurements of the full model")
    parser.add_argument("--flush-mb", type=int, default=None,
                        help="cache flush before each timing, MB (default: MeasuredLatency's, 8x L2)")
    parser.add_argument("--backend", default="milp")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds per solve")
    parser.add_argument("--cache-dir", default=None, help="latency cache (default: a fresh temporary directory)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = TimmStyleViT(image_size=224, patch=16, dim=192, depth=args.depth, num_heads=3, mlp_hidden=768,
                         num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    data = [(torch.randn(4, 3, 224, 224), torch.randint(0, 1000, (4,))) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        timer = MeasuredLatency(repeats=args.repeats, cache_dir=args.cache_dir or tmp, flush_mb=args.flush_mb,
                                calibrate=False)
        start = time.perf_counter()
        raw, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=timer,
                                 costs=("latency", "flops"), step=args.step, mlp_step=args.mlp_step,
                                 head_dim_step=args.head_dim_step)
        build_time = time.perf_counter() - start
    print(f"model: ViT embed 192, 3 heads, {args.depth} blocks, MLP 768, 224x224 patch 16, batch 1, CPU, 1 thread; "
          f"cache flush {timer.flush_mb} MB")
    print(f"spec: {raw}")
    print(f"table build (importance, then {sum(t.table.size for t in raw.costs['latency'])} table entries measured, "
          f"shapes deduplicated across blocks): {build_time:.1f} s")
    report(raw, handle, model, x, timer, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
