"""Record one forward pass: every operation, the channel layout of every tensor, and what couples.

Every call of an *atomic* module (a leaf layer with parameters, a recognised attention,
a module the user pinned with `ignore=`) is one operation; so is every torch function
called outside atomic modules (residual adds, `torch.cat`, reshapes, the functions inside
parameter-free layers such as ReLU or Dropout), captured with a `TorchFunctionMode`.

Each tensor carries a `TensorInfo`: its shape, which axis holds its channels and the
layout of that axis (see `layout`). Handlers (see `handlers`) create spaces for the
channels a layer produces and tell the tracer which spaces must hold the same channels;
parameters used outside layers (layer scale, class token, position embedding) are
labelled when they meet a labelled tensor, and follow those channels. This is the one
tracer of the adapter: it gives the coupling, the shapes for the cost tables and the
slices `apply` makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .layout import Layout, Spaces


@dataclass(eq=False)
class TensorInfo:
    """A tensor seen in the trace. `axis`/`layout`: its channel axis and what sizes it (None: unknown/fixed).

    `kind` is "data" (the example input), "param" (a model parameter, `param` its qualified name),
    "derived" (computed from parameters only, `parents` says from which axes), "const" or "op".
    """

    shape: tuple[int, ...]
    kind: str = "op"
    axis: int | None = None
    layout: Layout | None = None
    param: str | None = None
    parents: list[tuple["TensorInfo", dict[int, int]]] = field(default_factory=list)
    value: torch.Tensor | None = None
    dtype: torch.dtype | None = None

    @property
    def labelled(self) -> bool:
        return self.layout is not None

    @property
    def from_params(self) -> bool:
        return self.kind in ("param", "derived")


@dataclass(frozen=True)
class Arguments:
    """The non-tensor arguments of a call, with holes where tensors go."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    @property
    def constants(self) -> str:
        return repr((self.args, dict(self.kwargs)))

    def fill(self, tensors: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        def put(x: Any) -> Any:
            if isinstance(x, _Hole):
                return tensors[x.index]
            if isinstance(x, (list, tuple)):
                return type(x)(put(v) for v in x)
            if isinstance(x, dict):
                return {k: put(v) for k, v in x.items()}
            return x
        return tuple(put(a) for a in self.args), {k: put(v) for k, v in self.kwargs.items()}


@dataclass(frozen=True)
class _Hole:
    index: int

    def __repr__(self) -> str:
        return f"<tensor {self.index}>"


def template(args: tuple, kwargs: dict) -> tuple[Arguments, list[torch.Tensor]]:
    """Split a call's arguments into a template with holes and the list of its tensors, in order."""
    tensors: list[torch.Tensor] = []

    def hole(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            tensors.append(x)
            return _Hole(len(tensors) - 1)
        if isinstance(x, (list, tuple)) and not isinstance(x, torch.Size):
            return type(x)(hole(v) for v in x)
        if isinstance(x, dict):
            return {k: hole(v) for k, v in x.items()}
        return x

    return Arguments(tuple(hole(a) for a in args), {k: hole(v) for k, v in kwargs.items()}), tensors


@dataclass(eq=False)
class OpRecord:
    """One operation of the forward pass."""

    name: str                     # module name, or "<function>@<enclosing module>"
    module: nn.Module | None      # the atomic module, None for a function call
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    scope: tuple[str, ...]        # names of the enclosing modules, outermost first
    first_call: bool = True       # False when the same module ran before (parameters count once)
    func: Callable[..., Any] | None = None
    arguments: Arguments | None = None
    handler: Any = None
    index: int = 0
    returned: Any = None          # an atomic module's output structure, with holes for its tensors
    width_args: list[tuple[tuple[int, ...], Layout]] = field(default_factory=list)   # int args that are widths

    @property
    def output(self) -> TensorInfo:
        return self.outputs[0]

    @property
    def func_name(self) -> str:
        return func_name(self.func)


def func_name(func: Any) -> str:
    name = getattr(func, "__name__", None)
    if name == "__get__":
        return getattr(getattr(func, "__self__", None), "__name__", "__get__")
    return name or repr(func)


@dataclass
class ModuleCall:
    """A call of a non-atomic module: its tensor inputs and outputs, the ops it ran ([start, stop)), its
    arguments (with holes for the inputs) and the structure it returned (with holes for the outputs)."""

    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    start: int
    stop: int
    arguments: Arguments | None = None
    returned: Any = None

    @property
    def input(self) -> TensorInfo | None:
        return self.inputs[0] if self.inputs else None

    @property
    def output(self) -> TensorInfo | None:
        return self.outputs[0] if len(self.outputs) >= 1 else None


@dataclass(frozen=True)
class Slot:
    """Tensor `tensor` (a parameter or buffer attribute) of module `owner` has `layout` along `axis`."""

    owner: str
    tensor: str
    axis: int
    layout: Layout

    @property
    def qualified(self) -> str:
        return f"{self.owner}.{self.tensor}" if self.owner else self.tensor


@dataclass
class Trace:
    ops: list[OpRecord]
    calls: list[ModuleCall]
    outputs: list[TensorInfo]
    spaces: Spaces
    slots: list[Slot]
    param_users: dict[str, str]        # parameters used outside atomic modules -> the op that first used them
    leaf_names: set[str] = field(default_factory=set)
    width_attributes: list[tuple[str, str, Layout]] = field(default_factory=list)   # (module, attribute, layout)

    def producer(self) -> dict[int, OpRecord]:
        """id(TensorInfo) -> the op that produced it."""
        return {id(t): op for op in self.ops for t in op.outputs}

    def consumers(self) -> dict[int, list[OpRecord]]:
        out: dict[int, list[OpRecord]] = {}
        for op in self.ops:
            for t in op.inputs:
                out.setdefault(id(t), []).append(op)
        return out


class TraceContext:
    """What a handler may do while the forward pass runs: make spaces, merge or pin them, label parameters."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.spaces = Spaces()
        self.slots: list[Slot] = []
        self.param_names = {id(p): n for n, p in model.named_parameters()}
        self._param_axes: dict[tuple[str, int], Layout] = {}
        self.width_attributes: list[tuple[str, str, Layout]] = []
        self._layer_layouts: dict[str, tuple[Layout, Layout]] = {}

    def layer_layouts(self, name: str, inp: Layout, make_out: Callable[[], Layout]) -> Layout:
        """The output layout of layer `name` reading `inp`: new on its first call; a later call (shared weights)
        reads and writes the same channels as the first."""
        if name in self._layer_layouts:
            first_in, first_out = self._layer_layouts[name]
            self.unify(first_in, inp, f"{name} (called again)")
            return first_out
        out = make_out()
        self._layer_layouts[name] = (inp, out)
        return out

    def width_attribute(self, scope: tuple[str, ...], value: int, layout: Layout) -> None:
        """A forward passed the channel count `value` to a shape function: the integer attributes of the
        enclosing module equal to it are where it came from, and change with the channels."""
        name = scope[-1] if scope else ""
        module = self.model.get_submodule(name)
        for attr, v in vars(module).items():
            if type(v) is int and v == value and not attr.startswith("_") and \
                    (name, attr) not in [(m, a) for m, a, _ in self.width_attributes]:
                self.width_attributes.append((name, attr, layout))

    def new_space(self, width: int, origin: str, kind: str = "channels") -> int:
        return self.spaces.new(width, origin, kind)

    def unify(self, a: Layout, b: Layout, where: str) -> None:
        self.spaces.unify(a, b, where)

    def pin(self, layout: Layout | None, reason: str) -> None:
        self.spaces.pin(layout, reason)

    def slot(self, owner: str, tensor: str, axis: int, layout: Layout) -> None:
        self.slots.append(Slot(owner, tensor, axis, layout))

    def label(self, info: TensorInfo, axis: int, layout: Layout, where: str) -> None:
        """Give `info` (and, for a tensor computed from parameters, the parameter itself) a channel axis."""
        if info.layout is not None:
            if info.axis == axis:
                self.unify(info.layout, layout, where)
            else:
                self.pin(layout, f"{where}: meets a tensor whose channels are on another axis")
            return
        info.axis, info.layout = axis, layout
        if info.kind == "param" and info.param is not None:
            key = (info.param, axis)
            if key in self._param_axes:
                self.unify(self._param_axes[key], layout, where)
            else:
                self._param_axes[key] = layout
                owner, _, attr = info.param.rpartition(".")
                self.slot(owner, attr, axis, layout)
        for parent, axis_map in info.parents:
            back = [a for a, b in axis_map.items() if b == axis]
            if back and parent.shape[back[0]] == info.shape[axis]:
                self.label(parent, back[0], layout, where)


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module, atomic: Callable[[str, nn.Module], Any], function_handler: Any,
                 ctx: TraceContext, keep_values: bool = False) -> None:
        super().__init__()
        self.keep_values = keep_values
        self.model = model
        self.atomic = atomic
        self.function_handler = function_handler
        self.ctx = ctx
        self.ops: list[OpRecord] = []
        self.calls: list[ModuleCall] = []
        self.leaf_names: set[str] = set()
        self.current: dict[int, TensorInfo] = {}
        self.alive: list[torch.Tensor] = []      # keeps ids unique while recording
        self.stack: list[str] = []
        self.depth = 0
        self.pending: list[tuple[str, list[TensorInfo], Any, int]] = []
        self.param_users: dict[str, str] = {}

    # ---- tensors -------------------------------------------------------------------------------
    def info(self, t: torch.Tensor) -> TensorInfo:
        found = self.current.get(id(t))
        if found is not None:
            return found
        name = self.ctx.param_names.get(id(t))
        kind = "param" if name is not None else "const"
        keep = t if (self.keep_values or not t.is_floating_point() or t.numel() <= 4096) else None
        found = TensorInfo(tuple(t.shape), kind, param=name, value=keep, dtype=t.dtype)
        self.register(t, found)
        return found

    def register(self, t: torch.Tensor, info: TensorInfo) -> None:
        self.alive.append(t)
        self.current[id(t)] = info

    def output_info(self, t: torch.Tensor) -> TensorInfo:
        keep = t if (self.keep_values or not t.is_floating_point()) else None
        info = TensorInfo(tuple(t.shape), "op", value=keep, dtype=t.dtype)
        self.register(t, info)
        return info

    # ---- module hooks --------------------------------------------------------------------------
    def pre_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            handler = self.atomic(name, module)
            if self.depth > 0:
                if handler is not None:
                    self.depth += 1
                return
            arguments, tensors = template(args, kwargs)
            inputs = [self.info(t) for t in tensors]
            self.pending.append((name, inputs, arguments, len(self.ops)))
            if handler is not None:
                self.depth += 1
            else:
                self.stack.append(name)
        return hook

    def post_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            handler = self.atomic(name, module)
            if handler is not None:
                self.depth -= 1
                if self.depth > 0:
                    return
            elif self.depth > 0:
                return
            _, inputs, arguments, start = self.pending.pop()
            outs = _tensors(output)
            if handler is None:
                self.stack.pop()
                returned, _ = template((output,), {})
                self.calls.append(ModuleCall(name, inputs, [self.info(t) for t in outs], start, len(self.ops),
                                             arguments, returned.args[0]))
                return
            returned, _ = template((output,), {})
            op = OpRecord(name, module, inputs, [self.output_info(t) for t in outs], tuple(self.stack),
                          first_call=name not in self.leaf_names, arguments=arguments, handler=handler,
                          index=len(self.ops), returned=returned.args[0])
            self.leaf_names.add(name)
            self.ops.append(op)
            handler.propagate(op, self.ctx)
        return hook

    # ---- functions outside atomic modules --------------------------------------------------------
    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        outs = _tensors(result)
        if self.depth > 0 or not outs:
            return result
        name = func_name(func)
        if name in ("__set__", "__setitem__"):
            return result
        arguments, tensors = template(args, kwargs)
        inputs = [self.info(t) for t in tensors]
        for t in inputs:
            if t.kind == "param" and t.param is not None:
                self.param_users.setdefault(t.param, f"{name}@{self.stack[-1] if self.stack else '<model>'}")
        scope = tuple(self.stack)
        op = OpRecord(f"{name}@{scope[-1] if scope else '<model>'}", None, inputs,
                      [self.output_info(t) for t in outs], scope, func=func, arguments=arguments,
                      handler=self.function_handler, index=len(self.ops))
        self.ops.append(op)
        self.function_handler.propagate(op, self.ctx)
        return result


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def record(model: nn.Module, example_input: torch.Tensor, atomic: Callable[[str, nn.Module], Any],
           function_handler: Any, keep_values: bool = False) -> Trace:
    """Run `model(example_input)` once (eval mode, no grad; training flags restored) and record it.

    `atomic(name, module)` returns the handler of a module that is one operation, or None for a
    module whose inside is recorded.
    """
    ctx = TraceContext(model)
    recorder = _Recorder(model, atomic, function_handler, ctx, keep_values)
    flags = {m: m.training for m in model.modules()}
    handles = []
    for name, module in model.named_modules():
        if module is model:
            continue
        handles.append(module.register_forward_pre_hook(recorder.pre_hook(name), with_kwargs=True))
        handles.append(module.register_forward_hook(recorder.post_hook(name), with_kwargs=True))
    try:
        model.eval()
        data = TensorInfo(tuple(example_input.shape), "data")
        recorder.register(example_input, data)
        with torch.no_grad(), recorder:
            out = model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    outputs = [recorder.info(t) for t in _tensors(out)]
    for t in outputs:
        ctx.pin(t.layout, "model output")
    return Trace(recorder.ops, recorder.calls, outputs, ctx.spaces, ctx.slots, recorder.param_users,
                 recorder.leaf_names, ctx.width_attributes)

