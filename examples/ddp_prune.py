"""Prune inside a DistributedDataParallel run: every rank trains on its shard of the data, scores its own
batches, and all ranks end with the same slimmed model, then keep training it under DDP.

    torchrun --standalone --nproc_per_node=2 examples/ddp_prune.py      # any launcher that sets RANK etc.
    python examples/ddp_prune.py                                         # spawns 2 processes itself

On CPU with the gloo backend (`--backend nccl` on GPUs, one per rank). The steps:
1. train a small ResNet on scikit-learn's digits under DDP, each rank on its own shard
   (`DistributedSampler`);
2. `build_spec` on every rank with that rank's batches: the Taylor scores of all ranks are summed (the
   spec holds the importance of every rank's batches), the latency tables are measured on rank 0
   only (cached on disk) and sent to the others;
3. `solve_on_rank0`: rank 0 solves, every rank gets its `Result` and applies it with `handle.apply`;
4. wrap the slimmed model in DDP again, make a new optimizer, fine-tune.
Rank 0 prints the result and, with `--out`, writes it as JSON (with a checksum of every rank's
parameters after pruning and after fine-tuning, which must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits import DigitsResNet, load_digits  # noqa: E402  (the model and data of examples/digits.py)

from mdp_opt.adapters.torch import MeasuredLatency, build_spec, measure_latency, solve_on_rank0  # noqa: E402
from mdp_opt.adapters.torch.distributed import rank as current_rank  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60%", help="latency budget (default 60%%)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs before pruning (default 8)")
    parser.add_argument("--finetune", type=int, default=2, help="fine-tuning epochs after pruning (default 2)")
    parser.add_argument("--batches", type=int, default=8, help="batches per rank scored for importance")
    parser.add_argument("--step", type=int, default=4, help="channel granularity (default 4)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per layer shape")
    parser.add_argument("--cache-dir", default=None, help="latency cache (default ~/.cache/mdp-opt/latency)")
    parser.add_argument("--backend", default="gloo", help="torch.distributed backend (gloo on CPU)")
    parser.add_argument("--nproc", type=int, default=2, help="processes to spawn without a launcher")
    parser.add_argument("--out", default=None, help="write rank 0's summary here as JSON")
    return parser.parse_args(argv)


def loader(x: torch.Tensor, y: torch.Tensor, world: int, rank: int, seed: int) -> DataLoader:
    """This rank's shard, 32 images per batch, reshuffled per epoch with `set_epoch`."""
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    return DataLoader(TensorDataset(x, y), batch_size=32, sampler=sampler, drop_last=True)


def fit(model: nn.Module, data: DataLoader, epochs: int, lr: float) -> None:
    """SGD under DDP (gradients averaged over the ranks by the wrapper)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for epoch in range(epochs):
        data.sampler.set_epoch(epoch)
        for x, y in data:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def checksums(model: nn.Module) -> list[float]:
    """Every rank's sum of |parameters| (float64), gathered on every rank."""
    mine = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """One rank's work inside an initialised process group; rank 0's summary (None on the others)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)                       # the same initial weights (DDP also sends rank 0's)
    torch.set_num_threads(1)
    data = load_digits(16)
    train = loader(data.x_train, data.y_train, world, rank, seed=0)
    model = DistributedDataParallel(DigitsResNet((16, 32), depth=2))
    fit(model, train, args.epochs, lr=0.1)
    dense_accuracy = accuracy(model.module, data.x_test, data.y_test)

    scored = [batch for batch, _ in zip(train, range(args.batches))]      # this rank's own batches
    example = data.x_test[:32]
    timer = MeasuredLatency(repeats=args.repeats, cache_dir=args.cache_dir, progress=rank == 0)
    spec, handle = build_spec(model, example, data=scored, loss_fn=F.cross_entropy, latency=timer,
                              step=args.step)
    result = solve_on_rank0(spec, args.budget)
    small = handle.apply(result)
    pruned_sums = checksums(small)

    model = DistributedDataParallel(small)     # wrap again; a new optimizer is made inside `fit`
    fit(model, train, args.finetune, lr=0.02)
    tuned_sums = checksums(small)
    if rank != 0:
        return None
    summary = {
        "world_size": world, "budget": args.budget, "batches_scored": spec.meta["importance_check"]["batches"],
        "dense_accuracy": dense_accuracy, "pruned_accuracy": accuracy(small, data.x_test, data.y_test),
        "predicted_ms": {"dense": spec.full_cost("latency"), "pruned": result.costs["latency"],
                         "budget": result.budgets["latency"]},
        "measured_ms": {"dense": measure_latency(handle.model, example),
                        "pruned": measure_latency(small, example)},
        "removed_blocks": [b for b, on in result.active.items() if not on],
        "kept": result.kept, "checksums_after_pruning": pruned_sums, "checksums_after_finetuning": tuned_sums}
    print(json.dumps(summary, indent=2))
    return summary


def worker(local_rank: int, world: int, init_file: str, args: argparse.Namespace) -> None:
    """A process started by `main` without a launcher."""
    dist.init_process_group(args.backend, init_method=f"file://{init_file}", rank=local_rank, world_size=world)
    _run_and_write(args)


def _run_and_write(args: argparse.Namespace) -> None:
    try:
        summary = run(args)
        if summary is not None and args.out:
            Path(args.out).write_text(json.dumps(summary, indent=2))
        dist.barrier()      # rank 0 measures latency last: the others wait, then all tear the group down together
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if "RANK" in os.environ:                   # started by torchrun (or another launcher): env:// rendezvous
        dist.init_process_group(args.backend)
        if current_rank() == 0:
            print(f"{dist.get_world_size()} ranks, backend {args.backend}", file=sys.stderr)
        _run_and_write(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(args.nproc, str(Path(tmp) / "init"), args), nprocs=args.nproc, join=True)


if __name__ == "__main__":
    main()
