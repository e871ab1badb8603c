"""torch.distributed primitives for pruning inside a multi-process run (DistributedDataParallel).

Every rank must prune its replica identically. The rule used throughout the adapter:
- importance is summed over every rank's batches (`sum_across_ranks`), so each rank holds the
  importance of the union of the batches;
- whatever is measured or solved (latency tables, the solver's answer) is produced on rank 0 and
  sent to the others (`from_rank0`, `on_rank0`, `solve_on_rank0`), so no rank decides alone.
Work whose inputs differ per rank runs under `collectively`, so an error on one rank stops them all
instead of leaving the others waiting in a collective.
Outside a `torch.distributed` process group each function is the single-process computation.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mdp_opt import Result, Spec, solve

from .importance_check import Scoring

T = TypeVar("T")


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def sum_across_ranks(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each array summed element-wise over every rank (in float64). Every rank must hold the same keys
    and shapes; a difference is an error naming the key, since summing misaligned scores would be
    silently wrong."""
    out = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    if not is_distributed():
        return out
    layout = sorted((k, v.shape) for k, v in out.items())
    layouts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(layouts, layout)
    for r, other in enumerate(layouts):
        if other != layout:
            missing = sorted(set(map(str, other)) ^ set(map(str, layout)))
            raise RuntimeError(f"sum_across_ranks: rank {r} holds other score arrays than rank {rank()} "
                               f"(differences: {missing[:4]}); every rank must score the same model")
    if not out:
        return out
    flat = torch.from_numpy(np.concatenate([out[k].ravel() for k, _ in layout]))
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    buffer = flat.to(device) if device is not None else flat
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    flat = buffer.cpu().numpy()
    start = 0
    for k, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        out[k] = flat[start:start + size].reshape(shape)
        start += size
    return out


def from_rank0(obj: T) -> T:
    """`obj` as rank 0 holds it, on every rank (any picklable object; the others' values are ignored)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_rank0(fn: Callable[[], T]) -> T:
    """`fn()` run on rank 0 only, its value on every rank (`fn` must return a picklable object).

    When `fn` raises on rank 0, every rank raises: rank 0 its own error, the others a RuntimeError
    naming it, so no rank waits forever for an answer that will not come."""
    if not is_distributed():
        return fn()
    outcome: tuple[bool, Any] | None = None
    error: BaseException | None = None
    if rank() == 0:
        try:
            outcome = (True, fn())
        except Exception as e:      # sent as text: not every exception pickles
            error = e
            outcome = (False, f"{type(e).__name__}: {e}")
    ok, value = from_rank0(outcome)
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError(f"rank 0 failed, so rank {rank()} has no answer: {value}")
    return value


def collectively(fn: Callable[[], T]) -> T:
    """`fn()` on every rank; when it raises on any rank, every rank raises (the failing rank its own error,
    the others a RuntimeError naming the rank and its error), so that no rank waits forever in the
    collective that follows. Use it around work whose inputs differ per rank (each rank's batches)."""
    if not is_distributed():
        return fn()
    error: BaseException | None = None
    value: Any = None
    try:
        value = fn()
    except Exception as e:
        error = e
    errors: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, text) for r, text in enumerate(errors) if text is not None]
    if failed:
        r, text = failed[0]
        raise RuntimeError(f"rank {r} failed, so rank {rank()} stops too: {text}")
    return value


def sum_scoring(scoring: Scoring[Any]) -> Scoring[Any]:
    """Taylor scores accumulated in two halves (`importance_check.scores_by_halves`) summed over every
    rank: each half, the batch and the sample counts. The totals are then the scores of the union of
    every rank's batches; the halves are the union of each rank's even and of each rank's odd batches
    (another split of the same batches than one process would make, as good for the check). A rank
    with one batch has an empty odd half; it counts as zeros."""
    if not is_distributed():
        return scoring
    even, odd = scoring.halves
    keys = {repr(k): k for k in even}
    if len(keys) != len(even):
        raise ValueError("sum_scoring: score keys must have distinct repr()s to be matched across ranks")
    arrays: dict[str, np.ndarray] = {"count:batches": np.array([scoring.batches]),
                                     "count:samples": np.array([scoring.samples])}
    for name, k in keys.items():
        arrays[f"even:{name}"] = even[k]
        arrays[f"odd:{name}"] = odd[k] if k in odd else np.zeros_like(np.asarray(even[k], dtype=np.float64))
    summed = sum_across_ranks(arrays)
    halves = ({k: summed[f"even:{n}"] for n, k in keys.items()}, {k: summed[f"odd:{n}"] for n, k in keys.items()})
    totals = {k: halves[0][k] + halves[1][k] for k in keys.values()}
    return Scoring(totals, halves, int(round(summed["count:batches"][0])), int(round(summed["count:samples"][0])))


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside a `DistributedDataParallel` wrapper (itself otherwise).

    `build_spec` scores and traces the wrapped module: DDP's forward expects its own backward, and the
    Taylor scores are summed across ranks here, not by DDP's gradient hooks. The handle's model is then
    the inner module (the same parameters the wrapper trains), and `handle.apply` returns a plain module:
    wrap it in `DistributedDataParallel` again and make a new optimizer over its parameters."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def solve_on_rank0(spec: Spec, budget: Any, **options: Any) -> Result:
    """`mdp_opt.solve(spec, budget, **options)` on rank 0 only, its `Result` on every rank.

    Every rank then slims its replica identically with `handle.apply(result)`; re-wrap and restart the
    optimizer (its state belongs to the old parameters, whose shapes changed)::

        result = solve_on_rank0(spec, "50%")
        small = handle.apply(result).to(device)
        model = DistributedDataParallel(small, device_ids=...)
        optimizer = torch.optim.SGD(model.parameters(), lr=...)

    The solver runs once, so a time limit or a heuristic cannot make the ranks disagree. An error on
    rank 0 (such as an infeasible budget) is raised on every rank."""
    return on_rank0(lambda: solve(spec, budget, **options))


def cost_from_rank0(local: Spec, build: Callable[[], Spec], resource: str = "latency") -> Spec:
    """The spec with `resource`'s terms made by `build()` on rank 0 only (the other ranks measure nothing).

    `local` is this rank's spec without that resource; `build()` (run on rank 0) returns the finished spec
    with it (measured and calibrated there). Every rank gets rank 0's terms of `resource`, the meta
    entries `build` added (such as the calibration record) and rank 0's order of resources; the rest
    (dims, objective, other resources) stays this rank's own. Rank 0 returns what `build()` returned."""
    if not is_distributed():
        return build()
    built: list[Spec] = []

    def part() -> tuple[Any, ...]:
        full = build()
        built.append(full)
        return (full.dims, full.blocks, list(full.costs), full.costs.get(resource, ()), list(full.meta),
                {k: v for k, v in full.meta.items() if k not in local.meta})

    dims, blocks, order, terms, meta_order, added = on_rank0(part)
    if built:
        return built[0]
    if dims != local.dims or blocks != local.blocks:
        raise ValueError(f"model: rank 0 built a spec with other dims or blocks than rank {rank()}; every rank "
                         "must build the spec of the same model with the same arguments")
    costs = {r: terms if r == resource else local.costs[r] for r in order}
    meta = {k: local.meta[k] if k in local.meta else added[k] for k in meta_order}
    return local.replace(costs=costs, meta=meta)
