"""Independent jobs of a sweep (bench rows, frontier budgets), here one after the other or on a Ray pool.

    results = run_jobs(function, [(args...), ...], ray=None)          # here, in order
    results = run_jobs(function, jobs, ray="auto")                     # the running Ray cluster (`ray start`)
    results = run_jobs(function, jobs, ray="local:2")                  # a local Ray instance with 2 CPUs

`function` must be importable by name (a module-level function of an installed package), and
mdp-opt must be installed on every node of the cluster. Each job asks Ray for one CPU. Results come
back in the order of the jobs, so a sweep on the pool returns what the same sweep returns here.
Ray (`pip install 'mdp-opt[ray]'`) is imported only when `ray` is given.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from .spec import SpecError

_LOCAL = re.compile(r"^local(?::(\d+))?$")
_connected: str | None = None      # the address this module started or joined Ray with, while it runs


def run_jobs(function: Callable[..., Any], jobs: Sequence[tuple], ray: str | None = None,
             on_done: Callable[[int, Any], None] | None = None) -> list[Any]:
    """`[function(*job) for job in jobs]`, on the Ray cluster at `ray` when given (see the module docstring).
    `on_done(index, result)` is called as each job finishes (in finishing order on a pool)."""
    if ray is None:
        results = []
        for i, job in enumerate(jobs):
            results.append(function(*job))
            if on_done is not None:
                on_done(i, results[-1])
        return results
    ray_module = connect(ray)
    remote = ray_module.remote(num_cpus=1)(function)
    refs = [remote.remote(*job) for job in jobs]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray_module.wait(pending, num_returns=1)
        i = index[done[0]]
        results[i] = ray_module.get(done[0])
        if on_done is not None:
            on_done(i, results[i])
    return results


def connect(address: str) -> Any:
    """The `ray` module, initialised on `address`: "auto" (the cluster `ray start` runs here), "local" or
    "local:N" (start a local instance with N CPUs), or a cluster address ("ray://host:10001", "host:6379").

    Ray runs one session per process: a session started by the caller's own `ray.init` is used as it is; one
    started here on another address is an error (`ray.shutdown()` first), not silently reused."""
    global _connected
    if not isinstance(address, str) or not address:
        raise SpecError(f"ray: expected a cluster address, 'auto' or 'local[:N]', got {address!r:.40}")
    try:
        import ray
    except ImportError:
        raise SpecError("ray: Ray is not installed; pip install 'mdp-opt[ray]'") from None
    if ray.is_initialized():
        if _connected is None or _connected == address:
            return ray
        raise SpecError(f"ray: this process is connected to {_connected!r}, not {address!r}; Ray holds one session "
                        "per process: call ray.shutdown() before connecting elsewhere")
    local = _LOCAL.match(address)
    try:
        if local:
            ray.init(num_cpus=int(local.group(1)) if local.group(1) else None, include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise SpecError(f"ray: cannot connect to {address!r} ({e}); start the cluster with `ray start --head` "
                        "or use 'local:N'") from None
    _connected = address
    return ray
