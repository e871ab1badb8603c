"""Does a whole model's measured latency depend on what runs between its runs?

    flock /work/bench.lock python benchmarks/rotation_effect.py efficientnet_b0 --runtime onnxruntime

Calibration times its reference models in one rotation (A B C ... A B C ...), so a slow phase of the
machine hits them all alike. This script times one model, the full configuration of an architecture
(tests/zoo_models.py, random weights, 64 px, batch 1), in rotations with 0, 4 and 16 other models
(random slimmings of it), and with 16 in streaks (`--streak` runs of a model kept per turn, after one
dropped: `measure_interleaved(streak=...)`), with the cache flush before each run at the default size
(8x L2) and at `--big-flush` MB (larger than the last-level cache), repeated `--repeats` times in
turn. It prints the full model's median per setting and the noise floor (spread of the medians of five
interleaved subsets).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mdp_opt.adapters.torch import MeasuredLatency, build_spec
from mdp_opt.adapters.torch.latency_model import as_result, noise_spread

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo_models import ARCHITECTURES, settle_batchnorm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", choices=sorted(ARCHITECTURES))
    p.add_argument("--runtime", default="eager")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2, help="times every setting is measured, in turn")
    p.add_argument("--big-flush", type=int, default=96, help="MB written before each run in the second setting "
                                                               "(0: no second setting)")
    p.add_argument("--streak", type=int, default=3, help="runs in a row per turn in the last column")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = ARCHITECTURES[args.arch](num_classes=1000, image_size=args.size)
    settle_batchnorm(model, [torch.randn(16, 3, args.size, args.size) for _ in range(4)])
    x = torch.randn(1, 3, args.size, args.size)
    data = [(torch.randn(8, 3, args.size, args.size), torch.randint(0, 1000, (8,)))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops", step=16)
    rng = np.random.default_rng(0)
    full = handle.apply(as_result(spec, *spec.full_configuration(), "full"))
    others = [handle.apply(as_result(spec, {d.name: int(rng.integers(d.size // 2, d.size)) for d in spec.dims},
                                     {b: True for b in spec.block_names}, "other")) for _ in range(16)]
    timers = {"default": MeasuredLatency(runtime=args.runtime, progress=False, calibrate=False)}
    if args.big_flush:
        timers[f"{args.big_flush} MB"] = MeasuredLatency(runtime=args.runtime, progress=False, calibrate=False,
                                                         flush_mb=args.big_flush)
    settings = [(0, 1), (4, 1), (16, 1), (16, args.streak)]        # (other models in the rotation, streak)
    print(f"{args.arch} {args.size}px x1 {args.runtime}: the full model's median (noise) in ms; default flush "
          f"{timers['default'].flush_mb} MB; last column: `measure_interleaved(streak={args.streak})`")
    print(f"| repeat | flush | alone | 4 others | 16 others | 16 others, streaks of {args.streak} |")
    print("|---|---|---:|---:|---:|---:|")
    for repeat in range(args.repeats):
        for name, timer in timers.items():
            cells = []
            for k, streak in settings:
                samples = timer.measure_interleaved([full] + others[:k], x, args.runs, streak=streak)[0]
                cells.append(f"{statistics.median(samples):.3f} ({100 * noise_spread(samples):.1f}%)")
            print(f"| {repeat + 1} | {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
