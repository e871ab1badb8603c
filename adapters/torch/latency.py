"""Timing: measured latency tables with a disk cache, and `measure_latency` for whole models.

Both time the same way, on the same runtime (eager PyTorch by default, ONNX Runtime or OpenVINO, see
`runtimes`), so predictions and measurements agree: one thread by default,
the cache flushed before every repetition (a buffer of `flush_mb`, default 8x the L2
size, is written) and the inputs read back into cache (as they are when the previous
layer has just written them), thread CPU time on a single CPU thread (robust to other
processes), the median over repetitions.
A layer timed in a warm loop instead reads low at batch 1 because its weights stay in
cache. Measured on the development machine (2 MB L2 per core, ResNet-50 at 160 px,
one thread), the sum of per-layer times against the forward pass: flushing 4 MB read
13% low, 16 MB 7% low, 32 MB 20% high.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import statistics
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .allocator import heap_tag, steady_heap
from .calibration import METHODS
from .handlers import Workload
from .latency_cache import CHECKPOINT_S, LatencyCache, cpu_model_name, device_identity
from .runtimes import Compiled, EagerRuntime, ExportError, Runtime, get_runtime

CALIBRATION_REPEATS = 10
CALIBRATION_RUNS = 30
FIRST_RUNS = 3
MAX_SETTLE_RUNS = 16
CALIBRATION_SETTLE_MS = 15.0
DEFAULT_CACHE_DIR = Path(os.environ.get("MDP_OPT_CACHE", Path.home() / ".cache" / "mdp-opt")) / "latency"


class MeasuredLatency:
    """Latency in milliseconds measured on the device of the example input.

    Args:
        threads: CPU threads while timing (the model must later run with the same number).
        repeats: timed repetitions per shape (the median is kept); `warmup` untimed runs first.
            The solver picks exactly the entries that read low, so table noise becomes a bias:
            on the development machine 7 repetitions left pruned models 5-9% slower than
            predicted after calibration, 21 repetitions 1-4% (at 2-3x the table build time).
        cache_dir: where measured shapes are stored (one JSON file per device, dtype, batch
            size, thread count, torch version and runtime with its version, every entry with the
            identity of the device that measured it: `latency_cache`); None for
            `$MDP_OPT_CACHE/latency` or `~/.cache/mdp-opt/latency`.
        progress: show a tqdm progress bar with the time left.
        flush_mb: megabytes written before each repetition to push the weights out of cache
            (None: 8x the L2 cache); part of the cache key. On CPU every timing runs in a steady
            heap (`allocator.steady_heap`: glibc keeps freed memory for the rest of the process),
            so page faults from memory handed back between runs do not depend on what ran before.
        calibrate: after the tables are built, fit them to whole models built by the handle and
            measured like `measure_latency` (see `calibration`), so the spec predicts what slimmed
            models really measure: True or "affine" (tables scaled per group of terms plus a fixed
            cost, fitted to the full model, uniformly slimmed ones and ones with blocks removed:
            `latency_model`), "factor" (every entry times measured / predicted of the full model),
            "parts" (fixed and variable parts fitted apart), or False (the raw sums of the parts
            timed alone). The fit is recorded in `spec.meta["latency_calibration"]`.
        calibration_runs: runs of each reference model (all taken in turn, run by run) for "affine".
        calibration_streak: runs of a reference model kept per turn (after one dropped; 1: run by run).
        calibration_settle_ms: before its kept runs in each turn, a reference model runs back to back for
            about this long, untimed (`interleaved_samples`): a small model runs faster run after run
            than just after other models ran, and users time a model alone; 0: no settling runs.
        runtime: what runs the layers and the whole models: "eager" (PyTorch, the default),
            "onnxruntime" (ONNX Runtime, CPU execution provider; needs the `onnx` extra), "openvino"
            (OpenVINO's CPU plugin; the `openvino` extra), or a `runtimes.Runtime` (e.g.
            `OnnxRuntime(optimization="extended")`, `OpenVinoRuntime(precision="f32")`, or one you write).
            Deploy with the runtime the tables were measured on: a table of one runtime
            mispredicts another.
        pool: time the shapes not yet cached on a pool of identical devices through Ray, one actor per
            device (`latency_pool`): "local:N" (a local Ray instance with N CPUs), "auto" (the cluster
            `ray start` runs here), a cluster address, or a `LatencyPool`. None (the default) times them
            here, in this process. Needs `pip install 'mdp-opt[ray]'`.
        checkpoint_s: while tables are built, new entries are written to the cache at least this often
            (seconds), so an interrupted build loses little.
    """

    def __init__(self, threads: int = 1, repeats: int = 21, warmup: int = 2, cache_dir: str | Path | None = None,
                 progress: bool = True, flush_mb: int | None = None, calibrate: bool | str = True,
                 runtime: str | Runtime = "eager", calibration_runs: int = CALIBRATION_RUNS,
                 pool: Any = None, checkpoint_s: float = CHECKPOINT_S, calibration_streak: int = 1,
                 calibration_settle_ms: float = CALIBRATION_SETTLE_MS) -> None:
        flush_mb = default_flush_mb() if flush_mb is None else flush_mb
        for name, value, low in (("threads", threads, 1), ("repeats", repeats, 1), ("warmup", warmup, 0),
                                 ("flush_mb", flush_mb, 0), ("calibration_runs", calibration_runs, 1),
                                 ("calibration_streak", calibration_streak, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if not (isinstance(calibrate, bool) or calibrate in METHODS):
            raise ValueError(f"calibrate: expected True, False or one of {sorted(METHODS)}, got {calibrate!r}")
        self.threads, self.repeats, self.warmup, self.progress = threads, repeats, warmup, progress
        self.flush_mb = flush_mb
        self.calibrate: str | None = "affine" if calibrate is True else (calibrate or None)
        self.calibration_runs = calibration_runs
        self.calibration_streak = calibration_streak
        if isinstance(calibration_settle_ms, bool) or not isinstance(calibration_settle_ms, (int, float)) \
                or not calibration_settle_ms >= 0:
            raise ValueError(f"calibration_settle_ms: expected milliseconds >= 0, got {calibration_settle_ms!r}")
        self.calibration_settle_ms = float(calibration_settle_ms)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.runtime = get_runtime(runtime)
        self.pool = _check_pool(pool)
        if isinstance(checkpoint_s, bool) or not isinstance(checkpoint_s, (int, float)) or not checkpoint_s >= 0:
            raise ValueError(f"checkpoint_s: expected a number of seconds >= 0, got {checkpoint_s!r}")
        self.checkpoint_s = float(checkpoint_s)
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def cache_file(self, device: torch.device, dtype: torch.dtype, batch: int) -> Path:
        """One JSON file per device, dtype, batch size, thread count, flush size, torch version, runtime
        (with its version and settings) and, on CPU, heap state (`allocator.heap_tag`)."""
        parts = [_device_name(device), str(dtype).replace("torch.", ""), f"batch{batch}", f"threads{self.threads}",
                 f"flush{self.flush_mb}MB", f"torch{torch.__version__}", self.runtime.key()]
        if device.type == "cpu":
            parts.append(heap_tag())        # tables timed in another heap state are not comparable
        stem = "-".join(parts)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
        return self.cache_dir / f"{safe[:120]}-{hashlib.sha1(stem.encode()).hexdigest()[:8]}.json"

    def settings(self) -> dict[str, Any]:
        """The arguments that fix how a shape is timed (a pool's workers are built with them)."""
        return {"threads": self.threads, "repeats": self.repeats, "warmup": self.warmup, "flush_mb": self.flush_mb,
                "runtime": self.runtime}

    def identity(self, device: torch.device) -> dict[str, Any]:
        """The identity of the device type that times shapes for `device` here (`latency_cache.device_identity`)."""
        return device_identity(device, self.runtime.key())

    def open_cache(self, device: torch.device, dtype: torch.dtype, batch: int) -> LatencyCache:
        """The cache file of this setting, loaded and checked (bad entries warned about and left out)."""
        cache = LatencyCache(self.cache_file(device, dtype, batch), self.identity(device), self.checkpoint_s)
        cache.load()
        return cache

    def __call__(self, workloads: Sequence[Workload], device: torch.device, dtype: torch.dtype, batch: int
                 ) -> list[float]:
        """Milliseconds for each workload; equal keys are timed once, cached ones not at all."""
        self.runtime.check(device)
        cache = self.open_cache(device, dtype, batch)
        todo = cache.missing(w.key for w in workloads)
        first = {w.key: w for w in reversed(workloads)}
        try:
            if todo and self.pool is not None:
                self._get_pool().build(self, [first[k] for k in todo], device, dtype, cache)
            elif todo:
                overheads: dict[tuple, float] = {}
                bar = _progress(todo, self.progress, f"timing {len(todo)} layer shapes on {_device_name(device)} "
                                                     f"({self.runtime.name})")
                with threads_ctx(self.threads):
                    for key in bar:
                        cache.add(key, self.time_shape(first[key], device, dtype, overheads))
        finally:
            cache.flush()
        return [cache[w.key] for w in workloads]

    def time_shape(self, workload: Workload, device: torch.device, dtype: torch.dtype,
                   overheads: dict[tuple, float]) -> float:
        """`time_workload`, with a failure to run the layer at this width explained."""
        try:
            return self.time_workload(workload, device, dtype, overheads)
        except ExportError:
            raise
        except RuntimeError as e:
            raise RuntimeError(f"latency: cannot run {workload.key} at this width ({e}); a layer whose shape "
                               "is hard-coded in the forward pass cannot be pruned: pin it with ignore=") from e

    def _get_pool(self) -> Any:
        if isinstance(self.pool, str):
            from .latency_pool import LatencyPool
            self.pool = LatencyPool(self.pool)
        return self.pool

    def time_workload(self, workload: Workload, device: torch.device, dtype: torch.dtype,
                      overheads: dict[tuple, float] | None = None) -> float:
        """Milliseconds of one workload on this runtime, as it costs inside a whole model.

        Before each timed run the cache is flushed and a twin of the workload (the same computation
        with its own weights and inputs) runs once: the code path is warm, as it is when the layer
        runs after others in a model, while this copy's weights come from beyond the L2 cache.
        (Flushing alone also evicts the framework's code and data: on the development machine
        every layer then read 10-30 us slow at batch 1, twice the whole small model.) The same
        measurement of the runtime's cheapest call (`Runtime.call_overhead`: the timing loop, and a
        session call for ONNX Runtime) is subtracted: a model pays it once, not once per layer. So is what
        the runtime says the layer spends only because it runs alone (`Runtime.compile_layer`: OpenVINO's
        conversions of the layer's inputs and outputs). `overheads` caches the call's measurement per input
        shapes."""
        fn, inputs = workload.setup(device, dtype)
        twin_fn, twin_inputs = workload.setup(device, dtype)
        compiled = self.runtime.compile_layer(fn, inputs, device, self.threads)
        twin = self.runtime.compile_layer(twin_fn, twin_inputs, device, self.threads)
        ms = time_compiled(compiled, device, self.repeats, self.warmup, self.flush_mb, twin)
        return max(0.0, ms - self._call_overhead(inputs, device, {} if overheads is None else overheads))

    def _call_overhead(self, inputs: Sequence[torch.Tensor], device: torch.device,
                       seen: dict[tuple, float]) -> float:
        """Median time of the runtime's cheapest call on inputs of these shapes, timed like a workload
        (once per shape set)."""
        shapes = tuple(tuple(t.shape) for t in inputs)
        if shapes not in seen:
            empty = self.runtime.call_overhead(inputs, device, self.threads)
            twin = self.runtime.call_overhead(inputs, device, self.threads)
            seen[shapes] = time_compiled(empty, device, self.repeats, self.warmup, self.flush_mb, twin)
        return seen[shapes]

    def describe(self) -> str:
        """How whole models are timed, for the spec's meta."""
        return (f"measure_latency: runtime {self.runtime.key()}, threads={self.threads}, cache flushed "
                f"({self.flush_mb} MB) before each run, {steady_heap()}")

    def describe_turns(self) -> str:
        """How the calibration takes its reference models in turn (`measure_interleaved`), for the spec's meta."""
        return f"{self.calibration_streak} run(s) kept per turn" + (
            f" after {self.calibration_settle_ms:g} ms of untimed runs" if self.calibration_settle_ms else "")

    def compiled(self, model: nn.Module, example_input: torch.Tensor) -> Compiled:
        """`model` compiled by the runtime for `example_input`, kept while the model lives (compiled again
        when its parameter shapes or the input shape change)."""
        signature = (tuple(example_input.shape), tuple(tuple(p.shape) for p in model.parameters()))
        held = self._compiled.get(model)
        if held is None or held[0] != signature:
            compiled = _compile_model(self.runtime, model, example_input, self.threads)
            with threads_ctx(self.threads), eval_mode(model), torch.no_grad():
                for _ in range(FIRST_RUNS):        # memory pools and caches grow on the first runs
                    compiled.run()
            held = (signature, compiled)
            self._compiled[model] = held
        return held[1]

    def measure(self, model: nn.Module, example_input: torch.Tensor, repeats: int = CALIBRATION_REPEATS) -> float:
        """`model(example_input)` in milliseconds on this runtime, timed like the tables (used by calibration)."""
        with threads_ctx(self.threads), eval_mode(model):
            return time_compiled(self.compiled(model, example_input), example_input.device, repeats, 3,
                                 self.flush_mb)

    def measure_interleaved(self, models: Sequence[nn.Module], example_input: torch.Tensor, runs: int,
                            warmup: int = 2, streak: int = 1, settle_ms: float = 0.0) -> list[list[float]]:
        """Milliseconds of `runs` runs of each model, the models taken in turn run by run (A B C A B C ...),
        so a slow phase of the machine falls on all of them alike; one list of samples per model. With
        `streak` > 1 each turn runs a model `streak` + 1 times in a row and drops the first
        (A A A B B B ...); with `settle_ms` > 0 each turn of a model starts with about that many
        milliseconds of its runs, untimed (see `interleaved_samples`)."""
        compiled = [self.compiled(m, example_input) for m in models]
        with threads_ctx(self.threads), contextlib.ExitStack() as stack:
            for m in models:
                stack.enter_context(eval_mode(m))
            return interleaved_samples(compiled, example_input.device, runs, warmup, self.flush_mb, streak=streak,
                                       settle_ms=settle_ms)


def measure_latency(model: nn.Module, example_input: torch.Tensor, threads: int = 1, repeats: int = 20,
                    warmup: int = 3, flush_mb: int | None = None, runtime: str | Runtime = "eager") -> float:
    """Median latency of `model(example_input)` in milliseconds, timed like the latency tables
    (`flush_mb` and `runtime` as in `MeasuredLatency`; with runtime="onnxruntime" or "openvino" the model is
    exported to ONNX whole and timed in that runtime).

    The model runs in eval mode without gradients; its training flags are restored afterwards.
    """
    runtime = get_runtime(runtime)
    runtime.check(example_input.device)
    with threads_ctx(threads), eval_mode(model):
        compiled = _compile_model(runtime, model, example_input, threads)
        return time_compiled(compiled, example_input.device, repeats, warmup,
                             default_flush_mb() if flush_mb is None else flush_mb)


def _compile_model(runtime: Runtime, model: nn.Module, example_input: torch.Tensor, threads: int) -> Compiled:
    return runtime.compile(model, [example_input], example_input.device, threads)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside the block; its training flags restored afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def time_compiled(compiled: Compiled, device: torch.device, repeats: int, warmup: int, flush_mb: int,
                  twin: Compiled | None = None) -> float:
    """Median milliseconds of `compiled.run()`, cache flushed and inputs re-read before each repetition."""
    return statistics.median(time_samples(compiled, device, repeats, warmup, flush_mb, twin))


def time_samples(compiled: Compiled, device: torch.device, repeats: int, warmup: int, flush_mb: int,
                 twin: Compiled | None = None) -> list[float]:
    """Milliseconds of each of `repeats` runs of `compiled.run()` after `warmup` untimed ones.

    Before every run the cache is flushed (`flush_mb` megabytes written; not on CUDA), `twin` runs
    (when given) and the inputs are read. On one CPU thread the clock is the thread's CPU time
    (robust to other processes); otherwise wall time. CUDA runs synchronise before the clock stops
    (`Compiled.run` waits), and `touch` synchronises before it starts."""
    return interleaved_samples([compiled], device, repeats, warmup, flush_mb, twin)[0]


def interleaved_samples(compiled: Sequence[Compiled], device: torch.device, runs: int, warmup: int, flush_mb: int,
                        twin: Compiled | None = None, streak: int = 1, settle_ms: float = 0.0) -> list[list[float]]:
    """`time_samples` of several computations, one run of each in turn (on CPU in a steady heap:
    `allocator.steady_heap`). With `streak` > 1, each turn runs a computation `streak` + 1 times in a row
    and keeps the last `streak` runs: the first finds the processor as the previous computation left it.
    With `settle_ms` > 0, each turn first runs a computation back to back for about that long, untimed
    (`settle_runs`, from one run of each before the first turn), so that every kept run finds the
    processor as the computation's own runs leave it, as when it runs alone: a small model in ONNX
    Runtime measured 15-30% slower just after other models ran, recovering over about 10 ms of its own
    runs (benchmarks/rotation_effect.py; RESULTS.md, eighth session)."""
    if not isinstance(streak, int) or streak < 1:
        raise ValueError(f"streak: expected an integer >= 1, got {streak!r}")
    if not settle_ms >= 0:
        raise ValueError(f"settle_ms: expected milliseconds >= 0, got {settle_ms!r}")
    cuda = device.type == "cuda"
    if not cuda:
        steady_heap()
    clock = time.thread_time_ns if not cuda and torch.get_num_threads() == 1 else time.perf_counter_ns

    def timed_run(c: Compiled) -> float:
        if not cuda and flush_mb:
            _flush_buffer(flush_mb).fill_(1.0)
        if twin is not None:
            twin.run()
        c.touch()            # the inputs are in cache, as after the layer that wrote them
        start = clock()
        c.run()
        ms = (clock() - start) / 1e6
        return ms if c.excluded is None else ms - c.excluded()

    samples: list[list[float]] = [[] for _ in compiled]
    turns = warmup + -(-runs // streak)
    with torch.no_grad():
        first = [timed_run(c) for c in compiled] if settle_ms > 0 else [float("inf")] * len(compiled)
        dropped = [settle_runs(ms, settle_ms, streak) for ms in first]
        for i in range(turns):
            for c, out, drop in zip(compiled, samples, dropped):
                for k in range(drop + (1 if streak == 1 else streak)):
                    ms = timed_run(c)
                    if i >= warmup and k >= drop and len(out) < runs:
                        out.append(ms)
    return samples


def settle_runs(run_ms: float, settle_ms: float, streak: int = 1) -> int:
    """Runs dropped at the start of each turn of `interleaved_samples`: as many as fill `settle_ms` at
    `run_ms` each (at most `MAX_SETTLE_RUNS`), and at least one in a streak (`streak` > 1)."""
    fill = int(settle_ms / run_ms) if run_ms > 0 else MAX_SETTLE_RUNS
    return max(1 if streak > 1 else 0, min(MAX_SETTLE_RUNS, fill))


def time_call(fn: Callable[..., Any], inputs: list[torch.Tensor], device: torch.device, repeats: int,
              warmup: int, flush_mb: int) -> float:
    """Median milliseconds of `fn(*inputs)` in eager PyTorch, cache flushed and inputs re-read before each
    repetition."""
    return time_compiled(EagerRuntime().compile(fn, inputs, device, torch.get_num_threads()), device, repeats,
                         warmup, flush_mb)


@contextlib.contextmanager
def threads_ctx(n: int) -> Iterator[None]:
    """Run torch CPU ops on `n` threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_flush_mb() -> int:
    """8x the L2 cache of CPU 0, in megabytes."""
    return max(1, 8 * _l2_bytes() // 2 ** 20)


@functools.lru_cache(maxsize=2)
def _flush_buffer(megabytes: int) -> torch.Tensor:
    return torch.empty(megabytes * 2 ** 20 // 4, dtype=torch.float32)


def _l2_bytes() -> int:
    for index in range(8):
        base = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}")
        try:
            if (base / "level").read_text().strip() == "2":
                text = (base / "size").read_text().strip().upper()
                scale = {"K": 1024, "M": 1024 ** 2}.get(text[-1], 1)
                return int(text.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
    return 4 * 1024 ** 2


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda-{torch.cuda.get_device_name(device)}"
    return f"{device.type}-{cpu_model_name()}"


def _check_pool(pool: Any) -> Any:
    if pool is None:
        return None
    if isinstance(pool, str) and pool:
        import importlib.util
        try:
            found = importlib.util.find_spec("ray") is not None
        except (ImportError, ValueError):      # ValueError: a module entry without a spec
            found = False
        if not found:
            raise ImportError(f"pool={pool!r}: Ray is not installed; pip install 'mdp-opt[ray]' (or leave pool "
                              "out to time the shapes in this process)")
        return pool
    from .latency_pool import LatencyPool
    if isinstance(pool, LatencyPool):
        return pool
    raise ValueError(f"pool: expected None, 'local:N', 'auto', a Ray cluster address or a LatencyPool, "
                     f"got {pool!r:.60}")


def _progress(items: list[str], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit="shape")
