"""Recognise attention from the weights and one forward pass, not from attribute names.

The forward pass is recorded with every tensor kept. An attention *core* is a softmax whose
input comes from a matrix product of two activations (scores = q k^T), followed by a
product with a third (probs @ v), or a call of `scaled_dot_product_attention`. From the core:

- q, k and v are followed back through reshapes, permutes, unbind/chunk and scalar factors
  to the Linear that computed them (a module, or `F.linear` with a module's weight);
- the head count is the axis before (tokens, channels) of q (or given with `heads=` when the
  heads are folded into the batch axis), and which row of the Linear holds each (head, channel)
  is read *numerically*: each channel of q, over all positions, is proportional to exactly one
  output column of the Linear. That is the same for fused qkv, separate q/k/v and any order;
- the attention output is followed forward to the output projection, whose input columns are
  matched the same way;
- the site is the smallest module holding the four Linears and the core; q, k and v must be
  projected from one tensor (self-attention) holding its first input's channels.

When the projections read the module's first input, the plain formula softmax(scale q k^T) v
with these weights is run on the recorded input: if it reproduces the module's output, the site
is replaced by a `PrunedAttention` when pruned. Otherwise (a relative position bias, masks,
windows partitioned inside the module, talking heads) it is sliced in place, after trying that
on the example input. `nn.MultiheadAttention` is recognised by its type (its weights say everything).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .attention import IN_PLACE, REPLACE, AttentionSite, Projection, SiteHandler, head_index
from .handlers import FUNCTION, LinearHandler, OpaqueHandler, UnsupportedModelError, handler_for_module
from .modules import evaluating
from .slicing import common_prefix
from .trace import ModuleCall, OpRecord, TensorInfo, _Hole, record

MATMULS = {"matmul", "bmm", "__matmul__"}
SOFTMAX = {"softmax", "_softmax"}
SDPA = "scaled_dot_product_attention"
PASS_THROUGH = {"dropout", "to", "type", "contiguous", "float", "half", "clone", "type_as"}
PERMUTES = {"permute", "transpose"}
TOLERANCE = 1e-4


def _mixes_heads(op: OpRecord) -> bool:
    """A Linear that keeps its input's shape inside the scores path (talking heads: it mixes the heads)."""
    return isinstance(op.module, nn.Linear) and op.inputs[0].shape == op.output.shape


@dataclass
class Core:
    """What the forward pass shows of one attention: the tensors entering and leaving it."""

    where: str                        # the op, for messages
    scope: tuple[str, ...]
    sources: dict[str, TensorInfo]    # q, k, v as they enter the products (k possibly transposed)
    values: dict[str, torch.Tensor]   # q, k, v as (..., tokens, channels)
    context: TensorInfo               # probs @ v
    scale: float | None               # known for SDPA; fitted for softmax
    plain: bool
    dropout: float


def find_sites(model: nn.Module, example_input: torch.Tensor, heads: Mapping[str, int] | None = None,
               ignore: set[str] | frozenset = frozenset()) -> tuple[list[AttentionSite], int]:
    """The attention sites of `model` and how many attention cores the forward pass showed (sites inside
    modules in `ignore` are left alone). Raises `UnsupportedModelError` for an attention it sees but cannot slim."""
    heads = dict(heads or {})
    trace = record(model, example_input, _discovery_atomic, FUNCTION, keep_values=True)
    producer, consumers = trace.producer(), trace.consumers()
    calls: dict[str, list[ModuleCall]] = {}
    for c in trace.calls:
        calls.setdefault(c.name, []).append(c)
    sites: list[AttentionSite] = []
    cores = 0
    mha = {name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}
    for name in sorted(mha):
        cores += 1
        _add(sites, lambda: _mha_site(model, name, calls.get(name, []), heads), _ignored(name, ignore))
    for op in trace.ops:
        if any(s in mha for s in op.scope):
            continue
        core = _core(op, producer, consumers)
        if core is None:
            continue
        cores += 1
        _add(sites, lambda: _site(model, core, producer, consumers, calls, heads),
             any(_ignored(s, ignore) for s in op.scope))
    names = [s.name for s in sites]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise UnsupportedModelError(f"{twice}: holds two attentions; one attention per module is supported "
                                    "(keep it as it is with ignore=[module])")
    return sites, cores


def _add(sites: list[AttentionSite], make: Any, ignored: bool) -> None:
    """Recognise one attention; inside a module the user keeps as it is (`ignore=`), one that cannot be slimmed is
    left to the generic rules (its widths stay) instead of refused."""
    try:
        sites.append(make())
    except UnsupportedModelError:
        if not ignored:
            raise


def _ignored(name: str, ignore: set[str] | frozenset) -> bool:
    return any(name == i or name.startswith(i + ".") for i in ignore)


_LINEAR, _OPAQUE = LinearHandler(), OpaqueHandler()


def _discovery_atomic(name: str, module: nn.Module) -> Any:
    """While looking for attention: Linears are operations (q, k, v come from them), other layers are opaque."""
    if isinstance(module, nn.Linear):
        return _LINEAR
    if isinstance(module, nn.MultiheadAttention):
        return None
    return None if handler_for_module(module) is None else _OPAQUE


# ---- the core ------------------------------------------------------------------------------------

def _core(op: OpRecord, producer: dict[int, OpRecord], consumers: dict[int, list[OpRecord]]) -> Core | None:
    if op.module is not None:
        return None
    if op.func_name == SDPA and len(op.inputs) >= 3:
        args, kwargs = op.arguments.fill(op.inputs)
        mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
        causal = bool(args[5] if len(args) > 5 else kwargs.get("is_causal", False))
        scale = kwargs.get("scale")
        q = op.inputs[0]
        scale = float(scale) if scale is not None else q.shape[-1] ** -0.5
        dropout = float(args[4] if len(args) > 4 else kwargs.get("dropout_p", 0.0))
        k, v = op.inputs[1], op.inputs[2]
        if q.value is None or k.value is None or v.value is None:
            return None
        return Core(op.name, op.scope, {"q": q, "k": k, "v": v}, {"q": q.value, "k": k.value, "v": v.value},
                    op.output, scale, mask is None and not causal, dropout)
    if op.func_name not in SOFTMAX or len(op.inputs[0].shape) < 3:
        return None
    scores = op.inputs[0]
    found = _back_to_matmul(scores, producer)
    if found is None:
        return None
    mm, a, b = found
    pv = _forward_to_matmul(op.output, consumers)
    if pv is None:
        return None
    pv_op, dropout = pv
    v = pv_op.inputs[1]
    if a.value is None or b.value is None or v.value is None or scores.value is None or mm.output.value is None:
        return None
    product = mm.output.value.double().reshape(-1)
    z = scores.value.double().reshape(-1)
    plain = False
    scale = None
    if product.numel() == z.numel():
        c = float((z * product).sum() / (product * product).sum().clamp_min(1e-300))
        plain = bool((z - c * product).norm() <= 1e-5 * z.norm().clamp_min(1e-30))
        scale = c
    return Core(op.name, op.scope, {"q": a, "k": b, "v": v},
                {"q": a.value, "k": b.value.transpose(-1, -2), "v": v.value}, pv_op.output, scale, plain, dropout)


def _back_to_matmul(scores: TensorInfo, producer: dict[int, OpRecord]) -> tuple[OpRecord, TensorInfo,
                                                                                TensorInfo] | None:
    """The product q @ k^T the scores come from (through scaling, biases, masks and reshapes)."""
    frontier, seen = [scores], 0
    while frontier and seen < 24:
        t = frontier.pop(0)
        seen += 1
        op = producer.get(id(t))
        if op is None or op.module is not None and not _mixes_heads(op):
            continue
        if op.func_name in MATMULS and len(op.inputs) == 2 and all(len(x.shape) >= 3 for x in op.inputs) and \
                op.output.shape[-2:] == scores.shape[-2:]:
            return op, op.inputs[0], op.inputs[1]
        frontier.extend(x for x in op.inputs if x.kind == "op")
    return None


def _forward_to_matmul(probs: TensorInfo, consumers: dict[int, list[OpRecord]]) -> tuple[OpRecord, float] | None:
    """The product probs @ v, through dropout and dtype changes."""
    t, dropout = probs, 0.0
    for _ in range(6):
        users = consumers.get(id(t), [])
        if len(users) != 1:
            return None
        op = users[0]
        if op.module is not None:
            if not _mixes_heads(op):
                return None
            t = op.output
            continue
        if op.func_name in MATMULS and len(op.inputs) == 2 and op.inputs[0] is t:
            return op, dropout
        if op.func_name not in PASS_THROUGH and not (op.func_name in PERMUTES and len(op.inputs) == 1):
            return None
        if op.func_name == "dropout":
            args, kwargs = op.arguments.fill(op.inputs)
            dropout = float(args[1] if len(args) > 1 else kwargs.get("p", 0.5))
        t = op.output
    return None


def _source(info: TensorInfo, producer: dict[int, OpRecord]) -> tuple[str, OpRecord] | None:
    """The Linear (module or `F.linear` with a module's weight) an activation is a reshaped slice of."""
    t = info
    for _ in range(16):
        op = producer.get(id(t))
        if op is None:
            return None
        if op.module is not None:
            return (op.name, op) if isinstance(op.module, nn.Linear) else None
        if op.func_name == "linear" and len(op.inputs) >= 2 and op.inputs[1].kind == "param":
            return op.inputs[1].param.rpartition(".")[0], op
        moving = [x for x in op.inputs if x.kind == "op"]
        if len(moving) != 1:
            return None
        t = moving[0]
    return None


def _sink(context: TensorInfo, consumers: dict[int, list[OpRecord]]) -> tuple[str, OpRecord] | None:
    """The Linear that reads the (reshaped) attention output: the output projection."""
    t = context
    for _ in range(12):
        users = consumers.get(id(t), [])
        if len(users) != 1:
            return None
        op = users[0]
        if op.module is not None:
            return (op.name, op) if isinstance(op.module, nn.Linear) else None
        if op.func_name == "linear" and len(op.inputs) >= 2 and op.inputs[1].kind == "param":
            return op.inputs[1].param.rpartition(".")[0], op
        if len(op.outputs) != 1:
            return None
        t = op.output
    return None


# ---- matching channels to weight rows ------------------------------------------------------------

def _match(part: torch.Tensor, full: torch.Tensor) -> tuple[np.ndarray, float] | None:
    """`part` is (groups, heads, tokens, per head); `full` is the Linear's output (..., features) over the same
    positions. Rows (heads, per head) of the feature holding each channel, and the common factor part/full."""
    groups, heads, tokens, per_head = part.shape
    features = full.shape[-1]
    flat = full.reshape(-1, features)
    if flat.shape[0] != groups * tokens:
        return None
    p = part.permute(1, 3, 0, 2).reshape(heads * per_head, -1).double()
    f = flat.t().double()
    pn = p / p.norm(dim=1, keepdim=True).clamp_min(1e-30)
    fn = f / f.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cos = pn @ fn.t()
    best = cos.argmax(dim=1)
    if not bool((cos.gather(1, best[:, None]) > 1 - 1e-6).all()) or len(set(best.tolist())) != len(best):
        return None
    chosen = f[best]
    factors = (p * chosen).sum(dim=1) / (chosen * chosen).sum(dim=1).clamp_min(1e-300)
    factor = float(factors.median())
    if not bool(((factors - factor).abs() <= 1e-4 * abs(factor)).all()) or factor == 0:
        return None
    return best.reshape(heads, per_head).cpu().numpy(), factor


def _split_heads(t: torch.Tensor, head_axis: int | None, heads: int | None) -> torch.Tensor | None:
    """View (..., tokens, per head) as (groups, heads, tokens, per head)."""
    lead = t.shape[:-2]
    if head_axis is None:                          # heads folded into the batch axis
        if heads is None or len(lead) != 1 or lead[0] % heads:
            return None
        return t.reshape(lead[0] // heads, heads, *t.shape[-2:])
    moved = t.movedim(head_axis, -3)
    return moved.reshape(-1, *moved.shape[-3:])


def _given_heads(names: list[str], heads: Mapping[str, int]) -> int | None:
    for n in sorted(names, key=len, reverse=True):
        if n in heads:
            return heads[n]
    return None


def _site(model: nn.Module, core: Core, producer: dict[int, OpRecord], consumers: dict[int, list[OpRecord]],
          calls: dict[str, list[ModuleCall]], heads: Mapping[str, int]) -> AttentionSite:
    where = core.scope[-1] if core.scope else "model"
    found = {w: _source(core.sources[w], producer) for w in ("q", "k", "v")}
    missing = [w for w, f in found.items() if f is None]
    if missing:
        raise UnsupportedModelError(
            f"{where}: an attention ({core.where}) whose {', '.join(missing)} does not come from a Linear layer; "
            "keep it as it is with ignore=[module]")
    out = _sink(core.context, consumers)
    if out is None:
        raise UnsupportedModelError(f"{where}: the output of the attention ({core.where}) does not go to one "
                                    "Linear layer (an output projection); keep it as it is with ignore=[module]")
    linears = [found["q"][0], found["k"][0], found["v"][0], out[0]]
    name = common_prefix(linears + [where])
    if not name or name in linears:
        raise UnsupportedModelError(f"{where}: the attention's projections {linears} are not inside one module; "
                                    "wrap the attention in its own module")
    chain = [s for s in core.scope if s == name or s.startswith(name + ".")] + [name]
    given = _given_heads(chain + [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)], heads)
    q = core.values["q"]
    if len(q.shape) == 3:
        if given is None:
            raise UnsupportedModelError(
                f"{name}: the attention scores are 3-D (heads folded into the batch axis), so the head count cannot "
                f"be read from the forward pass; pass heads={{model.{name}: count}} to build_spec")
        axes_to_try: list[int | None] = [None]
    else:
        axes_to_try = list(range(len(q.shape) - 3, -1, -1))
        if given is not None:
            axes_to_try = [a for a in axes_to_try if q.shape[a] == given]
            if not axes_to_try:
                raise UnsupportedModelError(f"{name}: heads={given} was given, but the attention's queries have shape "
                                            f"{tuple(q.shape)} with no axis of {given} heads")
    matched = None
    for axis in axes_to_try:
        parts = {w: _split_heads(core.values[w], axis, given) for w in ("q", "k", "v")}
        context = _split_heads(core.context.value, axis, given)
        if any(p is None for p in parts.values()) or context is None:
            continue
        if parts["q"].shape[0] * parts["q"].shape[2] != parts["k"].shape[0] * parts["k"].shape[2]:
            raise UnsupportedModelError(
                f"{name}: its queries cover {parts['q'].shape[2]} tokens and its keys {parts['k'].shape[2]} (class "
                "attention or cross-attention); keep it as it is with ignore=[module]")
        rows = {w: _match(parts[w], found[w][1].output.value) for w in ("q", "k", "v")}
        cols = _match(context, out[1].inputs[0].value)
        if all(r is not None for r in rows.values()) and cols is not None:
            matched = (parts, rows, cols)
            break
    if matched is None:
        raise UnsupportedModelError(
            f"{name}: the attention's queries, keys and values cannot be matched to rows of its Linear layers "
            f"(shape {tuple(q.shape)}); if the head count is not the axis before the tokens, pass heads={{module: "
            "count}, or keep it as it is with ignore=[module]")
    parts, rows, cols = matched
    call = calls.get(name, [])
    if len(call) != 1 or not call[0].inputs:
        raise UnsupportedModelError(f"{name}: the attention module must run exactly once per forward (ran "
                                    f"{len(call)} times)")
    call = call[0]
    x = call.inputs[0]
    read = [found[w][1].inputs[0] for w in ("q", "k", "v")]
    if not read[0] is read[1] is read[2]:
        raise UnsupportedModelError(
            f"{name}: queries, keys and values are projected from different tensors (cross-attention, or class "
            "attention whose queries come from one token); keep it as it is with ignore=[module]")
    if read[0].shape[-1] != x.shape[-1] or not x.shape or len(x.shape) < 2:
        raise UnsupportedModelError(f"{name}: its projections do not read its first input's channels (last axis); "
                                    "keep it as it is with ignore=[module]")
    n_heads, qk_dim = parts["q"].shape[1], parts["q"].shape[3]
    v_dim = parts["v"].shape[3]
    if parts["k"].shape[3] != qk_dim or parts["k"].shape[2] != parts["v"].shape[2]:
        raise UnsupportedModelError(f"{name}: queries and keys have different channels per head")
    if parts["q"].shape[2] != parts["k"].shape[2]:
        raise UnsupportedModelError(f"{name}: queries and keys have different token counts (not self-attention); "
                                    "keep it as it is with ignore=[module]")
    factors = {w: rows[w][1] for w in ("q", "k", "v")}
    site = AttentionSite(
        name=name, mode=REPLACE, heads=n_heads, qk_dim=qk_dim, v_dim=v_dim,
        q=Projection(found["q"][0], rows["q"][0], factors["q"]), k=Projection(found["k"][0], rows["k"][0], factors["k"]),
        v=Projection(found["v"][0], rows["v"][0], factors["v"]), o=Projection(out[0], cols[0], 1.0 / cols[1]),
        scale=core.scale if core.scale is not None else qk_dim ** -0.5, in_width=x.shape[-1],
        out_width=call.outputs[0].shape[-1], groups=parts["q"].shape[0], tokens=parts["q"].shape[2],
        input_shape=x.shape, dropout=core.dropout, returns=_returns(call, n_heads))
    if read[0] is x and core.plain and _reproduces(model, site, call):
        return site
    site.mode = IN_PLACE
    _prepare_in_place(model, site, call)
    return site


def _returns(call: ModuleCall, heads: int) -> Any:
    structure = call.returned
    if isinstance(structure, _Hole):
        return "tensor"
    if isinstance(structure, (tuple, list)):
        out = []
        for item in structure:
            if item is None:
                out.append(None)
            elif isinstance(item, _Hole) and item.index == 0:
                out.append("out")
            elif isinstance(item, _Hole):
                shape = call.outputs[item.index].shape
                out.append("probs" if len(shape) >= 4 and shape[-3] == heads else "mean_probs")
            else:
                return None
        return tuple(out)
    return None


def _run(module: nn.Module, call: ModuleCall, first: torch.Tensor | None = None) -> torch.Tensor:
    values = [t.value for t in call.inputs]
    if first is not None:
        values[0] = first
    args, kwargs = call.arguments.fill(values)
    with torch.no_grad():
        out = module(*args, **kwargs)
    return out if isinstance(out, torch.Tensor) else out[0]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= TOLERANCE * max(1.0, float(b.abs().max()))


def _reproduces(model: nn.Module, site: AttentionSite, call: ModuleCall) -> bool:
    if site.returns is None:
        return False
    keep = {"heads": torch.arange(site.heads), "qk_dim": torch.arange(site.qk_dim), "v_dim": torch.arange(site.v_dim)}
    new = evaluating(site.replacement(model, keep, torch.arange(site.in_width), torch.arange(site.out_width)))
    return _close(_run(new, call), call.outputs[0].value)


def _mha_site(model: nn.Module, name: str, call: list[ModuleCall], heads: Mapping[str, int]) -> AttentionSite:
    m = model.get_submodule(name)
    problems = []
    if not m._qkv_same_embed_dim:
        problems.append("kdim/vdim differ from embed_dim")
    if m.bias_k is not None:
        problems.append("add_bias_kv=True")
    if m.add_zero_attn:
        problems.append("add_zero_attn=True")
    if not m.batch_first:
        problems.append("batch_first=False")
    if len(call) != 1:
        problems.append(f"it runs {len(call)} times per forward")
    else:
        args, kwargs = call[0].arguments.fill(call[0].inputs)
        tensors = [a for a in args[:3]] + [kwargs.get(k) for k in ("query", "key", "value") if k in kwargs]
        if len({id(t) for t in tensors if t is not None}) != 1:
            problems.append("query, key and value are different tensors (cross-attention)")
        masks = [kwargs.get(k, args[i] if len(args) > i else None) for i, k in ((3, "key_padding_mask"),
                                                                                   (5, "attn_mask"))]
        if any(isinstance(x, TensorInfo) for x in masks) or kwargs.get("is_causal"):
            problems.append("a mask is passed")
    if problems:
        raise UnsupportedModelError(f"{name}: nn.MultiheadAttention with {', '.join(problems)} is not supported; "
                                    "use batch_first=True self-attention without masks or extra key/value biases, "
                                    "or keep it as it is with ignore=[module]")
    h, e = m.num_heads, m.embed_dim
    d = e // h
    if name in heads and heads[name] != h:
        raise UnsupportedModelError(f"{name}: heads={heads[name]} was given, but this nn.MultiheadAttention has {h}")
    call = call[0]
    return AttentionSite(
        name=name, mode=REPLACE, heads=h, qk_dim=d, v_dim=d,
        q=Projection(name, head_index(h, d)), k=Projection(name, head_index(h, d, e)),
        v=Projection(name, head_index(h, d, 2 * e)), o=Projection(f"{name}.out_proj", head_index(h, d)),
        scale=d ** -0.5, in_width=e, out_width=e, groups=int(np.prod(call.inputs[0].shape[:-2])),
        tokens=call.inputs[0].shape[-2], input_shape=call.inputs[0].shape, dropout=float(m.dropout),
        returns=_returns(call, h) or ("out", None))


# ---- in place ------------------------------------------------------------------------------------

def _prepare_in_place(model: nn.Module, site: AttentionSite, call: ModuleCall) -> None:
    """Find what slicing the module in place must also change, and try each dim on the recorded input."""
    module = model.get_submodule(site.name)
    prefix = site.name + "."
    h, d = site.heads, site.qk_dim
    if site.v_dim != d:
        site.pinned["heads"] = site.pinned["head_dim"] = (
            f"{site.name}: q/k and v have different channels per head in an attention that is sliced in place")
        return
    linears = {getattr(site, w).module for w in ("q", "k", "v", "o")}
    for lin_name in {getattr(site, w).module for w in ("q", "k", "v")}:
        used = np.concatenate([getattr(site, w).index.reshape(-1) for w in ("q", "k", "v")
                               if getattr(site, w).module == lin_name])
        if len(used) != model.get_submodule(lin_name).out_features:
            site.pinned["heads"] = site.pinned["head_dim"] = f"{lin_name}: has outputs that are not q, k or v"
            return
    for pname, p in module.named_parameters():
        full = prefix + pname
        if any(full.startswith(lin + ".") for lin in linears):
            continue
        axes = [a for a, size in enumerate(p.shape) if size == h]
        if len(axes) == 1 and h > 1:
            site.head_params.append((full, axes[0]))
        elif len(axes) > 1:
            site.pinned["heads"] = f"{full}: more than one axis of {h} (the head count); cannot tell which to slice"
    roles: dict[int, list[str]] = {}
    for value, role in ((h, "heads"), (d, "head_dim"), (h * d, "inner")):
        roles.setdefault(value, []).append(role)
    candidates = []
    for mod_name, mod in module.named_modules():
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
            continue
        for attr, value in vars(mod).items():
            if not attr.startswith("_") and attr != "training" and type(value) is int and value in roles:
                owner = f"{prefix}{mod_name}".rstrip(".")
                candidates += [(owner, attr, role) for role in roles[value]]
    handler = SiteHandler(site, model)
    x = call.inputs[0].value
    every = {"heads": torch.arange(h), "head_dim": torch.arange(d)}
    fewer_heads = dict(every, heads=torch.arange(h - 1))
    fewer_channels = dict(every, head_dim=torch.arange(d - 1))
    expected = _without_last_head(module, site, call) if h > 1 and "heads" not in site.pinned else None

    def heads_ok() -> bool:
        return expected is None or _tried(handler, module, fewer_heads, site, call, x.shape[-1], expected)

    def channels_ok() -> bool:
        return d == 1 or _tried(handler, module, fewer_channels, site, call, x.shape[-1], None)

    # which integer attributes the forward reads: the largest set (of those equal to the head count, the head
    # dim or their product, one role each) with which the slimmed module computes the model without a head
    best, heads_only = None, None
    for subset in _subsets(candidates):
        site.attributes = subset
        if heads_ok():
            heads_only = heads_only if heads_only is not None else subset
            if channels_ok():
                best = subset
                break
    site.attributes = best if best is not None else heads_only if heads_only is not None else []
    if best is None and heads_only is None and "heads" not in site.pinned and h > 1:
        site.pinned["heads"] = (f"{site.name}: sliced in place without its last head, it does not compute the "
                                "model without that head (a per-head parameter or attribute it did not find)")
    if best is None and "head_dim" not in site.pinned and d > 1:
        site.pinned["head_dim"] = f"{site.name}: does not run with fewer channels per head when sliced in place"
    if x.shape[-1] > 1 and not _tried(handler, module, every, site, call, x.shape[-1] - 1, None):
        site.pinned["embed"] = f"{site.name}: does not run with a narrower input when sliced in place"


def _subsets(candidates: list[tuple[str, str, str]]) -> list[list[tuple[str, str, str]]]:
    """Candidate attribute sets, largest first, each attribute with one role (at most 6 candidates tried)."""
    candidates = candidates[:6]
    out = []
    for size in range(len(candidates), -1, -1):
        for combo in itertools.combinations(candidates, size):
            keys = [(o, a) for o, a, _ in combo]
            if len(set(keys)) == len(keys):
                out.append(list(combo))
    return out


def _without_last_head(module: nn.Module, site: AttentionSite, call: ModuleCall) -> torch.Tensor:
    """The module's output with the last head's contribution removed (its output-projection columns zeroed)."""
    copy_ = _copy(module)
    o = copy_.get_submodule(site.o.module[len(site.name) + 1:])
    with torch.no_grad():
        o.weight[:, torch.as_tensor(site.o.index[-1])] = 0
    return _run(copy_, call)


def _copy(module: nn.Module) -> nn.Module:
    return evaluating(copy.deepcopy(module))


def _tried(handler: SiteHandler, module: nn.Module, keep: dict[str, torch.Tensor], site: AttentionSite,
           call: ModuleCall, width: int, expected: torch.Tensor | None) -> bool:
    """Slice a copy of the module to `keep` (and `width` embedding channels), run it on the recorded input."""
    try:
        small = handler.slimmed(module, keep, torch.arange(width), torch.arange(site.out_width if width ==
                                                                                  site.in_width else width))
        x = call.inputs[0].value[..., :width]
        out = _run(evaluating(small), call, x)
    except (RuntimeError, ValueError, IndexError, TypeError):
        return False
    if expected is not None:
        return _close(out, expected)
    return out.shape[:-1] == call.outputs[0].shape[:-1] and bool(torch.isfinite(out).all())

