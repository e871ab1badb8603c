"""Where a tensor's axes go through shape functions (reshape, permute, indexing, ...).

`axis_map` answers, for one input of a traced function call, which output axis each
input axis becomes (axes that are merged, split or dropped are absent). The tracer uses
it to follow the channel axis; anything it cannot follow is pinned, never guessed.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

BINARY = {"add", "sub", "mul", "div", "true_divide", "floor_divide", "rsub", "where", "maximum", "minimum", "pow",
          "masked_fill", "clamp", "clip", "addcmul", "addcdiv", "lerp", "fmod", "remainder", "hypot", "atan2",
          "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__", "__rmul__", "__imul__",
          "__truediv__", "__rtruediv__", "__itruediv__", "__floordiv__", "__pow__", "__rpow__", "__mod__",
          "add_", "sub_", "mul_", "div_", "masked_fill_", "clamp_", "addcmul_", "lerp_", "copy_", "eq", "ne", "lt",
          "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__and__", "__or__",
          "logical_and", "logical_or", "bitwise_and", "bitwise_or", "layer_norm", "group_norm", "batch_norm",
          "instance_norm", "dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout"}
CAT = {"cat", "concat", "concatenate"}
STACK = {"stack"}
SPLIT = {"split", "chunk", "unbind", "tensor_split", "split_with_sizes", "unsafe_split", "unsafe_chunk"}
REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod", "nansum", "nanmean",
          "median", "any", "all", "argmax", "argmin", "count_nonzero"}
MATMUL = {"matmul", "bmm", "mm", "__matmul__", "__rmatmul__", "einsum", "baddbmm", "addmm", "addbmm", "linear",
          "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "bilinear", "tensordot", "outer",
          "scaled_dot_product_attention", "multi_head_attention_forward"}
IDENTITY = {"contiguous", "clone", "detach", "to", "float", "half", "double", "bfloat16", "type", "type_as", "cpu",
            "cuda", "requires_grad_", "detach_", "__get__", "relu", "relu_", "gelu", "silu", "sigmoid", "tanh",
            "hardswish", "hardsigmoid", "relu6", "leaky_relu", "elu", "mish", "softplus", "softmax", "log_softmax",
            "exp", "log", "sqrt", "rsqrt", "abs", "neg", "__neg__", "reciprocal", "square", "sin", "cos", "erf",
            "hardtanh", "hardtanh_", "sign", "floor", "ceil", "round", "zeros_like", "ones_like", "empty_like",
            "full_like", "rand_like", "randn_like", "nan_to_num", "logit", "selu", "celu", "glu_", "silu_", "gelu_"}
RESHAPE = {"reshape", "view", "flatten", "unflatten", "view_as", "reshape_as", "squeeze", "unsqueeze", "squeeze_",
           "unsqueeze_", "ravel"}
AXIS_PRESERVING = {"roll", "flip", "fliplr", "flipud", "pad", "interpolate", "upsample", "upsample_nearest",
                   "upsample_bilinear", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
                   "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                   "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "max_pool2d_with_indices",
                   "_max_pool2d", "lp_pool2d", "cumsum", "cumprod", "sort", "topk", "narrow"}


def normalize_axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def reshape_map(src: Sequence[int], dst: Sequence[int]) -> dict[int, int]:
    """Axes of `src` that survive a reshape to `dst` unchanged: same size, same product of sizes before and after."""
    out: dict[int, int] = {}
    used: set[int] = set()
    for a, size in enumerate(src):
        if size == 1:
            continue
        before, after = math.prod(src[:a]), math.prod(src[a + 1:])
        for b, other in enumerate(dst):
            if b not in used and other == size and math.prod(dst[:b]) == before and math.prod(dst[b + 1:]) == after:
                out[a] = b
                used.add(b)
                break
    return out


def _ints(values: Any) -> list[int]:
    if isinstance(values, int):
        return [values]
    if isinstance(values, (list, tuple, torch.Size)) and len(values) == 1 and isinstance(values[0], (list, tuple)):
        return list(values[0])
    return list(values)


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def axis_map(name: str, args: Sequence[Any], kwargs: dict[str, Any], src: Sequence[int], dst: Sequence[int]
             ) -> dict[int, int] | None:
    """Input axis -> output axis for the first tensor argument of a shape function (None: not a shape function)."""
    ndim, out_ndim = len(src), len(dst)
    if name in IDENTITY or name in BINARY:
        offset = out_ndim - ndim
        return {a: a + offset for a in range(ndim)}
    if name in RESHAPE:
        return reshape_map(src, dst)
    if name == "permute":
        dims = [normalize_axis(d, ndim) for d in _ints(args[1:] if len(args) > 1 else kwargs.get("dims", ()))]
        return {a: dims.index(a) for a in range(ndim)}
    if name in ("transpose", "swapaxes", "swapdims", "transpose_"):
        d0, d1 = (normalize_axis(_arg(args, kwargs, i, n), ndim) for i, n in ((1, "dim0"), (2, "dim1")))
        return {a: (d1 if a == d0 else d0 if a == d1 else a) for a in range(ndim)}
    if name in ("t", "T", "mT"):
        return {a: (ndim - 1 - a if ndim == 2 else a) for a in range(ndim)} if name == "t" else \
            {a: (ndim - 2 if a == ndim - 1 else ndim - 1 if a == ndim - 2 else a) for a in range(ndim)}
    if name in ("movedim", "moveaxis"):
        sources = [normalize_axis(d, ndim) for d in _ints(_arg(args, kwargs, 1, "source"))]
        targets = [normalize_axis(d, ndim) for d in _ints(_arg(args, kwargs, 2, "destination"))]
        order = [a for a in range(ndim) if a not in sources]
        result: list[int | None] = [None] * ndim
        for s, t in zip(sources, targets):
            result[t] = s
        rest = iter(order)
        result = [r if r is not None else next(rest) for r in result]
        return {a: result.index(a) for a in range(ndim)}
    if name in ("expand", "expand_as", "broadcast_to", "repeat", "tile"):
        offset = out_ndim - ndim
        return {a: a + offset for a in range(ndim)}
    if name in AXIS_PRESERVING and ndim == out_ndim:
        return {a: a for a in range(ndim)}
    if name == "select":
        dim = normalize_axis(_arg(args, kwargs, 1, "dim"), ndim)
        return {a: (a if a < dim else a - 1) for a in range(ndim) if a != dim}
    if name == "__getitem__":
        return getitem_map(args[1], src)
    return None


def reduce_map(args: Sequence[Any], kwargs: dict[str, Any], ndim: int, out_ndim: int) -> dict[int, int] | None:
    """Axis map of a reduction (mean/sum/amax...): reduced axes vanish unless keepdim."""
    dim = _arg(args, kwargs, 1, "dim")
    if dim is None or isinstance(dim, torch.dtype):
        return {} if out_ndim < ndim else {a: a for a in range(ndim)}
    dims = {normalize_axis(d, ndim) for d in _ints(dim)}
    keep = bool(_arg(args, kwargs, 2, "keepdim", False))
    if keep or out_ndim == ndim:
        return {a: a for a in range(ndim) if a not in dims}
    out, b = {}, 0
    for a in range(ndim):
        if a in dims:
            continue
        out[a] = b
        b += 1
    return out


def getitem_map(index: Any, src: Sequence[int]) -> dict[int, int] | None:
    """Axis map of `x[index]` for basic indexing (ints, slices, None, Ellipsis); None for advanced indexing."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(i, (torch.Tensor, list)) for i in items):
        return None
    count = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + [slice(None)] * (len(src) - count) + items[at + 1:]
    else:
        items += [slice(None)] * (len(src) - count)
    out: dict[int, int] = {}
    a = b = 0
    for item in items:
        if item is None:
            b += 1
        elif isinstance(item, int):
            a += 1
        else:
            out[a] = b
            a += 1
            b += 1
    return out


def getitem_slice(index: Any, axis: int, src: Sequence[int]) -> range | None:
    """The channel indices `x[index]` keeps along `axis` (None when it indexes that axis with an int or tensor)."""
    items = list(index) if isinstance(index, tuple) else [index]
    count = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items = items[:at] + [slice(None)] * (len(src) - count) + items[at + 1:]
    a = 0
    for item in items:
        if item is None:
            continue
        if a == axis:
            if isinstance(item, slice):
                return range(*item.indices(src[axis]))
            return None
        a += 1
    return range(src[axis])
