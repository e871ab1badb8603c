"""End to end on real data: prune a small ResNet on scikit-learn's digits with mdp-opt and
three baselines at the same latency budgets, fine-tune, and measure real latency and accuracy.

    python examples/digits.py            # full run (3 seeds, 5 budgets), writes docs/digits_results.md
                                         # and docs/digits_accuracy_latency.png
    python examples/digits.py --quick    # reduced run (1 seed, 2 budgets, smaller net), same outputs

Data: the 1,797 8x8 digits bundled with scikit-learn, upsampled to 16x16, a fixed stratified
75/25 train/test split. Latency: one batch of 32 images on one CPU thread (at batch 1 a
net this small spends most of its time in per-operator overhead, which no width pruning
removes). Methods, each at budgets given as a fraction of the dense model's
latency:

- mdp-opt: `build_spec` with measured bilayer latency tables and removable residual blocks,
  solved exactly, applied, fine-tuned;
- HALP-style: the same measured tables reduced to HALP's model (each layer's latency as a
  function of its own output width at the full input width), no block removal;
- width-only: mdp-opt with `blocks=None`;
- uniform: every prunable layer kept at the same fraction of its width, the largest
  fraction whose predicted latency fits the budget (bisection).

Every method meets its budget on *measured* latency the same way, with `mdp_opt.fit_measured`:
its answer at the budget is applied and timed; if it measures over (or well under) the budget, the
method is asked again at a budget scaled by measured / predicted, then bisected, and the most
valuable answer that measured within the budget is kept. The first answer of that search is what
the method's latency model alone gives; its prediction error is reported.

Every pruned model gets the same fine-tuning schedule and seed; per seed a dense model is
trained from scratch, so the spread covers training, importance and fine-tuning noise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import mdp_opt
from mdp_opt import Answer, Result, Spec, Status, Term, verify
from mdp_opt.adapters.torch import MeasuredLatency, PruningHandle, build_spec
from mdp_opt.files import atomic_write, atomic_write_text

METHODS = ("mdp-opt", "HALP-style", "width-only", "uniform")
DOCS = Path(__file__).resolve().parent.parent / "docs"


# ---- configuration ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    """Everything that sizes a run."""

    widths: tuple[int, ...] = (32, 64, 128)    # channels of the three stages
    depth: int = 2                             # basic blocks per stage
    image_size: int = 16                       # the 8x8 digits are upsampled to this
    latency_batch: int = 32                    # images per timed forward pass
    step: int = 8                              # channel granularity of the spec
    budgets: tuple[float, ...] = (70, 50, 35, 25, 15)   # percent of the dense latency
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 15                           # dense training
    lr: float = 0.1
    finetune_epochs: int = 3                   # every pruned model, every method
    finetune_lr: float = 0.05
    batch_size: int = 64
    importance_batches: int = 8                # Taylor importance from this many training batches
    timing_runs: int = 30                      # forward passes per model per latency measurement (median)
    noise_repeats: int = 5                     # dense model timed against a copy of itself this many times
    time_limit: float = 120.0                  # seconds per exact solve
    measure_rounds: int = 6                    # most solves to meet a budget on measured latency


QUICK = Config(widths=(16, 32, 64), budgets=(70, 40), seeds=(0,), epochs=6, finetune_epochs=2,
               importance_batches=2, timing_runs=20, noise_repeats=3)


# ---- data ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(image_size: int) -> Digits:
    """scikit-learn's digits as (N, 1, size, size) float tensors, standardised, fixed 75/25 split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.25, random_state=0,
                                           stratify=bunch.target)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return Digits(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx])


# ---- the network -----------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """relu(shortcut(x) + bn(conv(relu(bn(conv(x)))))); identity shortcut unless the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DigitsResNet(nn.Module):
    """3x3 stem, one stage of `depth` basic blocks per width (stride 2 from the second), pool, fc.

    Blocks with an identity shortcut are removable (every block but the first of stages 2 and 3).
    """

    def __init__(self, widths: Sequence[int], depth: int, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        blocks, c_in = [], widths[0]
        for stage, width in enumerate(widths):
            for i in range(depth):
                blocks.append(BasicBlock(c_in, width, 2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


# ---- training --------------------------------------------------------------------------------------

def make_optimizer(model: nn.Module, lr: float) -> torch.optim.SGD:
    """The optimizer every training run uses: SGD with Nesterov momentum and weight decay."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)


def train(model: nn.Module, data: Digits, epochs: int, lr: float, batch_size: int, seed: int,
          optimizer: torch.optim.Optimizer | None = None, after_step: Callable[[], None] | None = None) -> nn.Module:
    """SGD with Nesterov momentum, cosine learning rate, weight decay, random circular shifts of +-1 px at 8x8 scale.

    `optimizer` (default `make_optimizer(model, lr)`) may be given, to be shared with a pruner; `after_step()` is
    called after every optimizer step (an iterative pruner's `step`)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, lr) if optimizer is None else optimizer
    steps = epochs * math.ceil(len(data.y_train) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    shift = data.x_train.shape[-1] // 8
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.y_train), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            dx, dy = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist()
            inputs = torch.roll(data.x_train[batch], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(inputs), data.y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Digits) -> float:
    model.eval()
    return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


# ---- latency ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def measure_against(reference: nn.Module, model: nn.Module, example: torch.Tensor, runs: int, warmup: int = 5
                    ) -> tuple[float, float]:
    """Median milliseconds of `reference(example)` and `model(example)`, timed in alternation.

    Eval mode, no grad, one thread, thread CPU time (time the scheduler gives to other processes
    is not counted). Alternating the two cancels the slow phases of a shared machine out of the
    ratio model / reference, which is what a budget in percent is checked against.
    """
    reference.eval()
    model.eval()
    samples: tuple[list[float], list[float]] = ([], [])
    with one_thread():
        for i in range(warmup + runs):
            for net, out in ((reference, samples[0]), (model, samples[1])):
                start = time.thread_time_ns()
                net(example)
                if i >= warmup:
                    out.append((time.thread_time_ns() - start) / 1e6)
    return statistics.median(samples[0]), statistics.median(samples[1])


# ---- the four methods ------------------------------------------------------------------------------

def halp_spec(spec: Spec) -> Spec:
    """HALP's latency model on the same measured tables: every bilayer term `T[c_out, c_in]` becomes the
    arity-1 term `T[:, full c_in]` over its output dim (the torch adapter names conv and linear
    terms (out, in)); block gates are dropped, so nothing can be removed."""
    latency = []
    for t in spec.costs["latency"]:
        if len(t.dims) > 2:
            raise ValueError(f"latency term over {t.dims}: HALP's model has no counterpart for arity {len(t.dims)}")
        table = t.table[:, -1] if len(t.dims) == 2 else t.table
        latency.append(Term(t.dims[:1], table))
    objective = [Term(t.dims, t.table) for t in spec.objective]
    return spec.replace(objective=tuple(objective), costs={"latency": tuple(latency)}, blocks=(),
                        name=f"{spec.name}-halp")


def as_result_of(spec: Spec, choice: dict[str, int], method: str, wall_time: float) -> Result:
    """A configuration (choice indices, every block kept) as a verified Result of `spec`, for `handle.apply`."""
    answer = Answer(Status.FEASIBLE, choice=choice, active={b: True for b in spec.block_names})
    return verify(spec, {}, answer, method, wall_time)


def uniform_choice(spec: Spec, ratio: float) -> dict[str, int]:
    """Every dim at the largest choice <= ratio * its width (at least its smallest choice)."""
    return {d.name: max([i for i, c in enumerate(d.choices) if c <= ratio * d.choices[-1]], default=0)
            for d in spec.dims}


def uniform_result(spec: Spec, budget: float, iterations: int = 40) -> Result:
    """The largest uniform keep ratio whose predicted latency fits `budget` (bisection); status infeasible
    if none does."""
    def cost(ratio: float) -> float:
        return mdp_opt.evaluate(spec, uniform_choice(spec, ratio)).costs["latency"]

    start = time.perf_counter()
    if cost(0.0) > budget:
        return verify(spec, {}, Answer(Status.INFEASIBLE), "uniform", time.perf_counter() - start)
    low, high = 0.0, 1.0
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if cost(middle) <= budget else (low, middle)
    return as_result_of(spec, uniform_choice(spec, low), "uniform", time.perf_counter() - start)


@dataclass(frozen=True)
class Pruned:
    """A method's answer at one budget: the result to apply, with the handle that applies it."""

    result: Result             # on the handle's spec, ready for `handle.apply`
    handle: PruningHandle
    predicted_ms: float        # the latency the method's own model predicts
    dense_predicted_ms: float  # what the same model predicts for the dense network (its budgets are % of this)
    fit: mdp_opt.MeasuredFit   # the search for a budget met on measured latency


Measure = Callable[[PruningHandle, Result], float]   # a configuration's measured latency, as a fraction of the dense


def prune(method: str, percent: float, specs: dict[str, tuple[Spec, PruningHandle]], backend: str,
          time_limit: float, measure: Measure, rounds: int) -> Pruned | None:
    """The most valuable configuration `method` picks that measures within `percent` of the dense latency
    (`mdp_opt.fit_measured`); None when the method's model has no answer at any budget tried."""
    spec, handle = specs["blocks" if method == "mdp-opt" else "widths"]
    own = halp_spec(spec) if method == "HALP-style" else spec     # the latency model the method solves with

    def pick(budget: float) -> Result:
        if method == "uniform":
            return uniform_result(spec, budget)
        return mdp_opt.solve(own, {"latency": budget}, backend=backend, time_limit=time_limit)

    def on_handle(result: Result) -> Result:
        return result if own is spec else as_result_of(spec, result.choice, method, result.wall_time)

    full = own.full_cost("latency")
    fit = mdp_opt.fit_measured(pick, lambda r: full * measure(handle, on_handle(r)), percent / 100 * full,
                               "latency", max_rounds=rounds, ceiling=full)
    if not fit.result.has_solution:
        return None
    return Pruned(on_handle(fit.result), handle, fit.result.costs["latency"], full, fit)


# ---- one run ---------------------------------------------------------------------------------------

@dataclass
class Record:
    """One pruned (or dense) model."""

    method: str
    seed: int
    budget_pct: float              # percent of the dense latency (100 for the dense model)
    feasible: bool
    predicted_ms: float | None = None
    predicted_pct: float | None = None     # of the dense model's latency predicted by the same method's model
    measured_ms: float | None = None
    measured_pct: float | None = None      # of the dense model's measured latency
    accuracy: float | None = None
    blocks_removed: int | None = None
    kept_fraction: float | None = None     # kept channels / all channels, over the prunable dims
    solve_status: str | None = None
    solves: int | None = None              # solves (each new answer timed) to meet the budget on measured latency
    open_loop_predicted_pct: float | None = None   # the method's first answer, at the budget itself:
    open_loop_measured_pct: float | None = None    # what its latency model alone gives


def open_loop(pruned: Pruned) -> tuple[float | None, float | None]:
    """Predicted and measured percent of the method's first answer (at the budget itself), if it had one."""
    first = pruned.fit.rounds[0]
    if first.measured is None:
        return None, None
    return 100 * first.predicted / pruned.dense_predicted_ms, 100 * first.measured / pruned.dense_predicted_ms


def kept_fraction(spec: Spec, result: Result) -> float:
    prunable = [d for d in spec.dims if d.size > 1]
    return sum(result.kept[d.name] for d in prunable) / sum(d.choices[-1] for d in prunable)


@dataclass
class SeedRun:
    """What one seed produced: the records, and latency figures that are not tied to one method."""

    records: list[Record]
    twin_ratios: list[float]          # the dense model timed against a copy of itself: the noise of a ratio
    narrowest_predicted_pct: float    # every width at its smallest choice, all blocks kept, not fine-tuned
    narrowest_measured_pct: float
    build_spec_s: float               # both build_spec calls (importance; latency tables unless cached)


def run_seed(config: Config, data: Digits, seed: int, backend: str, timer: MeasuredLatency,
             log: Callable[[str], None]) -> SeedRun:
    """Train a dense model, then prune it with every method at every budget."""
    torch.manual_seed(seed)
    dense = train(DigitsResNet(config.widths, config.depth), data, config.epochs, config.lr, config.batch_size, seed)
    example = data.x_train[:config.latency_batch].clone()
    twin = copy.deepcopy(dense)
    pairs = [measure_against(dense, twin, example, config.timing_runs) for _ in range(config.noise_repeats)]
    dense_measured = statistics.median([ms for pair in pairs for ms in pair])
    batches = [(data.x_train[i:i + config.batch_size], data.y_train[i:i + config.batch_size])
               for i in range(0, config.importance_batches * config.batch_size, config.batch_size)]
    start = time.perf_counter()
    specs = {kind: build_spec(dense, example, data=batches, loss_fn=F.cross_entropy, latency=timer, step=config.step,
                              blocks=blocks)
             for kind, blocks in (("blocks", "auto"), ("widths", None))}
    build_spec_s = time.perf_counter() - start
    widths_spec, widths_handle = specs["widths"]
    dense_predicted = widths_spec.full_cost("latency")
    narrowest = as_result_of(widths_spec, {d.name: 0 for d in widths_spec.dims}, "narrowest", 0.0)
    reference_ms, narrowest_ms = measure_against(dense, widths_handle.apply(narrowest), example, config.timing_runs)
    run = SeedRun([Record("dense", seed, 100.0, True, dense_predicted, 100.0, dense_measured, 100.0,
                          accuracy(dense, data), 0, 1.0)],
                  [b / a for a, b in pairs], 100 * narrowest.costs["latency"] / dense_predicted,
                  100 * narrowest_ms / reference_ms, build_spec_s)
    log(f"seed {seed}: dense accuracy {run.records[0].accuracy:.4f}, latency measured {dense_measured:.3f} ms "
        f"(twin ratios {', '.join(f'{r:.3f}' for r in run.twin_ratios)}), predicted {dense_predicted:.3f} ms; "
        f"narrowest widths predicted {run.narrowest_predicted_pct:.1f}%, measured {run.narrowest_measured_pct:.1f}%; "
        f"build_spec {build_spec_s:.1f} s; spec {specs['blocks'][0]}")

    def measure(handle: PruningHandle, result: Result) -> float:
        reference_ms, ms = measure_against(dense, handle.apply(result), example, config.timing_runs)
        return ms / reference_ms

    for percent in config.budgets:
        for method in METHODS:
            pruned = prune(method, percent, specs, backend, config.time_limit, measure, config.measure_rounds)
            if pruned is None or not pruned.fit.within:
                closest = ("" if pruned is None or pruned.fit.measured is None
                           else f"; closest measured {100 * pruned.fit.measured / pruned.dense_predicted_ms:.1f}%")
                run.records.append(Record(method, seed, percent, False,
                                          solves=None if pruned is None else len(pruned.fit.rounds)))
                log(f"  {percent:>4}% {method:<11} no configuration measured within the budget{closest}")
                continue
            small = pruned.handle.apply(pruned.result)
            train(small, data, config.finetune_epochs, config.finetune_lr, config.batch_size, seed)
            reference_ms, measured = measure_against(dense, small, example, config.timing_runs)
            record = Record(method, seed, percent, True, pruned.predicted_ms,
                            100 * pruned.predicted_ms / pruned.dense_predicted_ms,
                            measured, 100 * measured / reference_ms, accuracy(small, data),
                            sum(not a for a in pruned.result.active.values()),
                            kept_fraction(pruned.handle.spec, pruned.result), pruned.result.status.value,
                            len(pruned.fit.rounds), *open_loop(pruned))
            run.records.append(record)
            log(f"  {percent:>4}% {method:<11} predicted {record.predicted_pct:5.1f}%  measured {record.measured_pct:5.1f}% "
                f"({measured:.3f} ms)  accuracy {record.accuracy:.4f}  blocks removed {record.blocks_removed}  "
                f"solves {record.solves}" + ("" if record.open_loop_measured_pct is None else
                                             f" (first: predicted {record.open_loop_predicted_pct:.1f}%, "
                                             f"measured {record.open_loop_measured_pct:.1f}%)"))
    return run


# ---- outputs ---------------------------------------------------------------------------------------

def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(records: list[Record]) -> list[dict]:
    """One row per (budget, method): means and standard deviations over seeds."""
    rows = []
    keys = list(dict.fromkeys((r.budget_pct, r.method) for r in records))
    for budget, method in keys:
        group = [r for r in records if (r.budget_pct, r.method) == (budget, method)]
        ok = [r for r in group if r.feasible]
        row = {"budget_pct": budget, "method": method, "seeds": len(group), "feasible": len(ok)}
        for field in ("predicted_ms", "predicted_pct", "measured_ms", "measured_pct", "accuracy", "blocks_removed",
                      "kept_fraction"):
            values = [getattr(r, field) for r in ok]
            row[field] = _mean_std(values) if values else None
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    def pm(cell: tuple[float, float] | None, fmt: str, scale: float = 1.0) -> str:
        if cell is None:
            return "-"
        mean, std = cell
        return f"{mean * scale:{fmt}} ± {std * scale:{fmt}}"

    lines = ["| budget | method | predicted ms (% dense) | measured ms (% dense) | accuracy % | blocks removed | kept channels |",
             "|---:|:---|---:|---:|---:|---:|---:|"]
    for row in rows:
        budget = "dense" if row["method"] == "dense" else f"{row['budget_pct']:g}%"
        if row["feasible"] == 0:
            lines.append(f"| {budget} | {row['method']} | none within budget | - | - | - | - |")
            continue
        note = "" if row["feasible"] == row["seeds"] else f" ({row['feasible']}/{row['seeds']} seeds feasible)"
        lines.append(f"| {budget} | {row['method']}{note} "
                     f"| {row['predicted_ms'][0]:.2f} ({row['predicted_pct'][0]:.0f}%) "
                     f"| {pm(row['measured_ms'], '.2f')} ({row['measured_pct'][0]:.0f}%) "
                     f"| {pm(row['accuracy'], '.1f', 100)} | {row['blocks_removed'][0]:.1f} "
                     f"| {100 * row['kept_fraction'][0]:.0f}% |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str, latency_batch: int) -> None:
    """Accuracy versus measured latency (percent of the dense model), one line per method, error bars of one
    standard deviation over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = dict(zip(("dense",) + METHODS, "*os^v"))
    colors = dict(zip(("dense",) + METHODS, ("black", "C0", "C1", "C2", "C3")))
    for method in ("dense",) + METHODS:
        points = sorted((r for r in rows if r["method"] == method and r["feasible"]), key=lambda r: r["measured_pct"][0])
        if points:
            ax.errorbar([r["measured_pct"][0] for r in points], [100 * r["accuracy"][0] for r in points],
                        xerr=[r["measured_pct"][1] for r in points], yerr=[100 * r["accuracy"][1] for r in points],
                        marker=markers[method], color=colors[method], capsize=3, label=method,
                        **({"markersize": 12, "linestyle": ""} if method == "dense" else {}))
    ax.set_xlabel(f"measured latency (% of the dense model; batch of {latency_batch}, 1 CPU thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda temporary: fig.savefig(temporary, dpi=120, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)


def prediction_error(records: list[Record], methods: Sequence[str]) -> dict[str, float] | None:
    """How far the measured latency of each method's first answer (its latency model alone, at the budget) lands
    from the predicted: a ratio, and a gap in points of the dense latency."""
    ok = [r for r in records if r.method in methods and r.open_loop_measured_pct is not None]
    if not ok:
        return None
    ratio = [r.open_loop_measured_pct / r.open_loop_predicted_pct for r in ok]
    gap = [r.open_loop_measured_pct - r.open_loop_predicted_pct for r in ok]
    return {"ratio_mean": statistics.fmean(ratio), "ratio_min": min(ratio), "ratio_max": max(ratio),
            "gap_mean": statistics.fmean(gap), "gap_min": min(gap), "gap_max": max(gap)}


def dominated_points(rows: list[dict]) -> list[str]:
    """mdp-opt points that a baseline beats: higher mean accuracy at no higher mean measured latency."""
    found = []
    mdp = [r for r in rows if r["method"] == "mdp-opt" and r["feasible"]]
    for m in mdp:
        for b in rows:
            if (b["method"] in METHODS[1:] and b["feasible"] and b["accuracy"][0] > m["accuracy"][0]
                    and b["measured_pct"][0] <= m["measured_pct"][0]):
                noise = ("" if b["accuracy"][0] - m["accuracy"][0] > max(b["accuracy"][1], m["accuracy"][1])
                         else ", within one standard deviation")
                found.append(f"{b['method']} at the {b['budget_pct']:g}% budget ({100 * b['accuracy'][0]:.1f}% at "
                             f"{b['measured_pct'][0]:.0f}% latency) beats mdp-opt at {m['budget_pct']:g}% "
                             f"({100 * m['accuracy'][0]:.1f}% at {m['measured_pct'][0]:.0f}%{noise})")
    return found


def report(config: Config, runs: list[SeedRun], elapsed: float, command: str, plot_path: Path, table_path: Path,
           backend: str) -> str:
    records = [r for run in runs for r in run.records]
    rows = summarise(records)
    bilayer = prediction_error(records, ("mdp-opt", "width-only", "uniform"))
    halp = prediction_error(records, ("HALP-style",))
    noise = max(abs(ratio - 1) for run in runs for ratio in run.twin_ratios)
    pruned = [r for r in records if r.method != "dense" and r.feasible]
    over = {m: max((r.measured_pct - r.budget_pct for r in pruned if r.method == m), default=float("nan"))
            for m in METHODS}
    solves = [r.solves for r in records if r.solves is not None]
    wins = dominated_points(rows)
    lines = [
        "# mdp-opt on real data: scikit-learn digits",
        "",
        f"Generated by `{command}` in {elapsed / 60:.1f} min on {os.cpu_count()} shared CPU cores "
        f"({platform.machine()}; training and timing on 1 thread), torch {torch.__version__}, "
        f"solver backend `{backend}`.",
        "",
        f"Network: ResNet with basic blocks, stage widths {list(config.widths)}, {config.depth} blocks per stage, "
        f"{config.image_size}x{config.image_size} inputs, channel step {config.step}; dense training "
        f"{config.epochs} epochs; every pruned model fine-tuned {config.finetune_epochs} epochs (lr "
        f"{config.finetune_lr}; the same schedule and seed for every method); seeds {list(config.seeds)}, a dense "
        "model trained per seed; ± is one standard deviation over seeds.",
        f"Latency: a batch of {config.latency_batch} images on 1 thread, the median of {config.timing_runs} forward "
        "passes in thread CPU time, each pruned model timed in alternation with its dense model (the % column is "
        "that ratio). A budget is a percentage of the dense latency, met on measured latency: every method's answer "
        "is applied and timed, and the method is asked again at a budget scaled by measured / predicted (then "
        f"bisected, at most {config.measure_rounds} solves; `mdp_opt.fit_measured`) until its most valuable answer "
        "that measures within the budget is found. The predicted column is that answer's latency in the method's "
        "own model; the measured column is a fresh timing after fine-tuning. \"none within budget\": no answer "
        "the method gave measured within the budget.",
        "",
        markdown_table(rows),
        "",
        f"![accuracy versus measured latency]({os.path.relpath(plot_path, table_path.parent)})",
        "",
        f"- Measurement noise: the dense model timed against a copy of itself ({config.noise_repeats} times per "
        f"seed) is off by up to {100 * noise:.1f}%.",
        "- Measured latency (fresh timing after fine-tuning) minus the budget, at worst, in points of the dense "
        "latency (negative: under budget): " + ", ".join(f"{m} {v:+.1f}" for m, v in over.items()) + ".",
        f"- Solves per budget (each new answer timed): {statistics.fmean(solves):.1f} on average, at most {max(solves)}.",
    ]
    for label, error in (("bilayer tables (mdp-opt, width-only, uniform)", bilayer),
                         ("HALP-style's model (every layer at its full input width)", halp)):
        if error:
            lines.append(f"- The latency model alone, {label}: the first answer of each search, solved at the budget "
                         f"itself, measures {error['ratio_mean']:.2f}x its prediction on average (range "
                         f"{error['ratio_min']:.2f} to {error['ratio_max']:.2f}); in points of the dense latency, "
                         f"measured minus predicted = {error['gap_mean']:+.1f} on average (range "
                         f"{error['gap_min']:+.1f} to {error['gap_max']:+.1f}).")
    lines.append(f"- The narrowest configuration without block removal (every width at its smallest choice): "
                 f"predicted {statistics.fmean(r.narrowest_predicted_pct for r in runs):.0f}%, measured "
                 f"{statistics.fmean(r.narrowest_measured_pct for r in runs):.0f}% of the dense latency.")
    lines.append(f"- build_spec (Taylor importance, measured latency tables), twice per seed: "
                 f"{runs[0].build_spec_s:.0f} s for the first seed"
                 + (f", {statistics.fmean(r.build_spec_s for r in runs[1:]):.0f} s for later seeds (tables cached)"
                    if len(runs) > 1 else "") + ".")
    lines.append("- Points where a baseline beats mdp-opt (higher mean accuracy at no higher mean measured latency): "
                 + ("; ".join(wins) if wins else "none") + ".")
    return "\n".join(lines) + "\n"


# ---- command line ----------------------------------------------------------------------------------

def pick_backend(requested: str | None) -> str:
    if requested:
        return requested
    exact = mdp_opt.backends_with(mdp_opt.Feature.EXACT, mdp_opt.Feature.PRESOLVE)
    if exact:
        return exact[0]
    raise SystemExit(f"no exact backend installed (have {mdp_opt.installed_backends()}); "
                     "pip install 'mdp-opt[cpsat]' or 'mdp-opt[milp]'")


def parse_budgets(text: str) -> tuple[float, ...]:
    try:
        budgets = tuple(float(b) for b in text.split(","))
    except ValueError:
        raise SystemExit(f"--budgets: expected comma-separated percentages such as 70,50,25, got {text!r}") from None
    if not all(0 < b <= 100 for b in budgets):
        raise SystemExit(f"--budgets: every percentage must be in (0, 100], got {text!r}")
    return budgets


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="reduced run: 1 seed, 2 budgets, a narrower net (minutes)")
    p.add_argument("--table", type=Path, default=DOCS / "digits_results.md", help="Markdown output")
    p.add_argument("--plot", type=Path, default=DOCS / "digits_accuracy_latency.png", help="PNG output")
    p.add_argument("--json", type=Path, default=None, help="also write every record as JSON here")
    p.add_argument("--backend", default=None, help="exact mdp-opt backend (default: cpsat, else milp)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 3, or 1 with --quick)")
    p.add_argument("--budgets", default=None, help="comma-separated latency budgets in percent (default: 70,50,35,25,15)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="latency table cache (default: the adapter's, ~/.cache/mdp-opt/latency)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Record]:
    args = parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.seeds is not None:
        config = replace(config, seeds=tuple(range(args.seeds)))
    if args.budgets is not None:
        config = replace(config, budgets=parse_budgets(args.budgets))
    backend = pick_backend(args.backend)
    command = " ".join(["python examples/digits.py", *(argv if argv is not None else sys.argv[1:])])
    start = time.perf_counter()
    torch.set_num_threads(1)   # training too: on a shared 2-core machine a second thread mostly waits
    data = load_digits(config.image_size)
    timer = MeasuredLatency(threads=1, cache_dir=args.cache_dir, progress=False)
    runs = [run_seed(config, data, seed, backend, timer, lambda line: print(line, flush=True))
            for seed in config.seeds]
    records = [r for run in runs for r in run.records]
    elapsed = time.perf_counter() - start
    args.table.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.table, report(config, runs, elapsed, command, args.plot, args.table, backend))
    plot(summarise(records), args.plot, f"digits, ResNet {list(config.widths)}: accuracy vs measured latency",
         config.latency_batch)
    if args.json:
        atomic_write_text(args.json, json.dumps({"config": asdict(config), "elapsed_s": elapsed,
                                                 "runs": [asdict(run) for run in runs]}, indent=1))
    print(f"wrote {args.table} and {args.plot} in {elapsed:.0f} s")
    return records


if __name__ == "__main__":
    main()
