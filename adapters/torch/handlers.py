"""Per-operation handlers: which channel widths an operation's cost depends on, and
a runnable stand-in of it at any widths (a `Workload`) with its exact MACs and
parameter count.

Handlers are looked up by module type (walking the class's MRO), so support for a
new layer type is one `register_handler(MyLayer, MyHandler())` call. Operations run
outside any leaf module (residual adds, `torch.flatten`, `x.mean(...)`) use
`FunctionHandler`, which resizes every tensor argument along its channel axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .trace import OpRecord, TensorSlot

class UnsupportedModelError(ValueError):
    """The model uses a construct the torch adapter cannot turn into a spec; the message says what to do."""


@dataclass(frozen=True)
class Workload:
    """One operation at fixed widths.

    `key` identifies the computation (type, configuration, input shapes), so equal keys
    cost the same and are timed once. `setup(device, dtype)` builds the stand-in and its
    inputs and returns `(fn, inputs)`; timing calls `fn(*inputs)`.
    """

    key: str
    macs: int
    params: int
    setup: Callable[[torch.device, torch.dtype], tuple[Callable[..., Any], list[torch.Tensor]]]


def resized(slot: TensorSlot, widths: Mapping[str, int]) -> tuple[int, ...]:
    """The slot's shape with its channel axis set to the width chosen for its label."""
    shape = list(slot.shape)
    if slot.label is not None:
        shape[slot.axis] = widths[slot.label]
    return tuple(shape)


def _random(shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=dtype)


class LayerHandler:
    """Base handler for a leaf module that keeps no parameters (ReLU, pooling, dropout, ...).

    Subclasses override `labels`, `macs`, `params` and `make` for layers whose shape
    depends on the widths.
    """

    def labels(self, op: OpRecord) -> tuple[str | None, ...]:
        """Channel labels of the widths this operation's cost depends on (may repeat or be None)."""
        return tuple(s.label for s in op.inputs) + (op.output.label,)

    def macs(self, op: OpRecord, widths: Mapping[str, int]) -> int:
        return 0

    def params(self, op: OpRecord, widths: Mapping[str, int]) -> int:
        return 0

    def make(self, op: OpRecord, widths: Mapping[str, int]) -> nn.Module:
        """A module computing the operation at the given widths (the original one when it is width-agnostic)."""
        return op.module

    def config(self, op: OpRecord, widths: Mapping[str, int]) -> str:
        """Everything besides the input shapes that `make` depends on (part of the workload's key)."""
        return repr(op.module)

    def pinned_labels(self, op: OpRecord) -> tuple[str | None, ...]:
        """Labels whose width this operation cannot change (they become single-choice dims)."""
        return ()

    def check(self, op: OpRecord) -> None:
        """Raise UnsupportedModelError when the adapter cannot prune this operation as traced."""
        if any(True for _ in op.module.parameters(recurse=False)):
            raise UnsupportedModelError(
                f"{op.name}: {type(op.module).__name__} has parameters but no handler; register one with "
                "mdp_opt.adapters.torch.register_handler(type, handler)")

    def workload(self, op: OpRecord, widths: Mapping[str, int]) -> Workload:
        shapes = [resized(s, widths) for s in op.inputs]
        widths = dict(widths)

        def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
            module = self.make(op, widths).to(device=device, dtype=dtype).eval()
            return module, [_random(s, device, dtype) for s in shapes]

        key = f"{self.config(op, widths)}|{shapes}"
        return Workload(key, self.macs(op, widths), self.params(op, widths), setup)


def _width(slot: TensorSlot, widths: Mapping[str, int]) -> int:
    return widths[slot.label] if slot.label is not None else slot.shape[slot.axis]


class ConvHandler(LayerHandler):
    """nn.Conv1d/2d/3d: plain (groups=1) or depthwise (groups = in = out channels)."""

    def check(self, op: OpRecord) -> None:
        pass

    def pinned_labels(self, op: OpRecord) -> tuple[str | None, ...]:
        """A grouped (not depthwise) convolution keeps its full input and output widths."""
        m = op.module
        return (op.output.label, op.inputs[0].label) if m.groups != 1 and not self.depthwise(m) else ()

    @staticmethod
    def depthwise(m: nn.Module) -> bool:
        return m.groups > 1 and m.groups == m.in_channels == m.out_channels

    def labels(self, op: OpRecord) -> tuple[str | None, ...]:
        return (op.output.label, op.inputs[0].label)

    def _shape(self, op: OpRecord, widths: Mapping[str, int]) -> tuple[int, int, int]:
        c_out, c_in = _width(op.output, widths), _width(op.inputs[0], widths)
        groups = c_in if self.depthwise(op.module) else op.module.groups
        return c_out, c_in, groups

    def macs(self, op: OpRecord, widths: Mapping[str, int]) -> int:
        c_out, c_in, groups = self._shape(op, widths)
        batch_and_spatial = math.prod(op.output.shape) // op.output.shape[1]
        return batch_and_spatial * c_out * (c_in // groups) * math.prod(op.module.kernel_size)

    def params(self, op: OpRecord, widths: Mapping[str, int]) -> int:
        c_out, c_in, groups = self._shape(op, widths)
        bias = c_out if op.module.bias is not None else 0
        return c_out * (c_in // groups) * math.prod(op.module.kernel_size) + bias

    def make(self, op: OpRecord, widths: Mapping[str, int]) -> nn.Module:
        m = op.module
        c_out, c_in, groups = self._shape(op, widths)
        return type(m)(c_in, c_out, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                       m.bias is not None, m.padding_mode)

    def config(self, op: OpRecord, widths: Mapping[str, int]) -> str:
        m = op.module
        c_out, c_in, groups = self._shape(op, widths)
        return (f"{type(m).__name__}({c_in}, {c_out}, kernel_size={m.kernel_size}, stride={m.stride}, "
                f"padding={m.padding}, dilation={m.dilation}, groups={groups}, bias={m.bias is not None}, "
                f"padding_mode={m.padding_mode})")


class LinearHandler(LayerHandler):
    def labels(self, op: OpRecord) -> tuple[str | None, ...]:
        return (op.output.label, op.inputs[0].label)

    def macs(self, op: OpRecord, widths: Mapping[str, int]) -> int:
        rows = math.prod(op.output.shape) // op.output.shape[-1]
        return rows * _width(op.output, widths) * _width(op.inputs[0], widths)

    def params(self, op: OpRecord, widths: Mapping[str, int]) -> int:
        c_out, c_in = _width(op.output, widths), _width(op.inputs[0], widths)
        return c_out * c_in + (c_out if op.module.bias is not None else 0)

    def make(self, op: OpRecord, widths: Mapping[str, int]) -> nn.Module:
        return nn.Linear(_width(op.inputs[0], widths), _width(op.output, widths), op.module.bias is not None)

    def config(self, op: OpRecord, widths: Mapping[str, int]) -> str:
        return f"Linear({_width(op.inputs[0], widths)}, {_width(op.output, widths)}, bias={op.module.bias is not None})"

    def check(self, op: OpRecord) -> None:
        pass


class BatchNormHandler(LayerHandler):
    def labels(self, op: OpRecord) -> tuple[str | None, ...]:
        return (op.output.label,)

    def params(self, op: OpRecord, widths: Mapping[str, int]) -> int:
        return 2 * _width(op.output, widths) if op.module.affine else 0

    def make(self, op: OpRecord, widths: Mapping[str, int]) -> nn.Module:
        m = op.module
        return type(m)(_width(op.output, widths), m.eps, m.momentum, m.affine, m.track_running_stats)

    def config(self, op: OpRecord, widths: Mapping[str, int]) -> str:
        m = op.module
        return f"{type(m).__name__}({_width(op.output, widths)}, eps={m.eps}, affine={m.affine})"

    def check(self, op: OpRecord) -> None:
        pass


class FunctionHandler:
    """An operation called outside any leaf module (`x + y`, `torch.flatten`, `x.mean`):
    replayed with every labelled tensor argument resized along its channel axis."""

    def labels(self, op: OpRecord) -> tuple[str | None, ...]:
        return tuple(s.label for s in op.inputs) + (op.output.label,)

    def pinned_labels(self, op: OpRecord) -> tuple[str | None, ...]:
        return ()

    def check(self, op: OpRecord) -> None:
        pass

    def workload(self, op: OpRecord, widths: Mapping[str, int]) -> Workload:
        shapes = [resized(s, widths) for s in op.inputs]
        func, template = op.func, op.arguments

        def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
            def run(*tensors: torch.Tensor) -> Any:
                args, kwargs = template.fill(tensors)
                return func(*args, **kwargs)
            return run, [_random(s, device, dtype) for s in shapes]

        return Workload(f"{op.func_name}|{shapes}|{template.constants}", 0, 0, setup)


_HANDLERS: dict[type, LayerHandler] = {}
_DEFAULT = LayerHandler()
_FUNCTION = FunctionHandler()


def register_handler(module_type: type, handler: LayerHandler) -> None:
    """Use `handler` for modules of `module_type` (and subclasses without a handler of their own)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type: expected an nn.Module subclass, got {module_type!r}")
    _HANDLERS[module_type] = handler


def handler_for(op: OpRecord) -> LayerHandler | FunctionHandler:
    """The handler of a traced operation (module handlers by type, `FunctionHandler` for functions)."""
    if op.module is None:
        return _FUNCTION
    for cls in type(op.module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return _DEFAULT


for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_handler(_cls, ConvHandler())
register_handler(nn.Linear, LinearHandler())
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_handler(_cls, BatchNormHandler())
