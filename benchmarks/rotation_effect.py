"""Does a whole model's measured latency depend on what runs between its runs?

    python benchmarks/rotation_effect.py efficientnet_b0 --runtime onnxruntime

Calibration times its reference models in one rotation (A B C ... A B C ...), so a slow phase of the
machine hits them all alike. This script times one model, the full configuration of an architecture
(tests/zoo_models.py, random weights, 64 px, batch 1), in rotations with 0, 4 and 16 other models
(random slimmings of it), and with 16 in streaks (`--streak` runs of a model kept per turn, after one
dropped: `measure_interleaved(streak=...)`), with the cache flush before each run at the default size
(8x L2) and at `--big-flush` MB (larger than the last-level cache), repeated `--repeats` times in
turn. It prints the full model's median per setting and the noise floor (spread of the medians of five
interleaved subsets); the last column settles each turn (`--settle-ms` of untimed runs first, as the
calibration does by default).

With `--recovery` it prints instead how the full model recovers: its median run time at each position
of `--positions` runs in a row just after 8 other models ran, and just after 8 identical copies of it
ran (each its own session or module), beside its time alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mdp_opt.adapters.torch import MeasuredLatency, build_spec
from mdp_opt.adapters.torch.latency import CALIBRATION_SETTLE_MS, eval_mode, interleaved_samples, threads_ctx
from mdp_opt.adapters.torch.runtimes import Compiled
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
    p.add_argument("--streak", type=int, default=3, help="runs in a row per turn in the streak column")
    p.add_argument("--settle-ms", type=float, default=CALIBRATION_SETTLE_MS,
                   help="untimed runs at the start of each turn in the last column, in ms")
    p.add_argument("--recovery", action="store_true", help="print the recovery by position instead")
    p.add_argument("--positions", type=int, default=12)
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
    if args.recovery:
        return recovery(full, others[:8], [copy.deepcopy(full) for _ in range(8)], x, timers["default"], args)
    settings = [(0, 1, 0.0), (4, 1, 0.0), (16, 1, 0.0), (16, args.streak, 0.0), (16, 1, args.settle_ms)]
    print(f"{args.arch} {args.size}px x1 {args.runtime}: the full model's median (noise) in ms; default flush "
          f"{timers['default'].flush_mb} MB; `measure_interleaved(streak={args.streak})`, "
          f"`measure_interleaved(settle_ms={args.settle_ms:g})`")
    print(f"| repeat | flush | alone | 4 others | 16 others | 16 others, streaks of {args.streak} | "
          f"16 others, settled {args.settle_ms:g} ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for repeat in range(args.repeats):
        for name, timer in timers.items():
            cells = []
            for k, streak, settle_ms in settings:
                samples = timer.measure_interleaved([full] + others[:k], x, args.runs, streak=streak,
                                                    settle_ms=settle_ms)[0]
                cells.append(f"{statistics.median(samples):.3f} ({100 * noise_spread(samples):.1f}%)")
            print(f"| {repeat + 1} | {name} | " + " | ".join(cells) + " |", flush=True)
    return 0


def recovery(full: torch.nn.Module, others: list[torch.nn.Module], copies: list[torch.nn.Module], x: torch.Tensor,
             timer: MeasuredLatency, args: argparse.Namespace) -> int:
    """The full model's median time at each position of a run of `args.positions` just after `others` and just
    after `copies` ran once each, `args.runs` times; beside its median alone."""
    device = x.device
    target = timer.compiled(full, x)
    groups = {"8 other models": [timer.compiled(m, x) for m in others],
              "8 copies of it": [timer.compiled(m, x) for m in copies]}
    print(f"{args.arch} {args.size}px x1 {args.runtime}: the full model's median ms by position in a run of "
          f"{args.positions}, just after the models named ran (flush {timer.flush_mb} MB)")
    print("| just after | " + " | ".join(str(k + 1) for k in range(args.positions)) + " |")
    print("|---|" + "---:|" * args.positions)
    with threads_ctx(timer.threads), contextlib.ExitStack() as stack:
        for m in [full, *others, *copies]:
            stack.enter_context(eval_mode(m))
        recovery_rows(target, groups, device, timer.flush_mb, args)
    return 0


def recovery_rows(target: Compiled, groups: dict[str, list[Compiled]], device: torch.device, flush_mb: int,
                  args: argparse.Namespace) -> None:
    """Per repeat: the target's median alone, then one row per group of its medians by position."""
    for repeat in range(args.repeats):
        alone = statistics.median(interleaved_samples([target], device, args.runs, 5, flush_mb)[0])
        print(f"| alone (repeat {repeat + 1}) | {alone:.3f} |" + " |" * (args.positions - 1), flush=True)
        for name, group in groups.items():
            by_position: list[list[float]] = [[] for _ in range(args.positions)]
            for _ in range(args.runs):
                interleaved_samples(group, device, 1, 0, flush_mb)
                for k, ms in enumerate(interleaved_samples([target], device, args.positions, 0, flush_mb)[0]):
                    by_position[k].append(ms)
            print(f"| {name} | " + " | ".join(f"{statistics.median(p):.3f}" for p in by_position) + " |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
