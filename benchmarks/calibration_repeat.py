"""How reproducible is a calibration, and how does it compare with the answers timed alone?

    python benchmarks/calibration_repeat.py mobilenet_v2 --runtime onnxruntime --rounds 3

Builds the spec of an architecture (tests/zoo_models.py, random weights, batch 1) with measured tables, solves it
at `--budgets` once, and keeps those answers fixed. Then, for `--rounds` rounds, calibrates the spec again with
each `--settle-ms` setting in turn (`MeasuredLatency(calibration_settle_ms=...)`, the tables cached) and times
the fixed answers alone after each calibration (run after run as `measure_latency` does, in three blocks taken in
turn, the median of the blocks). Prints, per round and setting, each answer's prediction, its time alone and
predicted / alone - 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import mdp_opt
from mdp_opt.adapters.torch import MeasuredLatency, build_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from latency_accuracy import STEPS, VIT_STEPS, timed_alone  # noqa: E402
from zoo_models import ARCHITECTURES, settle_batchnorm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arch", choices=sorted(ARCHITECTURES))
    p.add_argument("--runtime", default="onnxruntime")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settle-ms", default="0,15", help="calibration settling times to compare, in ms")
    p.add_argument("--budgets", default="90,50,30", help="latency budgets of the fixed answers, in percent")
    p.add_argument("--runs", type=int, default=30, help="runs of each answer timed alone (in three blocks)")
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "mdp-opt-latency-accuracy"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    size = args.size
    model = ARCHITECTURES[args.arch](num_classes=1000, image_size=size)
    settle_batchnorm(model, [torch.randn(16, 3, size, size) for _ in range(4)])
    x = torch.randn(1, 3, size, size)
    data = [(torch.randn(8, 3, size, size), torch.randint(0, 1000, (8,))) for _ in range(4)]
    extra = VIT_STEPS if args.arch == "vit_tiny" else {}

    def build(settle_ms: float) -> tuple[mdp_opt.Spec, object, MeasuredLatency]:
        timer = MeasuredLatency(runtime=args.runtime, progress=False, cache_dir=args.cache_dir,
                                calibration_settle_ms=settle_ms)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=timer,
                                      step=STEPS[args.arch], **extra)
        return spec, handle, timer

    first, handle, _ = build(0.0)
    budgets = [int(b) for b in args.budgets.split(",")]
    answers = [mdp_opt.solve(first, {"latency": f"{b}%"}) for b in budgets]
    models = [handle.apply(r) for r in answers]
    print(f"{args.arch} {size}px x1 {args.runtime}: answers at {args.budgets}% fixed; per calibration: predicted ms, "
          f"timed alone ms (predicted / alone - 1)")
    for round_ in range(args.rounds):
        for settle_ms in (float(s) for s in args.settle_ms.split(",")):
            spec, _, timer = build(settle_ms)
            predicted = [mdp_opt.evaluate(spec, r.choice, r.active).costs["latency"] for r in answers]
            alone = timed_alone(timer, models, x, args.runs)
            print(f"round {round_ + 1} settle {settle_ms:4g} ms: " + "  ".join(
                f"{b}%: {p:.3f} / {a:.3f} ({100 * (p / a - 1):+.1f}%)" for b, p, a in zip(budgets, predicted, alone)),
                flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
