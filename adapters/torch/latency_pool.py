"""Latency tables built on a pool of identical devices through Ray: one actor per device.

    latency = MeasuredLatency(pool="local:2")          # a local Ray instance with 2 CPUs: 2 one-thread workers
    latency = MeasuredLatency(pool="auto")             # the cluster `ray start` runs (one worker per device)
    latency = MeasuredLatency(pool=LatencyPool("ray://head:10001", workers=8))

Each worker is a `MeasuredLatency` with the caller's settings (threads, repeats, warmup, flush size,
runtime) on its own device: it asks Ray for `threads` CPUs, or one GPU when the tables are for CUDA.
Before anything is timed, every worker reports its device identity (`latency_cache.device_identity`); they
must all equal the caller's, or `MixedDevicesError` names the two devices. The shapes not yet in the cache
are shipped once to every worker and dealt out in small chunks as workers become free; each shape is
timed exactly once, and its result goes into the caller's on-disk cache (checkpointed as results arrive),
with the device identity of the pool. One progress bar covers the whole pool.
mdp-opt must be installed on every node of the cluster.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mdp_opt.pool import connect

from .handlers import Workload
from .latency import MeasuredLatency, _progress, threads_ctx
from .latency_cache import LatencyCache, MixedDevicesError, describe_identity

CHUNK = 4
START_TIMEOUT_S = 600.0


class TableWorker:
    """One device of the pool: times the shapes it is dealt, with the caller's `MeasuredLatency` settings."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.latency = MeasuredLatency(**settings, progress=False, calibrate=False)
        self.workloads: list[Workload] = []
        self.overheads: dict[tuple, float] = {}

    def identity(self, device: torch.device) -> dict[str, Any]:
        return self.latency.identity(device)

    def load(self, workloads: list[Workload]) -> int:
        self.workloads = workloads
        return len(workloads)

    def time(self, indices: list[int], device: torch.device, dtype: torch.dtype) -> list[tuple[int, float]]:
        with threads_ctx(self.latency.threads):
            return [(i, self.latency.time_shape(self.workloads[i], device, dtype, self.overheads)) for i in indices]


class LatencyPool:
    """Ray actors, one per device, that build latency tables together (see the module docstring).

    Args:
        address: "local:N" (start a local Ray instance with N CPUs), "auto" (the cluster started with
            `ray start` on this host), or a cluster address ("ray://host:10001", "host:6379").
        workers: how many workers (devices); None for every device of the cluster: its CPUs divided by
            `threads`, or its GPUs for CUDA tables.
        chunk: shapes sent to a worker at a time (small chunks keep the workers evenly busy).
        runtime_env: Ray's runtime environment for the workers (e.g. `{"env_vars": {...}}`).
        start_timeout_s: how long to wait for the workers to start and report their devices.
    """

    def __init__(self, address: str = "auto", workers: int | None = None, chunk: int = CHUNK,
                 runtime_env: dict[str, Any] | None = None, start_timeout_s: float = START_TIMEOUT_S) -> None:
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise ValueError(f"workers: expected None or an integer >= 1, got {workers!r}")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise ValueError(f"chunk: expected an integer >= 1, got {chunk!r}")
        self.address, self.workers, self.chunk = address, workers, chunk
        self.runtime_env, self.start_timeout_s = runtime_env, start_timeout_s
        self.timed: list[list[str]] = []      # the keys each worker timed in the last build
        self._actors: list[Any] = []
        self._signature: tuple | None = None

    def build(self, latency: MeasuredLatency, workloads: Sequence[Workload], device: torch.device,
              dtype: torch.dtype, cache: LatencyCache) -> None:
        """Time each of `workloads` (distinct keys) once on the pool and add the results to `cache`."""
        ray = connect(self.address)
        device = torch.device(device.type) if device.type == "cuda" else device   # each worker's own GPU
        actors = self._start(ray, latency, device)
        self._check_identities(ray, actors, device, cache)
        keys = [w.key for w in workloads]
        shipped = ray.put(list(workloads))
        ray.get([a.load.remote(shipped) for a in actors])
        chunks = [list(range(i, min(i + self.chunk, len(keys)))) for i in range(0, len(keys), self.chunk)]
        chunks.reverse()
        self.timed = [[] for _ in actors]
        bar = _progress(keys, latency.progress, f"timing {len(keys)} layer shapes on a pool of {len(actors)} "
                                                f"({describe_identity(cache.identity)})")
        counter = bar if hasattr(bar, "update") else None
        inflight: dict[Any, int] = {}

        def deal(worker: int) -> None:
            if chunks:
                inflight[actors[worker].time.remote(chunks.pop(), device, dtype)] = worker

        for worker in range(len(actors)):
            deal(worker)
        failure: BaseException | None = None
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            worker = inflight.pop(ref)
            try:
                results = ray.get(ref)
            except Exception as e:               # keep what the other workers finish, then raise the first failure
                failure = failure or _cause(e)
                chunks.clear()
                continue
            for i, ms in results:
                cache.add(keys[i], ms)
                self.timed[worker].append(keys[i])
            if counter is not None:
                counter.update(len(results))
            if failure is None:
                deal(worker)
        if counter is not None:
            counter.close()
        if failure is not None:
            raise failure

    @property
    def started(self) -> bool:
        """Whether the workers are running (they are kept between builds with the same settings)."""
        return bool(self._actors)

    def close(self) -> None:
        """End the workers (the Ray instance itself is left running)."""
        if self._actors:
            import ray
            for actor in self._actors:
                ray.kill(actor)
        self._actors, self._signature = [], None

    def _start(self, ray: Any, latency: MeasuredLatency, device: torch.device) -> list[Any]:
        settings = latency.settings()
        signature = (device.type, latency.threads, latency.repeats, latency.warmup, latency.flush_mb,
                     latency.runtime.key())
        if self._actors and self._signature == signature:
            return self._actors
        self.close()
        resources = ray.cluster_resources()
        if device.type == "cuda":
            count, options = int(resources.get("GPU", 0)), {"num_gpus": 1, "num_cpus": 1}
            unit = "GPUs"
        else:
            count, options = int(resources.get("CPU", 0)) // latency.threads, {"num_cpus": latency.threads}
            unit = f"groups of {latency.threads} CPUs"
        workers = self.workers if self.workers is not None else count
        if workers < 1 or workers > count:
            raise ValueError(f"pool {self.address!r}: {workers} workers asked, the cluster has {count} {unit} "
                             f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs); add devices "
                             "with `ray start --address=...` or ask for fewer workers")
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        remote = ray.remote(**options)(TableWorker)
        self._actors = [remote.remote(settings) for _ in range(workers)]
        self._signature = signature
        return self._actors

    def _check_identities(self, ray: Any, actors: list[Any], device: torch.device, cache: LatencyCache) -> None:
        refs = [a.identity.remote(device) for a in actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout_s)
        if len(ready) < len(refs):
            raise TimeoutError(f"pool {self.address!r}: {len(refs) - len(ready)} of {len(refs)} workers did not "
                               f"start within {self.start_timeout_s:g} s; other actors may hold the cluster's "
                               "devices (close other pools) or ask for fewer workers")
        identities = ray.get(refs)
        for worker, identity in enumerate(identities):
            if identity != cache.identity:
                raise MixedDevicesError(
                    f"pool {self.address!r}: worker {worker} times on {describe_identity(identity)}, but the tables "
                    f"in {cache.path} are for {describe_identity(cache.identity)} (this process's device); tables of "
                    "two device types are never mixed: build them on a pool of identical devices")


def _cause(error: Exception) -> BaseException:
    """The exception a Ray task raised, unwrapped from Ray's wrapper."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error
