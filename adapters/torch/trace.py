"""Record one forward pass as a list of operations with channel labels.

Every leaf-module call is one operation; so is every torch function called outside a
leaf module (residual adds, `torch.flatten`, `x.mean(...)`), captured with a
`TorchFunctionMode`. Each tensor carries a *label*: the name of the dim that gives its
channel axis its width. Layers that produce channels (conv, linear, BN) take the label
of their out-channel dim from the dependency graph; every other operation passes on
the label of its first labelled input when the channel axis keeps its size.
The coupling itself comes from Torch-Pruning; this only names the widths of tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


@dataclass(frozen=True)
class TensorSlot:
    """A tensor seen in the trace: its shape, and which dim (label) sizes which axis."""

    shape: tuple[int, ...]
    label: str | None
    axis: int
    tensor_id: int


@dataclass(frozen=True)
class Arguments:
    """The non-tensor arguments of a function call, with holes where tensors go."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    @property
    def constants(self) -> str:
        return repr((self.args, dict(self.kwargs)))

    def fill(self, tensors: tuple[torch.Tensor, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        def put(x: Any) -> Any:
            if isinstance(x, _Hole):
                return tensors[x.index]
            if isinstance(x, (list, tuple)):
                return type(x)(put(v) for v in x)
            return x
        return tuple(put(a) for a in self.args), {k: put(v) for k, v in self.kwargs.items()}


@dataclass(frozen=True)
class _Hole:
    index: int

    def __repr__(self) -> str:
        return f"<tensor {self.index}>"


@dataclass
class OpRecord:
    """One operation of the forward pass."""

    name: str                     # leaf module name, or "<function>@<enclosing module>"
    module: nn.Module | None      # the leaf module, None for a function call
    inputs: list[TensorSlot]
    output: TensorSlot
    scope: tuple[str, ...]        # names of the enclosing modules, outermost first
    first_call: bool = True       # False when the same module ran before (parameters count once)
    func: Callable[..., Any] | None = None
    arguments: Arguments | None = None

    @property
    def func_name(self) -> str:
        return getattr(self.func, "__qualname__", getattr(self.func, "__name__", repr(self.func)))


@dataclass
class ModuleCall:
    """A call of a module that has children: its first tensor input and its output."""

    name: str
    input: TensorSlot
    output: TensorSlot


@dataclass
class Trace:
    ops: list[OpRecord]
    calls: list[ModuleCall]
    outputs: list[TensorSlot]
    leaf_names: set[str] = field(default_factory=set)


_ADD_NAMES = {"add", "add_", "__add__", "__iadd__", "__radd__"}


def is_add(op: OpRecord) -> bool:
    return op.module is None and getattr(op.func, "__name__", "") in _ADD_NAMES


def record_forward(model: nn.Module, example_input: torch.Tensor, out_labels: Mapping[str, str]) -> Trace:
    """Run `model(example_input)` once (no grad) and record its operations.

    `out_labels` maps the names of channel-producing modules to the dim of their output channels.
    """
    names = {m: n for n, m in model.named_modules()}
    recorder = _Recorder(out_labels)
    handles = []
    for module, name in names.items():
        leaf = not any(True for _ in module.children())
        handles.append(module.register_forward_pre_hook(recorder.pre_hook(name, leaf)))
        handles.append(module.register_forward_hook(recorder.post_hook(name, leaf)))
    try:
        with torch.no_grad(), recorder:
            out = model(example_input)
    finally:
        for h in handles:
            h.remove()
    outputs = [recorder.slot(t) for t in _tensors(out)]
    return Trace(recorder.ops, recorder.calls, outputs, recorder.leaf_names)


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


class _Recorder(TorchFunctionMode):
    def __init__(self, out_labels: Mapping[str, str]) -> None:
        super().__init__()
        self.out_labels = out_labels
        self.ops: list[OpRecord] = []
        self.calls: list[ModuleCall] = []
        self.leaf_names: set[str] = set()
        self.labels: dict[int, tuple[str | None, int]] = {}
        self.alive: list[torch.Tensor] = []   # keeps ids unique while recording
        self.stack: list[str] = []
        self.leaf_depth = 0
        self.pending: list[tuple[str, list[TensorSlot]]] = []

    # ---- tensors -------------------------------------------------------------------------------
    def slot(self, t: torch.Tensor) -> TensorSlot:
        label, axis = self.labels.get(id(t), (None, 1 if t.dim() > 1 else 0))
        return TensorSlot(tuple(t.shape), label, axis, id(t))

    def label(self, t: torch.Tensor, label: str | None, axis: int) -> TensorSlot:
        self.alive.append(t)
        self.labels[id(t)] = (label, axis)
        return self.slot(t)

    def propagate(self, inputs: list[TensorSlot], out: torch.Tensor) -> TensorSlot:
        for s in inputs:
            if s.label is not None and out.dim() > s.axis and out.shape[s.axis] == s.shape[s.axis]:
                return self.label(out, s.label, s.axis)
        return self.label(out, None, 1 if out.dim() > 1 else 0)

    # ---- module hooks --------------------------------------------------------------------------
    def pre_hook(self, name: str, leaf: bool) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            tensors = _tensors(args)
            if leaf:
                if self.leaf_depth == 0:
                    self.pending.append((name, [self.slot(t) for t in tensors]))
                self.leaf_depth += 1
            else:
                self.pending.append((name, [self.slot(t) for t in tensors[:1]]))
                self.stack.append(name)
        return hook

    def post_hook(self, name: str, leaf: bool) -> Callable:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            outs = _tensors(output)
            if leaf:
                self.leaf_depth -= 1
                if self.leaf_depth > 0:
                    return
            _, inputs = self.pending.pop()
            if not leaf:
                self.stack.pop()
                if inputs and len(outs) == 1:
                    self.calls.append(ModuleCall(name, inputs[0], self.slot(outs[0])))
                return
            if len(outs) != 1:
                raise ValueError(f"{name}: a leaf module returning {len(outs)} tensors is not supported")
            out = outs[0]
            if name in self.out_labels:
                slot = self.label(out, self.out_labels[name], out.dim() - 1 if isinstance(module, nn.Linear) else 1)
            else:
                slot = self.propagate(inputs, out)
            self.ops.append(OpRecord(name, module, inputs, slot, tuple(self.stack),
                                     first_call=name not in self.leaf_names))
            self.leaf_names.add(name)
        return hook

    # ---- functions outside leaf modules ----------------------------------------------------------
    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.leaf_depth > 0 or not isinstance(result, torch.Tensor) or getattr(func, "__name__", "") == "__get__":
            return result
        tensors: list[torch.Tensor] = []

        def hole(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                tensors.append(x)
                return _Hole(len(tensors) - 1)
            if isinstance(x, (list, tuple)):
                return type(x)(hole(v) for v in x)
            return x

        template = Arguments(tuple(hole(a) for a in args), {k: hole(v) for k, v in kwargs.items()})
        inputs = [self.slot(t) for t in tensors]
        slot = self.propagate(inputs, result)
        scope = tuple(self.stack)
        name = f"{getattr(func, '__name__', 'op')}@{scope[-1] if scope else '<model>'}"
        self.ops.append(OpRecord(name, None, inputs, slot, scope, func=func, arguments=template))
        return result
