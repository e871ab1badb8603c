"""Runtimes: what runs a computation when it is timed, so tables and whole models are measured alike.

A `Runtime` turns a callable and its example inputs into a `Compiled` computation: `run()`
executes it once, synchronously, on the bound inputs; `touch()` reads the inputs (so they are
in cache, as after the layer that wrote them). `latency.time_compiled` times any `Compiled`
the same way, so a new runtime (TensorRT) is one subclass:

    class MyRuntime(Runtime):
        name = "myruntime"
        def version(self) -> str: ...
        def compile(self, fn, inputs, device, threads) -> Compiled: ...
        def call_overhead(self, inputs, device, threads) -> Compiled: ...

Three are built in:
- `EagerRuntime` ("eager"): PyTorch eager mode, as the model runs in Python.
- `OnnxRuntime` ("onnxruntime"): the computation exported to ONNX (TorchScript exporter,
  constant folding on) and run in an ONNX Runtime session (CPU execution provider, all graph
  optimisations unless `optimization=` says otherwise).
- `OpenVinoRuntime` ("openvino"): the same ONNX export compiled by OpenVINO for its CPU plugin
  (its default inference precision for the processor unless `precision=` says otherwise: bf16 on
  processors with bf16 instructions, f32 elsewhere).

A runtime that loads an ONNX model on the CPU is an `ExportedRuntime` with one method, `load`.

`call_overhead` is the runtime's cheapest call on the same inputs (the timing loop alone for
eager PyTorch; one Identity node for ONNX Runtime and OpenVINO): a whole model pays it
once, so the latency tables subtract it from every layer.

On one CPU thread, timings use the calling thread's CPU time (`latency.interleaved_samples`), so a
runtime must run a one-thread computation on the calling thread (all three do).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn


class ExportError(RuntimeError):
    """A computation could not be compiled for a runtime; the message names it and the fix."""


@dataclass(frozen=True)
class Compiled:
    """One computation bound to its inputs: `run()` executes it once (synchronously); `touch()` reads its inputs.
    `excluded()`, where given, is the milliseconds of the last run spent in work the computation does only because
    it runs alone (a runtime's conversions of its inputs and outputs): timings subtract it from every run."""

    run: Callable[[], Any]
    touch: Callable[[], Any]
    excluded: Callable[[], float] | None = None


class Runtime:
    """Base class of runtimes; subclasses set `name` and implement `version` and `compile`."""

    name: str = ""

    def version(self) -> str:
        raise NotImplementedError

    def options(self) -> str:
        """Settings that change timings (part of the cache key); empty by default."""
        return ""

    def key(self) -> str:
        """Runtime, version and settings: part of every latency cache key."""
        options = self.options()
        return f"{self.name}{self.version()}" + (f"-{options}" if options else "")

    def check(self, device: torch.device) -> None:
        """Raise ValueError when this runtime cannot run on `device`."""

    def compile(self, fn: Callable[..., Any], inputs: Sequence[torch.Tensor], device: torch.device,
                threads: int) -> Compiled:
        raise NotImplementedError

    def compile_layer(self, fn: Callable[..., Any], inputs: Sequence[torch.Tensor], device: torch.device,
                      threads: int) -> Compiled:
        """`compile` for one layer timed alone (a latency table entry); a runtime may leave out, through
        `Compiled.excluded`, what the layer costs only when it runs alone. `compile` by default."""
        return self.compile(fn, inputs, device, threads)

    def call_overhead(self, inputs: Sequence[torch.Tensor], device: torch.device, threads: int) -> Compiled:
        """The runtime's cheapest call on these inputs: its fixed cost per call, which latency tables
        subtract from every layer (a whole model pays it once)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key()})"


class EagerRuntime(Runtime):
    """PyTorch eager mode on the device of the inputs (gradients off while timing)."""

    name = "eager"

    def version(self) -> str:
        return torch.__version__

    def compile(self, fn: Callable[..., Any], inputs: Sequence[torch.Tensor], device: torch.device,
                threads: int) -> Compiled:
        inputs = list(inputs)
        sync = _synchronizer(device)

        def run() -> None:
            fn(*inputs)
            sync()

        def touch() -> None:
            for t in inputs:
                t.sum()
            sync()

        return Compiled(run, touch)

    def call_overhead(self, inputs: Sequence[torch.Tensor], device: torch.device, threads: int) -> Compiled:
        """No computation: the timing loop's own cost (and on CUDA one synchronisation)."""
        sync = _synchronizer(device)
        return Compiled(sync, sync)


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class ExportedRuntime(Runtime):
    """A CPU runtime that runs each computation exported to ONNX: `compile` exports it, `call_overhead` is one
    Identity node, and a subclass loads the model (`load`) and says what it times (`target`, for messages)."""

    target = ""

    def __init__(self, opset: int = 17) -> None:
        if not isinstance(opset, int) or isinstance(opset, bool) or opset < 9:
            raise ValueError(f"opset: expected an ONNX opset number >= 9, got {opset!r}")
        self.opset = opset

    def check(self, device: torch.device) -> None:
        if device.type != "cpu":
            raise ValueError(f"runtime {self.name}: times {self.target}, but the example input is on {device}; "
                             f"pass a CPU example input (or use runtime='eager' on {device.type})")

    def compile(self, fn: Callable[..., Any], inputs: Sequence[torch.Tensor], device: torch.device,
                threads: int) -> Compiled:
        self.check(device)
        return self.load(export_onnx(fn, inputs, self.opset, runtime=self.name), inputs, threads)

    def compile_layer(self, fn: Callable[..., Any], inputs: Sequence[torch.Tensor], device: torch.device,
                      threads: int) -> Compiled:
        self.check(device)
        return self.load(export_onnx(fn, inputs, self.opset, runtime=self.name), inputs, threads, layer=True)

    def call_overhead(self, inputs: Sequence[torch.Tensor], device: torch.device, threads: int) -> Compiled:
        """A graph passing its first input through Identity: one call on the same inputs."""
        return self.load(identity_onnx(inputs, self.opset), inputs, threads)

    def load(self, model: bytes, inputs: Sequence[torch.Tensor], threads: int, layer: bool = False) -> Compiled:
        """The ONNX `model` ready to run on `inputs` (named input0, input1, ...) with `threads` threads
        (`layer`: a layer timed alone, see `Runtime.compile_layer`)."""
        raise NotImplementedError


class OnnxRuntime(ExportedRuntime):
    """ONNX Runtime with the CPU execution provider.

    Args:
        optimization: ONNX Runtime's graph optimisation level: "all" (its default), "extended",
            "basic" or "disabled".
        opset: the ONNX opset to export with.
    """

    name = "onnxruntime"
    target = "the CPU execution provider"
    LEVELS = ("disabled", "basic", "extended", "all")

    def __init__(self, optimization: str = "all", opset: int = 17) -> None:
        if optimization not in self.LEVELS:
            raise ValueError(f"optimization: expected one of {self.LEVELS}, got {optimization!r}")
        super().__init__(opset)
        self.optimization = optimization
        _require("onnxruntime", ("onnxruntime", "onnx"), "onnx")

    def version(self) -> str:
        import onnxruntime
        return onnxruntime.__version__

    def options(self) -> str:
        return f"cpu-opt{self.optimization}-opset{self.opset}"

    def load(self, model: bytes, inputs: Sequence[torch.Tensor], threads: int, layer: bool = False) -> Compiled:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[self.optimization]
        options.log_severity_level = 3
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        arrays = _arrays(inputs)
        # inputs the graph does not read (an exporter drops them) are not fed
        feeds = {i.name: arrays[i.name] for i in session.get_inputs()}

        def run() -> None:
            session.run(None, feeds)

        return Compiled(run, _reader(list(feeds.values())))


class OpenVinoRuntime(ExportedRuntime):
    """OpenVINO on its CPU plugin: the computation exported to ONNX (as for ONNX Runtime) and compiled for
    one stream of `threads` inference threads, the calling thread not pinned to a core.

    A layer timed alone leaves out the conversions OpenVINO adds at its inputs and outputs (Reorder and Convert
    nodes next to them: from the caller's f32 plain layout to the blocked, bf16 one its kernels use, and back),
    read off OpenVINO's per-node counters after every run: inside a whole model a layer's input and output stay
    in the kernels' layout. Measured on a 3x3 convolution of 32 channels at 32 x 32 (bf16, one thread), those
    conversions took 0.118 ms beside the convolution's 0.087 ms; whole models are timed with everything.

    Args:
        precision: the inference precision ("f32", "bf16" or "f16"); None for OpenVINO's default on this
            processor (read when the runtime is made, and part of the cache key either way).
        opset: the ONNX opset to export with.
    """

    name = "openvino"
    target = "OpenVINO's CPU plugin"
    PRECISIONS = ("f32", "bf16", "f16")

    def __init__(self, precision: str | None = None, opset: int = 17) -> None:
        if precision is not None and precision not in self.PRECISIONS:
            raise ValueError(f"precision: expected one of {self.PRECISIONS} or None (OpenVINO's default for the "
                             f"processor), got {precision!r}")
        super().__init__(opset)
        _require("openvino", ("openvino", "onnx"), "openvino")
        # the runtime holds only these (it travels to a pool's workers); each process has its own OpenVINO core
        self.precision = precision or _openvino_core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()

    def version(self) -> str:
        import openvino
        return openvino.__version__.split("-")[0]

    def options(self) -> str:
        return f"cpu-{self.precision}-opset{self.opset}"

    def load(self, model: bytes, inputs: Sequence[torch.Tensor], threads: int, layer: bool = False) -> Compiled:
        import openvino

        core = _openvino_core()
        compiled = core.compile_model(core.read_model(model), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": self.precision, "PERF_COUNT": layer})
        request = compiled.create_infer_request()
        arrays = _arrays(inputs)
        # inputs the graph does not read (an exporter drops them) are not bound; the others are bound once,
        # sharing their memory, so a call copies nothing in
        bound = [arrays[port.get_any_name()] for port in compiled.inputs]
        for port, array in zip(compiled.inputs, bound):
            request.set_tensor(port, openvino.Tensor(array, shared_memory=True))

        def run() -> None:
            request.infer()

        excluded = None
        if layer:
            conversions = _io_conversions(compiled)

            def excluded() -> float:
                return sum(p.real_time.total_seconds() * 1e3 for p in request.get_profiling_info()
                           if p.node_name in conversions)
        return Compiled(run, _reader(bound), excluded)


def _io_conversions(compiled: Any) -> set[str]:
    """Names of the nodes of an OpenVINO compiled model that convert its inputs or outputs (Reorder or Convert
    nodes reading an input or feeding an output)."""
    def kind(node: Any) -> str:
        return node.get_rt_info()["layerType"].astype(str)
    names = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        if kind(op) not in ("Reorder", "Convert"):
            continue
        reads = {kind(op.input_value(i).get_node()) for i in range(op.get_input_size())}
        feeds = {kind(t.get_node()) for out in op.outputs() for t in out.get_target_inputs()}
        if "Input" in reads or "Output" in feeds:
            names.add(op.get_friendly_name())
    return names


def _arrays(inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """The inputs as contiguous numpy arrays named as `export_onnx` names them."""
    return {f"input{i}": np.ascontiguousarray(t.detach().cpu().numpy()) for i, t in enumerate(inputs)}


def _reader(arrays: Sequence[np.ndarray]) -> Callable[[], None]:
    """A `Compiled.touch` that reads `arrays` (into cache, as after the layer that wrote them)."""
    def touch() -> None:
        for a in arrays:
            a.sum()
    return touch


RUNTIMES: dict[str, Callable[[], Runtime]] = {"eager": EagerRuntime, "onnxruntime": OnnxRuntime,
                                              "openvino": OpenVinoRuntime}


def get_runtime(runtime: str | Runtime) -> Runtime:
    """A runtime by name ("eager", "onnxruntime", "openvino") or the `Runtime` given."""
    if isinstance(runtime, Runtime):
        return runtime
    if isinstance(runtime, str) and runtime in RUNTIMES:
        return RUNTIMES[runtime]()
    raise ValueError(f"runtime: expected one of {sorted(RUNTIMES)} or a Runtime instance, got {runtime!r}")


def export_onnx(fn: Callable[..., Any], inputs: Sequence[torch.Tensor], opset: int = 17,
                runtime: str = "onnxruntime") -> bytes:
    """`fn` (a module, or a callable whose closure holds the modules it calls) exported to ONNX, in eval mode
    (`runtime`: the runtime named when the export fails)."""
    module = fn if isinstance(fn, nn.Module) else _CallableModule(fn)
    flags = {m: m.training for m in module.modules()}
    module.eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(t.detach().cpu() for t in inputs), buffer, dynamo=False,
                              opset_version=opset, do_constant_folding=True,
                              input_names=[f"input{i}" for i in range(len(inputs))])
    except Exception as e:   # the exporter raises many types; name the computation and the fix
        raise ExportError(f"{runtime}: cannot export {_describe(fn)} to ONNX ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); time this model with runtime='eager'") from e
    finally:
        for m, flag in flags.items():
            m.training = flag
    return buffer.getvalue()


class _CallableModule(nn.Module):
    """Wraps a callable so the exporter can trace it; modules in its closure become submodules (their
    parameters become initializers of the graph, as in a whole exported model)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn
        self.held = nn.ModuleList(_closure_modules(fn))

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.fn(*inputs)


def _closure_modules(fn: Callable[..., Any]) -> list[nn.Module]:
    found: list[nn.Module] = []
    for cell in getattr(fn, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            value = cell.cell_contents
            if isinstance(value, nn.Module):
                found.append(value)
            elif callable(value) and getattr(value, "__closure__", None):
                found.extend(_closure_modules(value))
    bound = getattr(fn, "__self__", None)
    if isinstance(bound, nn.Module):
        found.append(bound)
    return found


def _describe(fn: Callable[..., Any]) -> str:
    return type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__qualname__", repr(fn))


def identity_onnx(inputs: Sequence[torch.Tensor], opset: int = 17) -> bytes:
    """An ONNX graph over inputs shaped like `inputs` that passes the first through Identity (a runtime's
    cheapest call on them)."""
    import onnx
    from onnx import TensorProto, helper

    names = [f"input{i}" for i in range(len(inputs))]
    graph = helper.make_graph(
        [helper.make_node("Identity", [names[0]], ["output"])], "call_overhead",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(t.shape)) for n, t in zip(names, inputs)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(inputs[0].shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


@functools.lru_cache(maxsize=None)
def _openvino_core() -> Any:
    import openvino
    return openvino.Core()


def _require(runtime: str, modules: Sequence[str], extra: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"runtime {runtime}: needs {' and '.join(missing)}; "
                          f"pip install 'mdp-opt[{extra}]' ({', '.join(modules)})")
