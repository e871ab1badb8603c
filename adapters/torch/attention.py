"""A recognised attention (`AttentionSite`): its dims, cost parts, slicing and Taylor scores.

A site is one module computing self-attention from projections of its first input
(see `attention_find` for how it is recognised from the weights and one forward pass).
Its projections are described by the rows of their Linear weights that hold each
(head, channel) of q, k and v, and the columns of the output projection that read each
(head, channel) of the attention output, whatever the layout (fused qkv, separate
q/k/v Linears, `nn.MultiheadAttention`'s in_proj).

Two ways to slim it:
- "replace" (a plain attention: softmax(scale * q k^T) v, verified on the example): `apply`
  puts a `PrunedAttention` in its place; dims are heads, q/k dim and v dim per head.
- "in place" (anything the plain formula does not reproduce: window attention with a
  relative position table and masks, ...): the module keeps its own forward; `apply` slices
  its projections, the parameters with a heads axis (relative position tables), and rewrites
  the integer attributes equal to the head count, the head dim and their product. Dims are
  heads and one head dim shared by q, k and v (its forward reshapes them alike). Each is
  tried on the example input while recognising; one that fails is pinned, with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .handlers import LayerHandler, Sizes, Workload, _channel_layout, _random
from .layout import Layout, Segment
from .modules import PrunedAttention, evaluating
from .slicing import set_tensor
from .trace import OpRecord, TraceContext

REPLACE, IN_PLACE = "replace", "in place"


@dataclass
class Projection:
    """Linear `module` (weight rows or columns `index`, shape (heads, per head)); the attention read `factor`
    times those outputs (a scale folded into q, for instance)."""

    module: str
    index: np.ndarray
    factor: float = 1.0


@dataclass
class AttentionSite:
    name: str
    mode: str
    heads: int
    qk_dim: int
    v_dim: int
    q: Projection
    k: Projection
    v: Projection
    o: Projection
    scale: float
    in_width: int
    out_width: int
    groups: int                  # batch x windows: the leading axes of the attention
    tokens: int                  # query (= key) tokens
    input_shape: tuple[int, ...]
    dropout: float = 0.0
    returns: Any = "tensor"
    head_params: list[tuple[str, int]] = field(default_factory=list)      # (parameter, axis) with a heads axis
    attributes: list[tuple[str, str, str]] = field(default_factory=list)  # (module, attribute, heads|head_dim|inner)
    pinned: dict[str, str] = field(default_factory=dict)                  # kind -> why it keeps its width

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("heads", "qk_dim", "v_dim") if self.mode == REPLACE else ("heads", "head_dim")

    def width(self, kind: str) -> int:
        return {"heads": self.heads, "qk_dim": self.qk_dim, "v_dim": self.v_dim, "head_dim": self.qk_dim}[kind]

    def linear(self, model: nn.Module, which: str) -> nn.Module:
        return model.get_submodule(getattr(self, which).module)

    def weights(self, model: nn.Module, which: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias of the Linear behind q, k, v or o (`nn.MultiheadAttention`: its in_proj)."""
        m = self.linear(model, which)
        if isinstance(m, nn.MultiheadAttention):
            return m.in_proj_weight, m.in_proj_bias
        return m.weight, m.bias

    # ---- weights -------------------------------------------------------------------------------
    def tensors(self, model: nn.Module, value: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.detach
                ) -> dict[str, torch.Tensor | None]:
        """Weights (and biases) of q, k, v as (heads, per head, in) / (heads, per head), and of the output
        projection as (out, heads, per head), each passed through `value` (a factor folded in)."""
        out: dict[str, torch.Tensor | None] = {}
        for which in ("q", "k", "v"):
            p = getattr(self, which)
            weight, bias = self.weights(model, which)
            idx = torch.as_tensor(p.index, device=weight.device)
            out[f"{which}_w"] = value(weight)[idx] * p.factor
            out[f"{which}_b"] = None if bias is None else value(bias)[idx] * p.factor
        weight, bias = self.weights(model, "o")
        idx = torch.as_tensor(self.o.index, device=weight.device)
        out["o_w"] = value(weight)[:, idx] * self.o.factor
        out["o_b"] = None if bias is None else value(bias)
        return out

    def replacement(self, model: nn.Module, keep: dict[str, torch.Tensor], embed_in: torch.Tensor,
                    embed_out: torch.Tensor) -> PrunedAttention:
        """A `PrunedAttention` with the kept heads, channels per head and embedding channels."""
        t = self.tensors(model)
        device, dtype = t["q_w"].device, t["q_w"].dtype
        h, qk, v = (keep[k].to(device) for k in ("heads", "qk_dim", "v_dim"))
        e_in, e_out = embed_in.to(device), embed_out.to(device)

        def rows(w: torch.Tensor, ch: torch.Tensor) -> torch.Tensor:
            return w.index_select(0, h).index_select(1, ch).index_select(2, e_in).reshape(-1, len(e_in))

        def bias(b: torch.Tensor, ch: torch.Tensor) -> torch.Tensor:
            return b.index_select(0, h).index_select(1, ch).reshape(-1)

        new = PrunedAttention(len(e_in), len(h), len(qk), len(v), self.scale, bias=t["q_b"] is not None,
                              proj_bias=t["o_b"] is not None, dropout=self.dropout, out_dim=len(e_out),
                              returns=self.returns).to(device=device, dtype=dtype)
        o_w = t["o_w"].index_select(0, e_out).index_select(1, h).index_select(2, v)
        with torch.no_grad():
            new.qk.weight.copy_(torch.cat([rows(t["q_w"], qk), rows(t["k_w"], qk)]))
            new.v.weight.copy_(rows(t["v_w"], v))
            new.proj.weight.copy_(o_w.reshape(len(e_out), -1))
            if t["q_b"] is not None:
                new.qk.bias.copy_(torch.cat([bias(t["q_b"], qk), bias(t["k_b"], qk)]))
                new.v.bias.copy_(bias(t["v_b"], v))
            if t["o_b"] is not None:
                new.proj.bias.copy_(t["o_b"].index_select(0, e_out))
        return new

    def slice_in_place(self, module: nn.Module, keep: dict[str, torch.Tensor]) -> None:
        """Slice the heads and head channels of this site's module (a copy inside the slimmed model) in place."""
        heads, dim = keep["heads"], keep["head_dim"]
        prefix = self.name + "."
        rows_of: dict[str, list[np.ndarray]] = {}
        for which in ("q", "k", "v"):
            p = getattr(self, which)
            rows_of.setdefault(p.module, []).append(p.index[heads.numpy()][:, dim.numpy()].reshape(-1))
        for lin_name, parts in rows_of.items():
            self._linear_rows(module.get_submodule(lin_name[len(prefix):]),
                              torch.as_tensor(np.sort(np.concatenate(parts))))
        o = module.get_submodule(self.o.module[len(prefix):])
        idx = torch.as_tensor(np.sort(self.o.index[heads.numpy()][:, dim.numpy()].reshape(-1)), device=o.weight.device)
        set_tensor(o, "weight", o.weight.detach().index_select(1, idx).clone(), o.weight)
        o.in_features = len(idx)
        for pname, axis in self.head_params:
            owner, _, attr = pname[len(prefix):].rpartition(".")
            holder = module.get_submodule(owner) if owner else module
            old = getattr(holder, attr)
            set_tensor(holder, attr, old.detach().index_select(axis, heads.to(old.device)).clone(), old)
        values = {"heads": len(heads), "head_dim": len(dim), "inner": len(heads) * len(dim)}
        for owner, attr, role in self.attributes:
            holder = module.get_submodule(owner[len(prefix):]) if owner != self.name else module
            setattr(holder, attr, values[role])

    @staticmethod
    def _linear_rows(lin: nn.Linear, rows: torch.Tensor) -> None:
        rows = rows.to(lin.weight.device)
        set_tensor(lin, "weight", lin.weight.detach().index_select(0, rows).clone(), lin.weight)
        if lin.bias is not None:
            set_tensor(lin, "bias", lin.bias.detach().index_select(0, rows).clone(), lin.bias)
        lin.out_features = len(rows)

    # ---- costs -----------------------------------------------------------------------------------
    def macs(self, part: str, e_in: int, h: int, d: int, e_out: int) -> int:
        rows, pairs = self.groups * self.tokens, self.groups * self.tokens ** 2
        if part == "qk":
            return 2 * rows * e_in * h * d + pairs * h * d
        if part == "v":
            return rows * e_in * h * d + pairs * h * d + rows * h * d * e_out
        return 3 * rows * e_in * h * d + 2 * pairs * h * d + rows * h * d * e_out

    def params(self, model: nn.Module, part: str, e_in: int, h: int, d: int, e_out: int) -> int:
        """Parameters of the site (or of one side of a replaced site) at these widths."""
        def linear(which: str, rows: int) -> int:
            return rows * e_in + (rows if self.weights(model, which)[1] is not None else 0)

        out_side = h * d * e_out + (e_out if self.weights(model, "o")[1] is not None else 0)
        if part == "qk":
            return linear("q", h * d) + linear("k", h * d)
        if part == "v":
            return linear("v", h * d) + out_side
        extra = 0
        site = model.get_submodule(self.name)
        linears = {self.q.module, self.k.module, self.v.module, self.o.module}
        heads_axis = dict(self.head_params)
        for pname, p in site.named_parameters():
            full = f"{self.name}.{pname}"
            if any(full.startswith(m + ".") for m in linears):
                continue
            extra += p.numel() // self.heads * h if full in heads_axis else p.numel()
        return linear("q", h * d) + linear("k", h * d) + linear("v", h * d) + out_side + extra


class SiteHandler(LayerHandler):
    """The trace rules of one attention site: it reads its input's channels, makes its own dims and writes a
    new space on the last axis (merged with the residual stream by the add that follows)."""

    def __init__(self, site: AttentionSite, model: nn.Module) -> None:
        self.site = site
        self.model = model
        self.spaces: dict[str, int] = {}
        self.out_space: int | None = None
        self.first_input: Layout = ()

    def propagate(self, op: OpRecord, ctx: TraceContext) -> None:
        site = self.site
        inp = _channel_layout(op, ctx, op.inputs[0], -1, "the attention")
        if self.spaces:
            ctx.unify(self.first_input, inp, f"{op.name} (called again)")
        else:
            self.first_input = inp
            for kind in site.kinds:
                self.spaces[kind] = ctx.new_space(site.width(kind), op.name, kind)
                if kind in site.pinned:
                    ctx.spaces.pin_space(self.spaces[kind], site.pinned[kind])
            self.out_space = ctx.new_space(site.out_width, op.name)
        out: Layout = (Segment(self.out_space, site.out_width),)
        if "embed" in site.pinned:
            ctx.pin(inp, site.pinned["embed"])
            ctx.pin(out, site.pinned["embed"])
        if site.mode == IN_PLACE:
            for which in ("q", "k", "v"):
                ctx.slot(getattr(site, which).module, "weight", 1, inp)
            ctx.slot(site.o.module, "weight", 0, out)
            if op.module.get_submodule(site.o.module[len(site.name) + 1:]).bias is not None:
                ctx.slot(site.o.module, "bias", 0, out)
        main = op.outputs[0]
        main.axis, main.layout = len(main.shape) - 1, out

    def layout(self, kind: str) -> Layout:
        return (Segment(self.spaces[kind], self.site.width(kind)),)

    def _widths(self, op: OpRecord, sizes: Sizes) -> tuple[int, int, int, int, int]:
        s = self.site
        e_in = sizes.width(op.inputs[0].layout, s.in_width) if op.inputs[0].axis in (None, len(op.inputs[0].shape) - 1) \
            else s.in_width
        e_out = sizes.width(op.output.layout, s.out_width)
        h = sizes.width(self.layout("heads"))
        if s.mode == REPLACE:
            return e_in, h, sizes.width(self.layout("qk_dim")), sizes.width(self.layout("v_dim")), e_out
        d = sizes.width(self.layout("head_dim"))
        return e_in, h, d, d, e_out

    def parts(self, op: OpRecord, sizes: Sizes) -> list[tuple[tuple[str, ...], Callable[[Sizes], Workload]]]:
        """The cost parts of the site: q/k side and v side when replaced, the whole module when sliced in place."""
        lay_in, lay_out = op.inputs[0].layout, op.output.layout
        heads = self.layout("heads")
        if self.site.mode == REPLACE:
            return [(sizes.dims(lay_in, heads, self.layout("qk_dim")), lambda s: self._workload(op, s, "qk")),
                    (sizes.dims(lay_in, heads, self.layout("v_dim"), lay_out), lambda s: self._workload(op, s, "v"))]
        return [(sizes.dims(lay_in, heads, self.layout("head_dim"), lay_out), lambda s: self._workload(op, s, "all"))]

    def labels(self, op: OpRecord, sizes: Sizes) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for labels, _ in self.parts(op, sizes) for d in labels))

    def _workload(self, op: OpRecord, sizes: Sizes, part: str) -> Workload:
        s = self.site
        e_in, h, qk, v, e_out = self._widths(op, sizes)
        d = qk if part != "v" else v
        macs = s.macs(part, e_in, h, d, e_out)
        params = s.params(self.model, part, e_in, h, d, e_out) if op.first_call else 0
        x_shape = sizes.shape(op.inputs[0])
        written = _written(part, x_shape, h, qk, v, e_out)
        if s.mode == REPLACE:
            key = f"attention.{part}|e{e_in},h{h},d{d},o{e_out}|{x_shape}|bias{int(s.weights(self.model, 'q')[1] is not None)}"

            def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
                attn = PrunedAttention(e_in, h, qk if part == "qk" else 1, v if part == "v" else 1, s.scale,
                                       out_dim=e_out).to(device=device, dtype=dtype).eval()
                x = torch.randn(*x_shape, device=device, dtype=dtype)
                if part == "qk":
                    return attn.attention_probs, [x]
                probs = torch.rand(*x_shape[:-2], h, x_shape[-2], x_shape[-2], device=device,
                                   dtype=dtype).softmax(dim=-1)
                return attn.attend, [x, probs]
            return Workload(key, macs, params, setup, written)

        arguments = op.arguments
        keep = {"heads": torch.arange(h), "head_dim": torch.arange(d)}
        key = f"attention.in_place|{type(op.module).__name__}|e{e_in},h{h},d{d},o{e_out}|" \
              f"{[sizes.shape(t) for t in op.inputs]}|{arguments.constants}|{_digest(op.module)}"

        def setup_in_place(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
            module = evaluating(self.slimmed(op.module, keep, torch.arange(e_in), torch.arange(e_out)).to(
                device=device, dtype=dtype))

            def run(*tensors: torch.Tensor) -> Any:
                a, k = arguments.fill(tensors)
                return module(*a, **k)
            return run, [_random(t, sizes.shape(t), device, dtype) for t in op.inputs]
        return Workload(key, macs, params, setup_in_place, written)

    def slimmed(self, module: nn.Module, keep: dict[str, torch.Tensor], embed_in: torch.Tensor,
                embed_out: torch.Tensor) -> nn.Module:
        """A copy of the site's module (in-place mode) with these heads, head channels and embedding channels."""
        s = self.site
        new = copy.deepcopy(module)
        s.slice_in_place(new, keep)
        prefix = s.name + "."
        for which in ("q", "k", "v"):
            lin = new.get_submodule(getattr(s, which).module[len(prefix):])
            if lin.in_features != len(embed_in):
                set_tensor(lin, "weight", lin.weight.detach().index_select(1, embed_in.to(lin.weight.device)).clone(),
                           lin.weight)
                lin.in_features = len(embed_in)
        o = new.get_submodule(s.o.module[len(prefix):])
        if o.out_features != len(embed_out):
            idx = embed_out.to(o.weight.device)
            set_tensor(o, "weight", o.weight.detach().index_select(0, idx).clone(), o.weight)
            if o.bias is not None:
                set_tensor(o, "bias", o.bias.detach().index_select(0, idx).clone(), o.bias)
            o.out_features = len(embed_out)
        return new

    # ---- importance ------------------------------------------------------------------------------
    def taylor_parts(self, model: nn.Module, value: Callable[[torch.Tensor], torch.Tensor]
                     ) -> dict[str, list[torch.Tensor]]:
        """Per kind, per-layer contributions to square (MDP's criterion): heads -> (heads,), head channels ->
        (heads, per head) squared per head and summed over heads by the caller."""
        t = self.site.tensors(model, value)

        def rows(w: str, b: str) -> torch.Tensor:
            out = t[w].sum(dim=-1)
            return out + t[b] if t[b] is not None else out

        q, k, v = rows("q_w", "q_b"), rows("k_w", "k_b"), rows("v_w", "v_b")
        proj = t["o_w"].sum(dim=0)
        out = {"heads": [(q + k).sum(dim=1) + v.sum(dim=1), proj.sum(dim=1)]}   # q/k and v dims may differ
        if self.site.mode == REPLACE:
            out["qk_dim"] = [q + k]
            out["v_dim"] = [v, proj]
        else:
            out["head_dim"] = [q + k + v, proj]
        return out


def _digest(module: nn.Module) -> str:
    return hashlib.sha1(repr(module).encode()).hexdigest()[:10]


def head_index(heads: int, per_head: int, offset: int = 0) -> np.ndarray:
    """Head-major rows: row of (head h, channel j) is offset + h * per_head + j."""
    return offset + np.arange(heads * per_head).reshape(heads, per_head)


def _written(part: str, x_shape: Sequence[int], heads: int, qk: int, v: int, out: int) -> int:
    """Elements an attention part writes: queries, keys and the attention probabilities ("qk"); values, the
    attended values and the output ("v"); all of them ("all")."""
    tokens, n = math.prod(x_shape[:-1]), x_shape[-2]
    qk_side = 2 * tokens * heads * qk + tokens // n * heads * n * n
    v_side = 2 * tokens * heads * v + tokens * out
    return {"qk": qk_side, "v": v_side, "all": qk_side + v_side}[part]
