"""Pruning while training, on real data: iterative MDP versus one-shot MDP (and Torch-Pruning's own ratio-based
pruner when it is installed) at the same final latency budget, with the same total training.

    python examples/digits_iterative.py            # about 1-2 minutes on a 2-core CPU
    python examples/digits_iterative.py --quick    # a smaller net and fewer epochs (the test suite runs it)

The data, the network (a small ResNet with removable blocks), the training loop and the timing come from
`examples/digits.py`. A dense model is trained, then each method gets the same `finetune_epochs` of training
(same optimizer, learning-rate schedule, seed and batches):

- one-shot MDP: Taylor importance on a few training batches, one exact solve at the final budget, `apply`, then
  all the fine-tuning epochs;
- iterative MDP (`IterativePruner`): pruned in place `steps` times during the first half of the fine-tuning, at
  budgets linear from 100% down to the final one, with importance from the training's own backward passes and
  the optimizer's momentum kept for the kept channels; the second half trains the final structure;
- Torch-Pruning (if `torch_pruning` imports): `MagnitudePruner` with the same number of steps at the same
  iterations, one ratio for every layer, the smallest (in steps of 0.05) whose pruned model measures within the
  budget or, if more, iterative MDP's measured latency (the same measured latency); the optimizer restarts
  after each of its steps (its pruner replaces the parameters).

Latency: the MDP methods use measured, calibrated latency tables (batch of 32 images, one CPU thread); every final
model is timed in alternation with the dense model (`measure_against`), and the table reports its median time
and its ratio to the dense model's.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits as base  # noqa: E402  (examples/digits.py: data, network, training, timing)

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import IterativePruner, MeasuredLatency, build_spec  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """Everything that sizes a run."""

    widths: tuple[int, ...] = (16, 32, 64)
    depth: int = 2
    image_size: int = 16
    latency_batch: int = 32
    step: int = 4                  # channel granularity
    budget: float = 30.0           # final latency, percent of the dense model's
    steps: int = 4                 # pruning steps of the iterative methods
    epochs: int = 8                # dense training
    lr: float = 0.1
    finetune_epochs: int = 6       # every method, after the dense training
    finetune_lr: float = 0.05
    batch_size: int = 64
    importance_batches: int = 8    # one-shot MDP's Taylor importance
    timing_runs: int = 30
    seed: int = 0


RATIOS = tuple(round(0.05 * i, 2) for i in range(1, 20))      # Torch-Pruning's ratios tried, smallest first
QUICK = Setup(widths=(8, 16, 32), budget=45.0, steps=2, epochs=3, finetune_epochs=2, importance_batches=4, timing_runs=10)


@dataclass
class Row:
    method: str
    accuracy: float | None               # None: no model within the budget
    predicted_percent: float | None      # of the dense model's latency, by the tables (None: not predicted)
    measured_ms: float | None
    measured_percent: float | None
    note: str = ""


def iterations_per_epoch(data: base.Digits, setup: Setup) -> int:
    return math.ceil(len(data.y_train) / setup.batch_size)


def schedule(data: base.Digits, setup: Setup) -> tuple[int, int]:
    """(start, every): `steps` pruning steps spread over the first half of the fine-tuning."""
    half = setup.finetune_epochs * iterations_per_epoch(data, setup) // 2
    every = max(1, half // setup.steps)
    return every, every


def importance_batches(data: base.Digits, setup: Setup) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(setup.seed)
    order = torch.randperm(len(data.y_train), generator=generator)
    return [(data.x_train[order[i:i + setup.batch_size]], data.y_train[order[i:i + setup.batch_size]])
            for i in range(0, setup.importance_batches * setup.batch_size, setup.batch_size)]


def measured(dense: nn.Module, model: nn.Module, example: torch.Tensor, setup: Setup) -> tuple[float, float]:
    """(median ms of `model`, its percent of the dense model's), timed in alternation."""
    ref_ms, ms = base.measure_against(dense, model, example, setup.timing_runs)
    return ms, 100.0 * ms / ref_ms


def one_shot(dense: nn.Module, data: base.Digits, example: torch.Tensor, timer: MeasuredLatency,
             setup: Setup) -> tuple[nn.Module, float]:
    spec, handle = build_spec(dense, example, data=importance_batches(data, setup), loss_fn=F.cross_entropy,
                              latency=timer, step=setup.step)
    result = mdp_opt.solve(spec, f"{setup.budget}%")
    if not result.has_solution:
        raise SystemExit(f"one-shot MDP: no configuration within {setup.budget}% of the dense latency "
                         f"({result.status.value}); give a larger --budget")
    small = handle.apply(result)
    base.train(small, data, setup.finetune_epochs, setup.finetune_lr, setup.batch_size, setup.seed)
    return small, 100.0 * result.costs["latency"] / spec.full_cost("latency")


def iterative(dense: nn.Module, data: base.Digits, example: torch.Tensor, timer: MeasuredLatency,
              setup: Setup, log) -> tuple[nn.Module, float]:
    model = copy.deepcopy(dense)
    optimizer = base.make_optimizer(model, setup.finetune_lr)
    start, every = schedule(data, setup)
    pruner = IterativePruner(model, example, {"latency": f"{setup.budget}%"}, steps=setup.steps, every=every,
                             start=start, latency=timer, optimizer=optimizer, step=setup.step,
                             on_pruned=lambda p, s: log(f"  iterative MDP {s.summary()}"))
    base.train(model, data, setup.finetune_epochs, setup.finetune_lr, setup.batch_size, setup.seed,
               optimizer=optimizer, after_step=pruner.step)
    pruner.close()
    if not pruner.finished:
        raise RuntimeError(f"iterative MDP: {pruner.done} of {setup.steps} steps ran; lengthen the fine-tuning")
    return model, pruner.history[-1].predicted_percent["latency"]


def torch_pruning_baseline(dense: nn.Module, data: base.Digits, example: torch.Tensor, setup: Setup, target: float,
                           log) -> tuple[nn.Module | None, str] | None:
    """Torch-Pruning's MagnitudePruner at the smallest ratio (of `RATIOS`) whose pruned model measures within
    `target` percent of the dense latency, pruned in `steps` steps during the fine-tuning; None when torch_pruning
    is not installed."""
    try:
        import torch_pruning as tp
    except ImportError:
        return None

    def pruned_copy(ratio: float, steps: int = 1) -> tuple[nn.Module, object]:
        model = copy.deepcopy(dense)
        pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=ratio, iterative_steps=steps, ignored_layers=[model.fc],
                                           round_to=setup.step)
        return model, pruner

    best = None
    for ratio in RATIOS:      # measured latency is not monotone in the ratio here (small widths run slow kernels)
        model, pruner = pruned_copy(ratio)
        pruner.step()
        _, percent = measured(dense, model, example, setup)
        log(f"  Torch-Pruning: ratio {ratio:.2f} measures {percent:.1f}%")
        if percent <= target:
            best = ratio
            break
    if best is None:
        return None, f"no ratio up to {RATIOS[-1]} measures within {target:.1f}%"
    model, pruner = pruned_copy(best, setup.steps)
    optimizer = base.make_optimizer(model, setup.finetune_lr)
    start, every = schedule(data, setup)
    count = {"iteration": 0, "steps": 0}

    def after_step() -> None:
        count["iteration"] += 1
        if count["steps"] < setup.steps and count["iteration"] >= start + count["steps"] * every:
            pruner.step()
            count["steps"] += 1
            optimizer.param_groups[0]["params"] = list(model.parameters())   # new parameters: state restarts
            optimizer.state.clear()

    base.train(model, data, setup.finetune_epochs, setup.finetune_lr, setup.batch_size, setup.seed,
               optimizer=optimizer, after_step=after_step)
    log(f"  Torch-Pruning: ratio {best:.2f}, {count['steps']} steps")
    return model, f"MagnitudePruner, ratio {best:.2f} per layer, chosen to measure within {target:.1f}%"


def table(rows: Sequence[Row], setup: Setup, dense_ms: float) -> str:
    lines = [f"final budget {setup.budget:g}% of the dense latency ({dense_ms:.2f} ms for {setup.latency_batch} "
             f"images, one thread); every method {setup.finetune_epochs} epochs after the dense training",
             "", "| method | test accuracy | predicted latency | measured latency | measured / dense | note |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.accuracy is None:
            lines.append(f"| {r.method} | none within the budget | | | | {r.note} |")
            continue
        predicted = "" if r.predicted_percent is None else f"{r.predicted_percent:.1f}%"
        lines.append(f"| {r.method} | {100 * r.accuracy:.1f}% | {predicted} | {r.measured_ms:.2f} ms | "
                     f"{r.measured_percent:.1f}% | {r.note} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller net, fewer epochs (the test suite's run)")
    parser.add_argument("--budget", type=float, help="final latency budget in percent of the dense model's")
    parser.add_argument("--steps", type=int, help="pruning steps of the iterative methods")
    parser.add_argument("--seed", type=int, help="seed of the dense training, the batches and the fine-tuning")
    parser.add_argument("--cache-dir", type=Path, help="latency table cache (default ~/.cache/mdp-opt/latency)")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else Setup()
    if args.budget is not None:
        setup = replace(setup, budget=args.budget)
    if args.steps is not None:
        setup = replace(setup, steps=args.steps)
    if args.seed is not None:
        setup = replace(setup, seed=args.seed)

    def log(line: str) -> None:
        print(line, flush=True)

    begin = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(setup.seed)
    data = base.load_digits(setup.image_size)
    example = data.x_test[:setup.latency_batch]
    dense = base.train(base.DigitsResNet(setup.widths, setup.depth), data, setup.epochs, setup.lr, setup.batch_size,
                       setup.seed)
    timer = MeasuredLatency(threads=1, cache_dir=args.cache_dir, progress=False)
    dense_ms, _ = measured(dense, copy.deepcopy(dense), example, setup)
    rows = [Row("dense", base.accuracy(dense, data), 100.0, dense_ms, 100.0)]
    log(f"dense: {100 * rows[0].accuracy:.1f}% test accuracy")

    small, predicted = one_shot(dense, data, example, timer, setup)
    rows.append(Row("one-shot MDP", base.accuracy(small, data), predicted, *measured(dense, small, example, setup)))
    log(f"one-shot MDP: {100 * rows[-1].accuracy:.1f}%")
    model, predicted = iterative(dense, data, example, timer, setup, log)
    rows.append(Row(f"iterative MDP ({setup.steps} steps)", base.accuracy(model, data), predicted,
                    *measured(dense, model, example, setup)))
    log(f"iterative MDP: {100 * rows[-1].accuracy:.1f}%")
    # the same measured latency as iterative MDP's model (or the budget, if that measured within it)
    tp = torch_pruning_baseline(dense, data, example, setup, max(setup.budget, rows[-1].measured_percent), log)
    if tp is None:
        log("Torch-Pruning: skipped (torch_pruning is not installed: pip install torch-pruning)")
    else:
        model, note = tp
        name = f"Torch-Pruning ({setup.steps} steps)"
        rows.append(Row(name, None, None, None, None, note) if model is None else
                    Row(name, base.accuracy(model, data), None, *measured(dense, model, example, setup), note))
    print()
    print(table(rows, setup, dense_ms))
    print(f"\n{time.perf_counter() - begin:.0f} s")
    return rows


if __name__ == "__main__":
    main()
