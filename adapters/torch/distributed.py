"""torch.distributed primitives for pruning inside a multi-process run (DistributedDataParallel).

Every rank must prune its replica identically. The rule used throughout the adapter:
- importance is summed over every rank's batches (`sum_across_ranks`), so each rank holds the
  importance of the union of the batches;
- whatever is measured or solved (latency tables, the solver's answer) is produced on rank 0 and
  sent to the others (`from_rank0`), so no rank decides alone.
Outside a `torch.distributed` process group each function is the identity.
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

import numpy as np
import torch
import torch.distributed as dist

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
