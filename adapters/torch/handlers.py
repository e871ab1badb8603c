"""Per-operation handlers: how an operation couples channels, which of its tensors `apply` slices, and a
runnable stand-in of it at any widths (a `Workload`) with its exact MACs and parameter count.

Layer handlers are looked up by module type (walking the class's MRO), so support for a
new layer type is one `register_handler(MyLayer, MyHandler())` call. A handler has three jobs:

- `propagate(op, ctx)` while the forward pass is recorded: label the op's outputs with channel
  layouts, make new spaces for channels it produces, merge or pin spaces, and declare its slots
  (`ctx.slot(owner, tensor, axis, layout)`: which axis of which parameter or buffer follows which channels);
- `workload(op, sizes)`: the op at other widths, to time it or count its MACs and parameters;
- `labels(op, sizes)`: the dims its cost depends on.

Functions called outside layers (`x + y`, `torch.cat`, reshapes, ReLU's `F.relu`) use
`FunctionHandler`, which follows the channel axis through them (see `axes`) and pins what it cannot follow.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from . import axes
from .layout import Layout, Segment, Spaces, fixed, total
from .modules import evaluating
from .slicing import set_tensor
from .trace import OpRecord, TensorInfo, TraceContext


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
    activations: int = 0    # elements the operation writes at these widths (its outputs; an attention's inner tensors)


class Sizes:
    """Widths of layouts under one configuration (dim name -> kept count; dims not given keep their width)."""

    def __init__(self, spaces: Spaces, dim_of: Mapping[int, str], kept: Mapping[str, int]) -> None:
        self.spaces, self.dim_of, self.kept = spaces, dim_of, kept

    def dim(self, space: int | None) -> str | None:
        return None if space is None else self.dim_of.get(self.spaces.find(space))

    def width(self, layout: Layout | None, full: int | None = None) -> int:
        if layout is None:
            return full if full is not None else 0
        return sum(self.kept.get(self.dim(s.space), s.width) if self.dim(s.space) else s.width for s in layout)

    def shape(self, info: TensorInfo) -> tuple[int, ...]:
        shape = list(info.shape)
        if info.layout is not None:
            shape[info.axis] = self.width(info.layout)
        return tuple(shape)

    def dims(self, *layouts: Layout | None) -> tuple[str, ...]:
        names: list[str] = []
        for layout in layouts:
            for seg in layout or ():
                name = self.dim(seg.space)
                if name is not None and name not in names:
                    names.append(name)
        return tuple(names)

    def with_kept(self, kept: Mapping[str, int]) -> "Sizes":
        return Sizes(self.spaces, self.dim_of, kept)


def _random(info: TensorInfo, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if info.value is not None and not info.value.is_floating_point():
        return info.value.to(device)
    if info.value is not None and info.layout is None and tuple(info.value.shape) == tuple(shape):
        return info.value.to(device=device, dtype=dtype)
    return torch.randn(*shape, device=device, dtype=dtype)


def _channel_layout(op: OpRecord, ctx: TraceContext, x: TensorInfo, axis: int, what: str) -> Layout:
    """The layout a layer reads on `axis` of its input; a labelled input with its channels elsewhere is pinned."""
    axis = axes.normalize_axis(axis, len(x.shape))
    if x.layout is not None and x.axis == axis:
        return x.layout
    if x.layout is not None:
        ctx.pin(x.layout, f"{op.name}: {what} reads axis {axis} of its input, but the channels are on axis {x.axis}")
    return fixed(x.shape[axis])


def written(op: OpRecord, sizes: Sizes) -> int:
    """Elements of the operation's outputs at the widths in `sizes`."""
    return sum(math.prod(sizes.shape(t)) for t in op.outputs)


class LayerHandler:
    """Base handler for an atomic module. The default refuses a layer with parameters (it has no rules)."""

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        if any(True for _ in op.module.parameters()):
            raise UnsupportedModelError(
                f"{op.name}: {type(op.module).__name__} has parameters but no handler; register one with "
                "mdp_opt.adapters.torch.register_handler(type, handler), or keep it as it is with ignore=[module]")
        OpaqueHandler().propagate(op, ctx)

    def labels(self, op: OpRecord, sizes: Sizes) -> tuple[str, ...]:
        """The dims this operation's cost depends on."""
        return sizes.dims(*(t.layout for t in op.inputs), *(t.layout for t in op.outputs))

    def macs(self, op: OpRecord, sizes: Sizes) -> int:
        return 0

    def params(self, op: OpRecord, sizes: Sizes) -> int:
        return sum(p.numel() for p in op.module.parameters()) if op.module is not None else 0

    def make(self, op: OpRecord, sizes: Sizes) -> nn.Module:
        """A module computing the operation at the given widths (the original one when it is width-agnostic)."""
        return op.module

    def resize(self, module: nn.Module, op: OpRecord, sizes: Sizes) -> None:
        """Update the attributes of `module` (already sliced by `apply`) to the widths in `sizes`."""

    def config(self, op: OpRecord, sizes: Sizes) -> str:
        """Everything besides the input shapes that `make` depends on (part of the workload's key)."""
        return repr(op.module)

    def workload(self, op: OpRecord, sizes: Sizes) -> Workload:
        shapes = [sizes.shape(t) for t in op.inputs]
        args = op.arguments

        def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
            module = evaluating(self.make(op, sizes).to(device=device, dtype=dtype))

            def run(*tensors: torch.Tensor) -> Any:
                a, k = args.fill(tensors)
                return module(*a, **k)
            return run, [_random(t, s, device, dtype) for t, s in zip(op.inputs, shapes)]

        key = f"{self.config(op, sizes)}|{shapes}|{args.constants if args else ''}"
        return Workload(key, self.macs(op, sizes), self.params(op, sizes), setup, written(op, sizes))


class OpaqueHandler(LayerHandler):
    """A module kept exactly as it is (`ignore=[module]`, or a layer without parameters): the channels it reads
    and writes keep their widths."""

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        for t in op.inputs:
            ctx.pin(t.layout, f"{op.name}: {type(op.module).__name__} is kept as it is")


def _set_output(op: OpRecord, axis: int, layout: Layout) -> None:
    out = op.outputs[0]
    out.axis, out.layout = axes.normalize_axis(axis, len(out.shape)), layout


class ConvHandler(LayerHandler):
    """nn.Conv1d/2d/3d: plain (groups=1), depthwise (groups = in = out channels; one space) or grouped (pinned)."""

    @staticmethod
    def depthwise(m: nn.Module) -> bool:
        return m.groups > 1 and m.groups == m.in_channels == m.out_channels

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        m, x = op.module, op.inputs[0]
        inp = _channel_layout(op, ctx, x, 1, type(m).__name__)
        if self.depthwise(m):
            out = ctx.layer_layouts(op.name, inp, lambda: inp)
        else:
            out = ctx.layer_layouts(op.name, inp, lambda: (Segment(ctx.new_space(m.out_channels, op.name),
                                                                    m.out_channels),))
            if m.groups != 1:
                ctx.pin(inp, f"{op.name}: a grouped convolution (groups={m.groups}) keeps its widths")
                ctx.pin(out, f"{op.name}: a grouped convolution (groups={m.groups}) keeps its widths")
            ctx.slot(op.name, "weight", 1, inp)
        ctx.slot(op.name, "weight", 0, out)
        if m.bias is not None:
            ctx.slot(op.name, "bias", 0, out)
        for name in _per_output_extras(m, m.out_channels):
            ctx.slot(op.name, name, 0, out)
        _set_output(op, 1, out)

    def _shape(self, op: OpRecord, sizes: Sizes) -> tuple[int, int, int]:
        c_out, c_in = sizes.width(op.output.layout, op.module.out_channels), sizes.width(op.inputs[0].layout,
                                                                                           op.module.in_channels)
        if op.inputs[0].layout is None or op.inputs[0].axis != 1:
            c_in = op.module.in_channels
        groups = c_in if self.depthwise(op.module) else op.module.groups
        return c_out, c_in, groups

    def macs(self, op: OpRecord, sizes: Sizes) -> int:
        c_out, c_in, groups = self._shape(op, sizes)
        batch_and_spatial = math.prod(op.output.shape) // op.output.shape[1]
        return batch_and_spatial * c_out * (c_in // groups) * math.prod(op.module.kernel_size)

    def params(self, op: OpRecord, sizes: Sizes) -> int:
        c_out, c_in, groups = self._shape(op, sizes)
        bias = c_out if op.module.bias is not None else 0
        m = op.module
        return c_out * (c_in // groups) * math.prod(m.kernel_size) + bias + _own_params(m, c_out)

    def make(self, op: OpRecord, sizes: Sizes) -> nn.Module:
        """A convolution at the configuration's widths; a subclass is a copy cut to them (see `_cut_copy`)."""
        m = op.module
        c_out, c_in, groups = self._shape(op, sizes)
        if type(m) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
            return type(m)(c_in, c_out, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                           m.bias is not None, m.padding_mode)
        new = _cut_copy(m, c_out, c_in // groups)
        new.out_channels, new.in_channels, new.groups = c_out, c_in, groups
        return new

    def resize(self, module: nn.Module, op: OpRecord, sizes: Sizes) -> None:
        module.out_channels, module.in_channels, module.groups = self._shape(op, sizes)

    def config(self, op: OpRecord, sizes: Sizes) -> str:
        m = op.module
        c_out, c_in, groups = self._shape(op, sizes)
        return (f"{type(m).__name__}({c_in}, {c_out}, kernel_size={m.kernel_size}, stride={m.stride}, "
                f"padding={m.padding}, dilation={m.dilation}, groups={groups}, bias={m.bias is not None}, "
                f"padding_mode={m.padding_mode})")


def _per_output_extras(m: nn.Module, out_channels: int) -> list[str]:
    """Parameters and buffers of a convolution or Linear subclass besides its weight and bias holding one value
    per output channel ((out, 1, 1, 1): a weight-standardised convolution's gain): sliced with the outputs."""
    tensors = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
    return [name for name, t in tensors if name not in ("weight", "bias") and t is not None and t.dim() >= 1
            and t.shape[0] == out_channels and t.numel() == out_channels]


def _own_params(m: nn.Module, c_out: int) -> int:
    """Parameters of a layer subclass besides its weight and bias: per output channel (see `_per_output_extras`)
    or whole."""
    extras = _per_output_extras(m, m.weight.shape[0])
    return sum(c_out if name in extras else p.numel() for name, p in m.named_parameters(recurse=False)
               if name not in ("weight", "bias"))


def _cut_copy(m: nn.Module, c_out: int, weight_in: int) -> nn.Module:
    """A copy of a layer subclass (whose constructor may take other arguments than its base class's) with its
    weight cut to [:c_out, :weight_in] and its bias and per-output-channel tensors to [:c_out]: what its latency
    is measured on."""
    new = copy.deepcopy(m)
    tensors = dict(new.named_parameters(recurse=False)) | dict(new.named_buffers(recurse=False))
    with torch.no_grad():
        set_tensor(new, "weight", new.weight[:c_out, :weight_in].clone(), new.weight)
        for name in ["bias"] * (new.bias is not None) + _per_output_extras(m, m.weight.shape[0]):
            set_tensor(new, name, tensors[name][:c_out].clone(), tensors[name])
    return new


class LinearHandler(LayerHandler):
    """nn.Linear over the last axis."""

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        m, x = op.module, op.inputs[0]
        inp = _channel_layout(op, ctx, x, -1, "Linear")
        out = ctx.layer_layouts(op.name, inp, lambda: (Segment(ctx.new_space(m.out_features, op.name),
                                                                m.out_features),))
        ctx.slot(op.name, "weight", 1, inp)
        ctx.slot(op.name, "weight", 0, out)
        if m.bias is not None:
            ctx.slot(op.name, "bias", 0, out)
        for name in _per_output_extras(m, m.out_features):
            ctx.slot(op.name, name, 0, out)
        _set_output(op, -1, out)

    def _shape(self, op: OpRecord, sizes: Sizes) -> tuple[int, int]:
        x = op.inputs[0]
        c_in = sizes.width(x.layout) if x.layout is not None and x.axis == len(x.shape) - 1 else op.module.in_features
        return sizes.width(op.output.layout, op.module.out_features), c_in

    def macs(self, op: OpRecord, sizes: Sizes) -> int:
        rows = math.prod(op.output.shape) // op.output.shape[-1]
        c_out, c_in = self._shape(op, sizes)
        return rows * c_out * c_in

    def params(self, op: OpRecord, sizes: Sizes) -> int:
        c_out, c_in = self._shape(op, sizes)
        return c_out * c_in + (c_out if op.module.bias is not None else 0) + _own_params(op.module, c_out)

    def make(self, op: OpRecord, sizes: Sizes) -> nn.Module:
        """nn.Linear at the configuration's widths; a subclass is a copy cut to them (see `_cut_copy`)."""
        c_out, c_in = self._shape(op, sizes)
        if type(op.module) is nn.Linear:
            return nn.Linear(c_in, c_out, op.module.bias is not None)
        new = _cut_copy(op.module, c_out, c_in)
        new.out_features, new.in_features = c_out, c_in
        return new

    def resize(self, module: nn.Module, op: OpRecord, sizes: Sizes) -> None:
        module.out_features, module.in_features = self._shape(op, sizes)

    def config(self, op: OpRecord, sizes: Sizes) -> str:
        c_out, c_in = self._shape(op, sizes)
        return f"Linear({c_in}, {c_out}, bias={op.module.bias is not None})"


class NormHandler(LayerHandler):
    """Per-channel layers (BatchNorm, LayerNorm over one axis, GroupNorm, InstanceNorm): their parameters and
    running statistics follow the channels they normalise."""

    def features(self, m: nn.Module) -> int:
        if isinstance(m, nn.LayerNorm):
            return m.normalized_shape[-1] if len(m.normalized_shape) == 1 else -1
        if isinstance(m, nn.GroupNorm):
            return m.num_channels
        return m.num_features

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        m, x = op.module, op.inputs[0]
        width = self.features(m)
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            axis, layout = 1, _channel_layout(op, ctx, x, 1, type(m).__name__)
        elif x.layout is not None and total(x.layout) == width and x.shape == op.output.shape:
            axis, layout = x.axis, x.layout
        else:
            axis, layout = len(x.shape) - 1, _channel_layout(op, ctx, x, -1, type(m).__name__)
        layout = ctx.layer_layouts(op.name, layout, lambda: layout)
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            ctx.pin(layout, f"{op.name}: a LayerNorm over {tuple(m.normalized_shape)} keeps its widths")
        if isinstance(m, nn.GroupNorm) and 1 < m.num_groups < m.num_channels:
            ctx.pin(layout, f"{op.name}: GroupNorm with {m.num_groups} groups keeps its widths")
        for name, tensor in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if tensor is not None and tensor.dim() == 1 and tensor.shape[0] == total(layout):
                ctx.slot(op.name, name, 0, layout)
        _set_output(op, axis, layout)

    def params(self, op: OpRecord, sizes: Sizes) -> int:
        full = self.features(op.module)
        width = sizes.width(op.output.layout, full)
        return sum((width if p.dim() and p.shape[0] == full and p.numel() == full else p.numel())
                   for p in op.module.parameters())   # one value per channel: (channels,) or (channels, 1, 1)

    def make(self, op: OpRecord, sizes: Sizes) -> nn.Module:
        """A copy of the layer keeping its first channels (a subclass keeps its own forward)."""
        m = op.module
        width = self.features(m)
        c = sizes.width(op.output.layout, width)
        new = copy.deepcopy(m)
        for name, tensor in list(new.named_parameters(recurse=False)) + list(new.named_buffers(recurse=False)):
            if tensor is not None and tensor.dim() == 1 and tensor.shape[0] == width:
                set_tensor(new, name, tensor.detach()[:c].clone(), tensor)
        self.resize(new, op, sizes)
        return new

    def resize(self, module: nn.Module, op: OpRecord, sizes: Sizes) -> None:
        self._set_width(module, sizes.width(op.output.layout, self.features(module)))

    @staticmethod
    def _set_width(m: nn.Module, c: int) -> None:
        if isinstance(m, nn.LayerNorm):
            m.normalized_shape = (c,)
        elif isinstance(m, nn.GroupNorm):
            m.num_groups = 1 if m.num_groups == 1 else c
            m.num_channels = c
        else:
            m.num_features = c

    def config(self, op: OpRecord, sizes: Sizes) -> str:
        m = op.module
        return f"{type(m).__name__}({sizes.width(op.output.layout, self.features(m))}, eps={m.eps})"


class ChannelwiseHandler(NormHandler):
    """A layer without rules of its own whose parameters hold one value per channel and whose output has its
    input's shape (timm's LayerScale and LayerScale2d, PReLU, a learned scaling): its parameters follow the
    channels, and its integer attributes equal to the channel count (PReLU's num_parameters), and such counts
    in tuples of integers (a view shape (channels, 1, 1)), follow the kept count."""

    def features(self, m: nn.Module) -> int:
        return next(p.shape[0] for p in m.parameters())

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        if not op.inputs:             # a module that makes a tensor from its parameters alone (a bias table)
            DEFAULT_HANDLER.propagate(op, ctx)
            return
        m, x = op.module, op.inputs[0]
        params = list(m.parameters())
        widths = {p.shape[0] for p in params}
        if any(not _per_channel(p, x) for p in params) or len(widths) != 1 or op.output.shape != x.shape or (
                x.layout is not None and total(x.layout) != widths.pop()):
            DEFAULT_HANDLER.propagate(op, ctx)
            return
        if x.layout is None:
            return
        layout = ctx.layer_layouts(op.name, x.layout, lambda: x.layout)
        for name, tensor in m.named_parameters():
            ctx.slot(op.name, name, 0, layout)
        _set_output(op, x.axis, layout)


    def config(self, op: OpRecord, sizes: Sizes) -> str:
        return f"{op.module!r}|channels={sizes.width(op.output.layout, self.features(op.module))}"

    def resize(self, module: nn.Module, op: OpRecord, sizes: Sizes) -> None:
        full = total(op.output.layout) if op.output.layout is not None else None
        c = sizes.width(op.output.layout, full)
        for attr, value in list(vars(module).items()):
            if attr.startswith("_"):
                continue
            if type(value) is int and value == full:
                setattr(module, attr, c)
            elif type(value) is tuple and full in value and all(type(v) is int for v in value):
                # a view shape such as (channels, 1, 1) that the forward pass reshapes the parameter to
                setattr(module, attr, tuple(c if v == full else v for v in value))


def _per_channel(p: torch.Tensor, x: Any) -> bool:
    """One value per channel of `x`: a vector, or (channels, 1, ..., 1) whose first axis meets the channel axis
    when broadcast against `x` (timm's LayerScale2d holds (channels, 1, 1) for NCHW tensors)."""
    if p.dim() == 1:
        return True
    if any(size != 1 for size in p.shape[1:]):
        return False
    return x.layout is None or x.axis == len(x.shape) - p.dim()


class FunctionHandler:
    """An operation called outside any atomic module: follows the channel axis through it (`axes`), merges the
    spaces it adds together, labels parameters it meets, and pins what it cannot follow. At other widths it is
    replayed with every labelled tensor argument resized along its channel axis."""

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        name = op.func_name
        args, kwargs = op.arguments.fill(op.inputs)
        if name in axes.CAT or name in axes.STACK:
            self._cat(op, ctx, args, kwargs, stack=name in axes.STACK)
        elif name in axes.SPLIT:
            self._split(op, ctx, args, kwargs)
        elif name in axes.MATMUL:
            for t in op.inputs:
                ctx.pin(t.layout, f"{op.name}: a matrix product of activations (an attention the transformer "
                                  "family did not recognise?) keeps the widths of its operands")
        elif name in axes.REDUCE:
            self._unary(op, ctx, axes.reduce_map(args, kwargs, len(op.inputs[0].shape), len(op.output.shape)))
        elif name == "__getitem__":
            self._getitem(op, ctx, args)
        elif name in axes.BINARY or len(op.inputs) > 1:
            self._broadcast(op, ctx)
        elif op.inputs:
            x = op.inputs[0]
            self._unary(op, ctx, axes.axis_map(name, args, kwargs, x.shape, op.output.shape), name, args, kwargs)

    # ---- rules -----------------------------------------------------------------------------------
    @staticmethod
    def _derive(op: OpRecord, maps: list[dict[int, int] | None]) -> None:
        """Outputs of an op whose tensor inputs all come from parameters are themselves parameter-derived."""
        if op.inputs and all(t.from_params or (t.kind == "const" and t.layout is None) for t in op.inputs) and \
                any(t.from_params for t in op.inputs):
            for out in op.outputs:
                out.kind = "derived"
                out.parents = [(t, m) for t, m in zip(op.inputs, maps) if m is not None and t.from_params]

    def _unary(self, op: OpRecord, ctx: TraceContext, axis_map: dict[int, int] | None, name: str = "",
               args: tuple = (), kwargs: dict | None = None) -> None:
        x, out = op.inputs[0], op.output
        if axis_map is None and len(out.shape) == len(x.shape):
            axis_map = axes.reshape_map(x.shape, out.shape) or None
            if x.layout is not None and (axis_map is None or x.axis not in axis_map) and \
                    out.shape[x.axis] == x.shape[x.axis]:
                axis_map = {a: a for a in range(len(x.shape))}
        self._derive(op, [axis_map])
        if x.layout is None:
            return
        where = op.name
        b = axis_map.get(x.axis) if axis_map is not None else None
        if b is None:
            if len(out.shape) < len(x.shape) and name in axes.REDUCE | {""}:
                return        # the channel axis was reduced away
            ctx.pin(x.layout, f"{where}: its channels are merged into, split over or dropped from another axis "
                              f"({list(x.shape)} -> {list(out.shape)})")
            return
        if out.shape[b] != x.shape[x.axis]:
            ctx.pin(x.layout, f"{where}: changes the channel axis from {x.shape[x.axis]} to {out.shape[b]}")
            return
        if name in ("roll", "flip", "fliplr", "flipud") and self._touches(x, args, kwargs or {}):
            ctx.pin(x.layout, f"{where}: reorders channels")
            return
        if name == "pad" and self._pads_channels(x, args, kwargs or {}):
            ctx.pin(x.layout, f"{where}: pads the channel axis")
            return
        out.axis, out.layout = b, x.layout
        if name in SIZED:
            self._width_argument(op, ctx, b, x)

    @staticmethod
    def _width_argument(op: OpRecord, ctx: TraceContext, axis: int, x: TensorInfo) -> None:
        """A size argument equal to the channel count (`x.reshape(n, self.dim, -1)`) must follow the channels."""
        args = op.arguments.args
        sizes, path = (args[1], (1,)) if len(args) > 1 and isinstance(args[1], (tuple, list)) else (args[1:], ())
        if len(sizes) != len(op.output.shape) or not isinstance(sizes[axis], int) or sizes[axis] < 0:
            return
        op.width_args.append((path + (axis + (0 if path else 1),), x.layout))
        ctx.width_attribute(op.scope, sizes[axis], x.layout)

    @staticmethod
    def _touches(x: TensorInfo, args: tuple, kwargs: dict) -> bool:
        dims = args[2] if len(args) > 2 else kwargs.get("dims", args[1] if len(args) > 1 else None)
        if dims is None:
            return True
        dims = [dims] if isinstance(dims, int) else list(dims)
        return any(axes.normalize_axis(d, len(x.shape)) == x.axis for d in dims)

    @staticmethod
    def _pads_channels(x: TensorInfo, args: tuple, kwargs: dict) -> bool:
        pad = args[1] if len(args) > 1 else kwargs.get("pad", ())
        n = len(x.shape)
        for i in range(0, len(pad), 2):
            axis = n - 1 - i // 2
            if axis == x.axis and (pad[i] or pad[i + 1]):
                return True
        return False

    def _broadcast(self, op: OpRecord, ctx: TraceContext) -> None:
        out = op.output
        n = len(out.shape)
        maps = [{a: a + n - len(t.shape) for a in range(len(t.shape))} for t in op.inputs]
        self._derive(op, maps)
        labelled = [(t, t.axis + n - len(t.shape)) for t in op.inputs if t.layout is not None]
        if not labelled:
            return
        first, b = labelled[0]
        layout = first.layout
        for t, axis in labelled[1:]:
            if axis == b:
                ctx.unify(layout, t.layout, op.name)
            elif t.shape[t.axis] != 1:
                ctx.pin(t.layout, f"{op.name}: combines tensors whose channels are on different axes")
        for t in op.inputs:
            if t.layout is not None:
                continue
            a = b - (n - len(t.shape))
            if a < 0 or t.shape[a] == 1:
                continue
            if t.from_params:
                ctx.label(t, a, layout, op.name)
            else:
                ctx.pin(layout, f"{op.name}: combines these channels with a tensor of fixed width "
                                f"({'the model input' if t.kind == 'data' else 'not computed from prunable layers'})")
        if out.shape[b] == total(layout):
            out.axis, out.layout = b, layout

    def _cat(self, op: OpRecord, ctx: TraceContext, args: tuple, kwargs: dict, stack: bool) -> None:
        tensors = [t for t in op.inputs]
        out = op.output
        ndim = len(tensors[0].shape)
        dim = axes.normalize_axis(args[1] if len(args) > 1 else kwargs.get("dim", 0), ndim + (1 if stack else 0))
        self._derive(op, [{a: (a + 1 if stack and a >= dim else a) for a in range(len(t.shape))} for t in tensors])
        labelled = [t for t in tensors if t.layout is not None]
        if not labelled:
            return
        if not stack and all(t.layout is None or t.axis == dim for t in tensors):
            layout: tuple[Segment, ...] = ()
            for t in tensors:
                layout += t.layout if t.layout is not None else fixed(t.shape[dim])
            out.axis, out.layout = dim, layout
            return
        axis = labelled[0].axis
        for t in labelled[1:]:
            if t.axis == axis:
                ctx.unify(labelled[0].layout, t.layout, op.name)
            else:
                ctx.pin(t.layout, f"{op.name}: joins tensors whose channels are on different axes")
        for t in tensors:
            if t.layout is None and t.shape[axis] == labelled[0].shape[axis]:
                if t.from_params:
                    ctx.label(t, axis, labelled[0].layout, op.name)
                else:
                    ctx.pin(labelled[0].layout, f"{op.name}: joins these channels with a tensor of fixed width")
        if axis == dim and not stack:
            ctx.pin(labelled[0].layout, f"{op.name}: joins channels on their own axis with tensors it cannot follow")
            return
        out_axis = axis + 1 if stack and axis >= dim else axis
        out.axis, out.layout = out_axis, labelled[0].layout

    def _split(self, op: OpRecord, ctx: TraceContext, args: tuple, kwargs: dict) -> None:
        x = op.inputs[0]
        name = op.func_name
        ndim = len(x.shape)
        default_dim = 0
        dim_index = 1 if name == "unbind" else 2
        dim = axes.normalize_axis(args[dim_index] if len(args) > dim_index else kwargs.get("dim", default_dim), ndim)
        removes = name == "unbind"
        maps = [{a: (a if not removes or a < dim else a - 1) for a in range(ndim) if not (removes and a == dim)}
                for _ in op.outputs]
        for out, m in zip(op.outputs, maps):
            if x.from_params:
                out.kind, out.parents = "derived", [(x, m)]
        if x.layout is None:
            return
        if dim != x.axis:
            for out, m in zip(op.outputs, maps):
                out.axis, out.layout = m[x.axis], x.layout
            return
        if removes:
            ctx.pin(x.layout, f"{op.name}: unbinds the channel axis")
            return
        pieces, offset = [], 0
        for out in op.outputs:
            pieces.append((offset, offset + out.shape[dim]))
            offset += out.shape[dim]
        bounds = [0]
        for seg in x.layout:
            bounds.append(bounds[-1] + seg.width)
        if not all(a in bounds and b in bounds for a, b in pieces):
            ctx.pin(x.layout, f"{op.name}: splits channels inside one layer's outputs")
            return
        for out, (a, b) in zip(op.outputs, pieces):
            out.axis, out.layout = dim, tuple(x.layout[bounds.index(a):bounds.index(b)])

    def _getitem(self, op: OpRecord, ctx: TraceContext, args: tuple) -> None:
        x, out = op.inputs[0], op.output
        index = args[1] if len(args) > 1 else None
        axis_map = axes.getitem_map(index, x.shape) if not isinstance(index, TensorInfo) else None
        self._derive(op, [axis_map])
        if x.layout is None:
            return
        b = axis_map.get(x.axis) if axis_map is not None else None
        kept = axes.getitem_slice(index, x.axis, x.shape) if axis_map is not None else None
        if b is None or kept is None:
            ctx.pin(x.layout, f"{op.name}: indexes the channel axis")
            return
        if len(kept) == x.shape[x.axis]:
            out.axis, out.layout = b, x.layout
            return
        bounds = [0]
        for seg in x.layout:
            bounds.append(bounds[-1] + seg.width)
        if kept.step == 1 and kept.start in bounds and kept.stop in bounds:
            out.axis, out.layout = b, tuple(x.layout[bounds.index(kept.start):bounds.index(kept.stop)])
            return
        ctx.pin(x.layout, f"{op.name}: takes a slice of the channels ({kept.start}:{kept.stop}:{kept.step})")

    # ---- costs -------------------------------------------------------------------------------------
    def labels(self, op: OpRecord, sizes: Sizes) -> tuple[str, ...]:
        return sizes.dims(*(t.layout for t in op.inputs), *(t.layout for t in op.outputs))

    def macs(self, op: OpRecord, sizes: Sizes) -> int:
        """Multiply-accumulates of matrix products (all other functions count 0)."""
        name = op.func_name
        if name in ("matmul", "bmm", "mm", "__matmul__") and len(op.inputs) == 2:
            a, b = (sizes.shape(t) for t in op.inputs)
            return math.prod(sizes.shape(op.output)) * a[-1]
        return 0

    def params(self, op: OpRecord, sizes: Sizes) -> int:
        return 0

    def workload(self, op: OpRecord, sizes: Sizes) -> Workload:
        shapes = [sizes.shape(t) for t in op.inputs]
        func, arguments = op.func, op.arguments
        widths = [(path, sizes.width(layout)) for path, layout in op.width_args]

        def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
            def run(*tensors: torch.Tensor) -> Any:
                a, k = arguments.fill(tensors)
                for path, width in widths:
                    a = _replace(a, path, width)
                return func(*a, **k)
            return run, [_random(t, s, device, dtype) for t, s in zip(op.inputs, shapes)]

        return Workload(f"{op.func_name}|{shapes}|{arguments.constants}|{widths}", self.macs(op, sizes), 0, setup,
                        written(op, sizes))


def _replace(args: tuple, path: tuple[int, ...], value: Any) -> tuple:
    """`args` with the item at `path` (indices into nested tuples/lists) set to `value`."""
    items = list(args)
    items[path[0]] = value if len(path) == 1 else _replace(tuple(items[path[0]]), path[1:], value)
    return type(args)(items) if isinstance(args, tuple) else items


SIZED = {"reshape", "view", "unflatten", "expand"}

_HANDLERS: dict[type, LayerHandler] = {}
DEFAULT_HANDLER = LayerHandler()
FUNCTION = FunctionHandler()


def register_handler(module_type: type, handler: LayerHandler) -> None:
    """Use `handler` for modules of `module_type` (and subclasses without a handler of their own)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type: expected an nn.Module subclass, got {module_type!r}")
    _HANDLERS[module_type] = handler


def handler_for_module(module: nn.Module) -> LayerHandler | None:
    """The handler of an atomic module: a registered one by type, the refusing default for a leaf with
    parameters, None for anything else (its inside is recorded op by op)."""
    for cls in type(module).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    leaf = not any(True for _ in module.children())
    if leaf and any(True for _ in module.parameters(recurse=False)):
        return CHANNELWISE
    return None


for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_handler(_cls, ConvHandler())
register_handler(nn.Linear, LinearHandler())
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d,
             nn.InstanceNorm2d, nn.InstanceNorm3d):
    register_handler(_cls, NormHandler())

CHANNELWISE = ChannelwiseHandler()

# the names the previous adapter exported
BatchNormHandler = NormHandler
