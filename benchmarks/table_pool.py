"""Latency-table build time: one process, a Ray pool of 1 worker and a pool of 2 workers, side by side.

    .venv/bin/python benchmarks/table_pool.py             # ResNet-50, 64 px, step 128
    .venv/bin/python benchmarks/table_pool.py --rounds 5 --step 64

The same distinct layer shapes of a hand-written ResNet-50 (tests/torch_models.py) are timed by each
setting into a fresh cache directory, `--rounds` times, the settings taken in turn round by round (so a
slow phase of the shared machine falls on all of them alike). Printed per setting: the median build time,
its spread over the rounds (min-max), the speed-up of the median against one process, and the sum of
the table's entries (the same shapes timed by each setting: equal within measurement noise). Worker start
(Ray instance, actors, their torch import) is timed once per pool and printed apart: the pool keeps its
workers between builds. The pools run on a local Ray instance of 2 CPUs here; on a cluster, pass
--address (e.g. "auto" after `ray start`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mdp_opt.adapters.torch import LatencyPool, MeasuredLatency, Workload, build_spec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torch_models import resnet50  # noqa: E402


def shapes(size: int, step: int) -> list[Workload]:
    """The distinct layer shapes of ResNet-50 at `size` px and channel step `step` (batch 1)."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    seen: list[Workload] = []

    def capture(w: Workload) -> float:
        seen.append(w)
        return float(w.macs)

    data = [(torch.randn(2, 3, size, size), torch.randint(0, 1000, (2,)))]
    build_spec(resnet50().eval(), x, data=data, loss_fn=F.cross_entropy, latency=capture, step=step,
               blocks=None)
    return list({w.key: w for w in seen}.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="input image size (default 64)")
    p.add_argument("--step", type=int, default=128, help="channel granularity (default 128)")
    p.add_argument("--repeats", type=int, default=21, help="timed repetitions per shape (default 21, the default)")
    p.add_argument("--rounds", type=int, default=3, help="builds of each setting (default 3)")
    p.add_argument("--address", default="local:2", help="Ray address of the pools (default local:2)")
    args = p.parse_args(argv)

    import warnings
    warnings.simplefilter("ignore")          # the one-batch importance warning: importance is not timed here
    workloads = shapes(args.size, args.step)
    cpu = torch.device("cpu")
    print(f"ResNet-50 at {args.size} px, step {args.step}: {len(workloads)} distinct layer shapes, batch 1, "
          f"1 thread, {args.repeats} repetitions per shape, {args.rounds} rounds")

    def timer(pool: LatencyPool | None) -> MeasuredLatency:
        return MeasuredLatency(cache_dir=tempfile.mkdtemp(prefix="mdp-table-pool-"), repeats=args.repeats,
                               progress=False, calibrate=False, pool=pool)

    pools = {"pool of 1": LatencyPool(args.address, workers=1), "pool of 2": LatencyPool(args.address, workers=2)}
    start: dict[str, float] = {}
    times: dict[str, list[float]] = {"1 process": [], **{name: [] for name in pools}}
    sums: dict[str, list[float]] = {name: [] for name in times}
    for round_ in range(args.rounds):
        for name in times:
            pool = pools.get(name)
            for other in pools.values():              # one pool's workers at a time hold the CPUs
                if other is not pool:
                    other.close()
            if pool is not None and not pool.started:  # start its workers apart from the timed build
                t = time.perf_counter()
                timer(pool)(workloads[:1], cpu, torch.float32, 1)
                start.setdefault(name, time.perf_counter() - t)
            t = time.perf_counter()
            table = timer(pool)(workloads, cpu, torch.float32, 1)
            times[name].append(time.perf_counter() - t)
            sums[name].append(sum(table))
            print(f"  round {round_ + 1}, {name}: {times[name][-1]:.1f} s", flush=True)
    for pool in pools.values():
        pool.close()

    base = statistics.median(times["1 process"])
    print(f"\n| setting | median build s | min-max s | speed-up | worker start s | sum of the table ms (median) |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {min(values):.1f}-{max(values):.1f} | {base / median:.2f}x | "
              f"{start.get(name, 0.0):.1f} | {statistics.median(sums[name]):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
