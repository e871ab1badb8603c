"""Physically slim a recognised ViT: a new model with the kept heads, head channels, MLP and embedding channels."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .vit_modules import PrunedAttention, PrunedBlock
from .vit_structure import BlockSite, ViTStructure, attention_tensors


@dataclass(frozen=True)
class BlockKeep:
    """What one block keeps: sub-block flags and sorted indices of kept heads / channels."""

    attn: bool
    mlp: bool
    heads: torch.Tensor
    qk: torch.Tensor
    v: torch.Tensor
    hidden: torch.Tensor


def keep_all(site: BlockSite) -> BlockKeep:
    def every(n: int) -> torch.Tensor:
        return torch.arange(n)

    return BlockKeep(True, True, every(site.num_heads), every(site.head_dim), every(site.head_dim),
                     every(site.mlp_hidden))


def _linear(layer: nn.Linear, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None) -> nn.Linear:
    w = layer.weight.detach()
    b = None if layer.bias is None else layer.bias.detach()
    if out_idx is not None:
        w = w.index_select(0, out_idx.to(w.device))
        b = None if b is None else b.index_select(0, out_idx.to(w.device))
    if in_idx is not None:
        w = w.index_select(1, in_idx.to(w.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def _layer_norm(norm: nn.LayerNorm, idx: torch.Tensor) -> nn.LayerNorm:
    w = norm.weight
    new = nn.LayerNorm(len(idx), eps=norm.eps, elementwise_affine=w is not None, bias=norm.bias is not None,
                       device=None if w is None else w.device, dtype=None if w is None else w.dtype)
    with torch.no_grad():
        if w is not None:
            new.weight.copy_(w.index_select(0, idx.to(w.device)))
        if norm.bias is not None:
            new.bias.copy_(norm.bias.index_select(0, idx.to(w.device)))
    return new


def _conv_out(conv: nn.Conv2d, idx: torch.Tensor) -> nn.Conv2d:
    if conv.groups != 1:
        raise ValueError(f"patch embedding: grouped Conv2d (groups={conv.groups}) cannot be slimmed")
    w = conv.weight.detach()
    new = nn.Conv2d(conv.in_channels, len(idx), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=conv.bias is not None, padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w.index_select(0, idx.to(w.device)))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.index_select(0, idx.to(w.device)))
    return new


def pruned_attention(module: nn.Module, site: BlockSite, keep: BlockKeep, embed_idx: torch.Tensor) -> PrunedAttention:
    """A `PrunedAttention` with the kept heads, q/k and v channels per head and embedding channels of `module`."""
    t = attention_tensors(module, site.layout)
    heads, dh = site.num_heads, site.head_dim
    device = t.q_w.device
    h_idx, e_idx = keep.heads.to(device), embed_idx.to(device)

    def rows(w: torch.Tensor, ch: torch.Tensor) -> torch.Tensor:
        w = w.reshape(heads, dh, -1).index_select(0, h_idx).index_select(1, ch.to(device))
        return w.index_select(2, e_idx).reshape(len(h_idx) * len(ch), len(e_idx))

    def bias(b: torch.Tensor, ch: torch.Tensor) -> torch.Tensor:
        return b.reshape(heads, dh).index_select(0, h_idx).index_select(1, ch.to(device)).reshape(-1)

    new = PrunedAttention(len(e_idx), len(h_idx), len(keep.qk), len(keep.v), site.scale, bias=site.qkv_bias,
                          proj_bias=site.proj_bias, dropout=site.dropout).to(device=device, dtype=t.q_w.dtype)
    o_w = t.o_w.reshape(-1, heads, dh).index_select(0, e_idx).index_select(1, h_idx).index_select(2, keep.v.to(device))
    with torch.no_grad():
        new.qk.weight.copy_(torch.cat([rows(t.q_w, keep.qk), rows(t.k_w, keep.qk)]))
        new.v.weight.copy_(rows(t.v_w, keep.v))
        new.proj.weight.copy_(o_w.reshape(len(e_idx), -1))
        if site.qkv_bias:
            new.qk.bias.copy_(torch.cat([bias(t.q_b, keep.qk), bias(t.k_b, keep.qk)]))
            new.v.bias.copy_(bias(t.v_b, keep.v))
        if site.proj_bias:
            new.proj.bias.copy_(t.o_b.index_select(0, e_idx))
    return new


def _set(model: nn.Module, name: str, value: nn.Module | nn.Parameter) -> None:
    """Replace the submodule or parameter `name`; a new module takes over the old one's training flag."""
    parent, _, attr = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = getattr(owner, attr)
    if isinstance(value, nn.Module) and isinstance(old, nn.Module):
        value.train(old.training)
    setattr(owner, attr, value)


def slim_block(model: nn.Module, site: BlockSite, keep: BlockKeep, embed_idx: torch.Tensor) -> nn.Module:
    """The replacement of one block (never modifies `model`): a `PrunedBlock`, or Identity when both parts go."""
    attn = norm1 = mlp = norm2 = None
    if keep.attn:
        norm1 = _layer_norm(model.get_submodule(site.norm1), embed_idx)
        attn = pruned_attention(model.get_submodule(site.attn), site, keep, embed_idx)
    if keep.mlp:
        norm2 = _layer_norm(model.get_submodule(site.norm2), embed_idx)
        mlp = copy.deepcopy(model.get_submodule(site.mlp))
        fc1, fc2 = model.get_submodule(site.fc1), model.get_submodule(site.fc2)
        _set(mlp, site.fc1[len(site.mlp) + 1:], _linear(fc1, out_idx=keep.hidden, in_idx=embed_idx))
        _set(mlp, site.fc2[len(site.mlp) + 1:], _linear(fc2, out_idx=embed_idx, in_idx=keep.hidden))
    if attn is None and mlp is None:
        return nn.Identity()
    return PrunedBlock(norm1, attn, norm2, mlp)


def slim_outside(model: nn.Module, structure: ViTStructure, embed_idx: torch.Tensor) -> nn.Module:
    """Slice, in place, every embedding-coupled layer and parameter outside the blocks to `embed_idx`."""
    for name in structure.patch_embeds:
        _set(model, name, _conv_out(model.get_submodule(name), embed_idx))
    for name in structure.norms:
        _set(model, name, _layer_norm(model.get_submodule(name), embed_idx))
    for name in structure.heads:
        _set(model, name, _linear(model.get_submodule(name), in_idx=embed_idx))
    for name in structure.token_params:
        p = model.get_parameter(name)
        _set(model, name, nn.Parameter(p.detach().index_select(-1, embed_idx.to(p.device)).clone(),
                                       requires_grad=p.requires_grad))
    for module_name, attr in structure.attributes:
        setattr(model.get_submodule(module_name) if module_name else model, attr, len(embed_idx))
    return model


def slim_model(model: nn.Module, structure: ViTStructure, keep: dict[str, BlockKeep],
               embed_idx: torch.Tensor) -> nn.Module:
    """A deep copy of `model` with every block replaced and every embedding-coupled layer sliced to `embed_idx`."""
    small = copy.deepcopy(model)
    for site in structure.blocks:
        _set(small, site.name, slim_block(model, site, keep[site.name], embed_idx))
    return slim_outside(small, structure, embed_idx)
