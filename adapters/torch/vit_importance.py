"""First-order Taylor importance of a ViT's heads, head channels, MLP channels and embedding channels.

MDP's criterion, as in the CNN adapter: per batch, for each unit and each layer it
touches, `(sum over the unit's parameters in that layer of weight * gradient)^2`; summed
over layers and batches. The layers of an attention are its q/k/v projection and its
output projection. Per unit:
- head h: its q, k, v rows and its columns of the output projection;
- q/k channel j: rows (h, j) of q and k, summed over heads (head dims shrink uniformly);
- v channel j: row (h, j) of v and column (h, j) of the output projection, summed over heads;
- MLP channel: its fc1 row and fc2 column;
- embedding channel: split into shares, one per sub-block (norm, the input columns of the
  sub-block's first layers, the output row of its last) and one for everything outside
  the blocks, so removing a sub-block removes exactly its share.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .vit_structure import ViTStructure, attention_tensors

OUTSIDE = ""   # share owner of the layers outside the blocks


def _sum_rows(t: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | float:
    """Sum each row of `t` viewed as `shape + (-1,)` (0 for a missing bias)."""
    if t is None:
        return 0.0
    return t.reshape(*shape, -1).sum(dim=-1)


def _block_contributions(model: nn.Module, structure: ViTStructure, value: Callable[[torch.Tensor], torch.Tensor]
                         ) -> dict[tuple[str, str], list[torch.Tensor]]:
    """(block, unit kind) -> per-layer contribution vectors (sums of weight * gradient) for one batch."""
    out: dict[tuple[str, str], list[torch.Tensor]] = {}
    for s in structure.blocks:
        h, dh = s.num_heads, s.head_dim
        t = attention_tensors(model.get_submodule(s.attn), s.layout, value)
        q, k, v = (_sum_rows(w, (h, dh)) + _sum_rows(b, (h, dh))
                   for w, b in ((t.q_w, t.q_b), (t.k_w, t.k_b), (t.v_w, t.v_b)))
        proj = t.o_w.reshape(-1, h, dh).sum(dim=0)                                   # (heads, head dim)
        out[(s.name, "heads")] = [(q + k + v).sum(dim=1), proj.sum(dim=1)]
        out[(s.name, "qk")] = [q + k]                                                   # squared per head below
        out[(s.name, "v")] = [v, proj]
        fc1, fc2 = model.get_submodule(s.fc1), model.get_submodule(s.fc2)
        out[(s.name, "hidden")] = [_sum_rows(value(fc1.weight), (fc1.out_features,)) + _sum_rows(
            None if fc1.bias is None else value(fc1.bias), (fc1.out_features,)), value(fc2.weight).sum(dim=0)]
        qkv_cols = (t.q_w + t.k_w + t.v_w).sum(dim=0)
        proj_rows = t.o_w.sum(dim=1) + (0.0 if t.o_b is None else t.o_b)
        out[(s.name, "embed_attn")] = [_norm_channels(model.get_submodule(s.norm1), value), qkv_cols, proj_rows]
        fc2_rows = value(fc2.weight).sum(dim=1) + (0.0 if fc2.bias is None else value(fc2.bias))
        out[(s.name, "embed_mlp")] = [_norm_channels(model.get_submodule(s.norm2), value),
                                      value(fc1.weight).sum(dim=0), fc2_rows]
    outside = []
    for n in structure.patch_embeds:
        conv = model.get_submodule(n)
        outside.append(_sum_rows(value(conv.weight), (conv.out_channels,))
                       + (0.0 if conv.bias is None else value(conv.bias)))
    for n in structure.token_params:
        p = value(model.get_parameter(n))
        outside.append(p.reshape(-1, p.shape[-1]).sum(dim=0))
    outside += [_norm_channels(model.get_submodule(n), value) for n in structure.norms]
    outside += [value(model.get_submodule(n).weight).sum(dim=0) for n in structure.heads]
    out[(OUTSIDE, "embed")] = outside
    return out


def _norm_channels(norm: nn.Module, value: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return sum(value(p) for p in norm.parameters())


def taylor_scores(model: nn.Module, structure: ViTStructure, data: Iterable[Any],
                  loss_fn: Callable[[Any, Any], torch.Tensor]) -> dict[tuple[str, str], np.ndarray]:
    """(block name, kind) -> per-unit Taylor scores; kinds: heads, qk, v, hidden, embed_attn, embed_mlp,
    and (OUTSIDE, "embed"). Uses `torch.autograd.grad`, so the model's `.grad` fields are left alone;
    parameters that do not require gradients contribute nothing."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: no parameter requires gradients, so Taylor importance cannot be computed; "
                         "give importance= instead")
    device = params[0].device
    totals: dict[tuple[str, str], torch.Tensor] = {}
    batches = 0
    for i, batch in enumerate(data):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError(f"data[{i}]: expected an (inputs, targets) pair, got {type(batch).__name__}")
        inputs, targets = (x.to(device) if isinstance(x, torch.Tensor) else x for x in batch)
        with torch.enable_grad():
            loss = loss_fn(model(inputs), targets)
            if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
                raise ValueError("loss_fn: must return a scalar tensor")
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        products = {id(p): p.detach() * g for p, g in zip(params, grads) if g is not None}

        def value(p: torch.Tensor) -> torch.Tensor:
            return products[id(p)] if id(p) in products else torch.zeros_like(p)

        with torch.no_grad():
            for key, parts in _block_contributions(model, structure, value).items():
                score = sum(part.double() ** 2 for part in parts)
                if key[1] in ("qk", "v"):
                    score = score.sum(dim=0)          # (heads, head dim) -> per head-dim channel
                totals[key] = totals.get(key, 0) + score
        batches += 1
    if batches == 0:
        raise ValueError("data: no batches; give at least one (inputs, targets) batch")
    return {k: t.cpu().numpy() for k, t in totals.items()}


def given_scores(structure: ViTStructure, importance: Mapping[str, Any], dim_names: Mapping[tuple[str, str], str]
                 ) -> dict[tuple[str, str], np.ndarray]:
    """User scores {dim name: per-unit scores} -> the layout of `taylor_scores` (embedding: outside share only)."""
    widths = {(OUTSIDE, "embed"): structure.embed_dim}
    for s in structure.blocks:
        widths.update({(s.name, "heads"): s.num_heads, (s.name, "qk"): s.head_dim, (s.name, "v"): s.head_dim,
                       (s.name, "hidden"): s.mlp_hidden})
    unknown = set(importance) - set(dim_names.values())
    if unknown:
        raise ValueError(f"importance: {sorted(unknown)[0]!r} is not a dim of this ViT; keys are dim names "
                         f"such as {sorted(dim_names.values())[:4]}")
    out: dict[tuple[str, str], np.ndarray] = {}
    for key, width in widths.items():
        name = dim_names[key]
        if name not in importance:
            raise ValueError(f"importance: no scores for dim {name!r}; give {width} scores for every dim")
        scores = importance[name]
        arr = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
        if arr.shape != (width,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"importance[{name!r}]: expected {width} finite scores, got shape {arr.shape}")
        out[key] = arr
    return out
