"""Measured latency tables on a hand-written ResNet-50: build time, calibration, and predicted vs
measured latency of the pruned models at several budgets, next to the raw tables, the tables
times one factor (measured / predicted full model) and a FLOPs-proportional predictor.

    python benchmarks/torch_latency.py                       # full run: batch 1, 224 px, step 16
    python benchmarks/torch_latency.py --step 64 --size 160  # a quicker, coarser run

The latency cache lives in --cache-dir (a fresh temporary directory by default, so the table
build time is real). The tables are built raw (calibrate=False, timed as "table build"), then
calibrated exactly as build_spec does by default (timed separately).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mdp_opt.adapters.torch import MeasuredLatency, build_spec
from latency_report import report  # benchmarks/

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_models import resnet50  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--step", type=int, default=16, help="channel granularity (default 16)")
    p.add_argument("--size", type=int, default=224, help="input image size (default 224)")
    p.add_argument("--budgets", default="30,45,60,75,90", help="latency budgets, percent of the full model")
    p.add_argument("--repeats", type=int, default=21, help="timed repetitions per table entry (default 21)")
    p.add_argument("--model-repeats", type=int, default=20,
                   help="timed repetitions per whole-model measurement (default 20)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurements of each pruned model, alternating with the full model (default 3)")
    p.add_argument("--calibration", choices=("factor", "parts"), default="factor",
                   help="the calibration of the spec solved (default factor, build_spec's default)")
    p.add_argument("--measured", action="store_true",
                   help="also meet every budget on measured latency with mdp_opt.solve_measured")
    p.add_argument("--noise-runs", type=int, default=5, help="repeated measurements of the full model (default 5)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for tables and models (default 1)")
    p.add_argument("--backend", default="milp", help="mdp-opt backend (default milp)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds per solve (default 300)")
    p.add_argument("--cache-dir", default=None, help="latency cache directory (default: a fresh temporary one)")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    model = resnet50().eval()
    x = torch.randn(1, 3, args.size, args.size)
    batches = [(torch.randn(2, 3, args.size, args.size), torch.randint(0, 1000, (2,))) for _ in range(2)]
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="mdp-latency-")
    timer = MeasuredLatency(threads=args.threads, repeats=args.repeats, cache_dir=cache_dir, calibrate=False)

    start = time.perf_counter()
    raw, handle = build_spec(model, x, data=batches, loss_fn=F.cross_entropy, latency=timer,
                             costs=("latency", "flops"), step=args.step, blocks="auto")
    build_s = time.perf_counter() - start
    print(f"spec: {raw}")
    print(f"build_spec (importance + raw tables, batch 1, {args.size}px, step {args.step}, {args.threads} thread, "
          f"cache flush {timer.flush_mb} MB): {build_s:.1f} s")
    report(raw, handle, model, x, timer, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
