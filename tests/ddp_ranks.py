"""Two gloo ranks on CPU for the torch.distributed tests: each runs `record(rank, out)` inside the process
group and what it returns comes back to the test, one dict per rank."""

from __future__ import annotations

import datetime
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _rank_main(rank: int, record: Callable[[int, Path], dict[str, Any]], init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    try:
        result = record(rank, Path(out))
        with open(Path(out) / f"rank{rank}.pkl", "wb") as f:
            pickle.dump(result, f)
        dist.barrier()      # both ranks tear the group down together, none while the other still works in it
    finally:
        dist.destroy_process_group()


def run_ranks(record: Callable[[int, Path], dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    """`record(rank, tmp)` on WORLD spawned processes of one gloo group (a module-level function, so that
    the spawned processes can import it); the dicts they returned, by rank.

    A rank aborting in gloo's C++ layer ("terminate called without an active exception", SIGABRT, no Python
    traceback; see tests/test_ddp_example.py) is run once more, with a warning, as the example's test does;
    any other failure, or the abort twice, fails."""
    try:
        mp.spawn(_rank_main, args=(record, str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    except mp.ProcessExitedException as e:
        if e.signal_name != "SIGABRT":
            raise
        warnings.warn(f"a rank aborted in gloo ({e}); running the ranks once more")
        tmp = tmp / "again"
        tmp.mkdir()
        mp.spawn(_rank_main, args=(record, str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    out = []
    for r in range(WORLD):
        with open(tmp / f"rank{r}.pkl", "rb") as f:
            out.append(pickle.load(f))
    return out
