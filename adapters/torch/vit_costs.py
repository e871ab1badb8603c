"""Cost tables of a ViT: exact `flops` (multiply-accumulates) and `params`, and measured latency workloads.

Every block contributes three terms, each gated by the sub-block it belongs to:
- attention q/k side over (embed, heads, q/k dim): norm1, the q and k projections,
  the scores `q k^T` and their softmax;
- attention v side over (embed, heads, v dim): the v projection, `probs @ v`, the output
  projection and the residual add;
- MLP over (embed, MLP hidden): norm2, fc1, activation, fc2 and the residual add.
Everything outside the blocks (patch embedding, tokens, final norm, head) is one
ungated term over the embedding. `flops` counts the multiply-accumulates of every
Linear, Conv2d and attention matmul (what `torch.utils.flop_counter` reports, halved),
like the CNN adapter; elementwise work (norms, softmax, adds) is not counted.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .handlers import Workload
from .vit_modules import PrunedAttention
from .vit_slim import BlockKeep, slim_outside
from .vit_structure import BlockSite, ViTStructure

PARTS = ("attn_qk", "attn_v", "mlp")


@dataclass(frozen=True)
class Grid:
    """Choice values (kept counts) of the dims one term ranges over, in the term's order."""

    embed: np.ndarray
    width2: np.ndarray | None = None   # heads (attention) or MLP hidden
    width3: np.ndarray | None = None   # q/k or v dim per head


def _per_channel_params(model: nn.Module, names: tuple[str, ...], embed: int) -> int:
    return sum(p.numel() for n in names for p in model.get_submodule(n).parameters()) // embed


def block_tables(site: BlockSite, model: nn.Module, structure: ViTStructure, part: str, grid: Grid
                 ) -> dict[str, np.ndarray]:
    """`flops` and `params` tables of one block part over its grid (broadcast to the grid's shape)."""
    rows = structure.batch * structure.tokens
    pairs = structure.batch * structure.tokens ** 2
    if part == "mlp":
        e, m = grid.embed[:, None], grid.width2[None, :]
        fc1, fc2 = model.get_submodule(site.fc1), model.get_submodule(site.fc2)
        norm = _per_channel_params(model, (site.norm2,), structure.embed_dim)
        flops = 2 * rows * e * m
        params = 2 * e * m + (m if fc1.bias is not None else 0) + (e if fc2.bias is not None else 0) + norm * e
        return _tables(flops, params)
    e, h, d = grid.embed[:, None, None], grid.width2[None, :, None], grid.width3[None, None, :]
    if part == "attn_qk":
        norm = _per_channel_params(model, (site.norm1,), structure.embed_dim)
        flops = 2 * rows * e * h * d + pairs * h * d
        params = 2 * e * h * d + (2 * h * d if site.qkv_bias else 0) + norm * e
    elif part == "attn_v":
        flops = 2 * rows * e * h * d + pairs * h * d
        params = 2 * e * h * d + (h * d if site.qkv_bias else 0) + (e if site.proj_bias else 0)
    else:
        raise ValueError(f"part: expected one of {PARTS}, got {part!r}")
    return _tables(flops, params)


def outside_tables(model: nn.Module, structure: ViTStructure, embed: np.ndarray) -> dict[str, np.ndarray]:
    """`flops` and `params` of everything outside the blocks, over the embedding choices."""
    e = structure.embed_dim
    coupled = structure.patch_embeds + structure.norms
    per_channel = _per_channel_params(model, coupled, e)
    per_channel += sum(model.get_parameter(n).numel() for n in structure.token_params) // e
    per_channel += sum(model.get_submodule(n).weight.numel() for n in structure.heads) // e
    blocks = sum(p.numel() for s in structure.blocks for p in model.get_submodule(s.name).parameters())
    total = sum(p.numel() for p in model.parameters())
    fixed = total - blocks - per_channel * e
    return _tables(structure.outside_macs_per_channel * embed + structure.outside_macs_fixed,
                   per_channel * embed + fixed)


def _tables(flops: np.ndarray, params: np.ndarray) -> dict[str, np.ndarray]:
    shape = np.broadcast_shapes(np.shape(flops), np.shape(params))
    return {"flops": np.broadcast_to(flops, shape).astype(np.float64),
            "params": np.broadcast_to(params, shape).astype(np.float64)}


# ---- measured latency --------------------------------------------------------------------------

def _norm_like(model: nn.Module, name: str, width: int) -> nn.Module:
    norm = model.get_submodule(name)
    return nn.LayerNorm(width, eps=norm.eps, elementwise_affine=norm.weight is not None, bias=norm.bias is not None)


def _mlp_like(model: nn.Module, site: BlockSite, embed: int, hidden: int) -> nn.Module:
    mlp = copy.deepcopy(model.get_submodule(site.mlp))
    for name, shape in ((site.fc1, (embed, hidden)), (site.fc2, (hidden, embed))):
        old = model.get_submodule(name)
        parent, _, attr = name[len(site.mlp) + 1:].rpartition(".")
        setattr(mlp.get_submodule(parent) if parent else mlp, attr, nn.Linear(*shape, bias=old.bias is not None))
    return mlp


def block_workload(site: BlockSite, model: nn.Module, structure: ViTStructure, part: str,
                   widths: tuple[int, ...]) -> Workload:
    """A runnable stand-in of one block part at the given widths (embed, heads or hidden[, head dim])."""
    b, n = structure.batch, structure.tokens
    tables = block_tables(site, model, structure, part,
                          Grid(*(np.array([w]) for w in widths)))
    macs, params = int(tables["flops"].item()), int(tables["params"].item())
    norm_name = site.norm2 if part == "mlp" else site.norm1
    norm = model.get_submodule(norm_name)
    key = (f"vit.{part}|{widths}|tokens{n}|{type(norm).__name__}(eps={norm.eps})"
           f"|bias{int(site.qkv_bias)}{int(site.proj_bias)}")
    if part == "mlp":
        key += f"|{model.get_submodule(site.mlp)!r}"

    def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
        x = torch.randn(b, n, widths[0], device=device, dtype=dtype)
        if part == "mlp":
            ln, mlp = (m.to(device=device, dtype=dtype).eval()
                       for m in (_norm_like(model, norm_name, widths[0]), _mlp_like(model, site, *widths)))
            return (lambda x: x + mlp(ln(x))), [x]
        e, h, d = widths
        attn = PrunedAttention(e, h, d, d, site.scale, site.qkv_bias, site.proj_bias).to(device=device, dtype=dtype)
        if part == "attn_qk":
            ln = _norm_like(model, norm_name, e).to(device=device, dtype=dtype)
            return (lambda x: attn.attention_probs(ln(x))), [x]
        probs = torch.rand(b, h, n, n, device=device, dtype=dtype).softmax(dim=-1)
        return (lambda x, p: x + attn.attend(x, p)), [x, probs]

    return Workload(key, macs, params, setup)


def outside_workload(shell: nn.Module, structure: ViTStructure, example_input: torch.Tensor, embed: int
                     ) -> Workload:
    """The model with every block removed (`shell`), slimmed to `embed` channels, on the example input."""
    tables = outside_tables(shell, structure, np.array([embed]))
    digest = hashlib.sha1(repr(shell).encode()).hexdigest()[:12]
    key = f"vit.outside|{type(shell).__name__}-{digest}|embed{embed}|input{tuple(example_input.shape)}"

    def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
        small = slim_outside(copy.deepcopy(shell), structure, torch.arange(embed)).to(device=device, dtype=dtype)
        return small.eval(), [example_input.to(device=device, dtype=dtype)]

    return Workload(key, int(tables["flops"].item()), int(tables["params"].item()), setup)


def removed_everywhere(structure: ViTStructure) -> dict[str, BlockKeep]:
    empty = torch.arange(0)
    return {s.name: BlockKeep(False, False, empty, empty, empty, empty) for s in structure.blocks}
