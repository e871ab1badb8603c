"""Modules `handle.apply` puts into a slimmed model.

`PrunedAttention` replaces a recognised plain self-attention (fused qkv, separate q/k/v
projections, or `nn.MultiheadAttention`): no library layout can express a q/k dim per head
different from the v dim per head. It has one Linear for queries and keys, one for values,
and the output projection, and keeps the original softmax scale, so a model that keeps
everything computes what the original computed. It is called like the module it replaces
and returns the same structure (a tensor, or a tuple with the output first).

`RemovedBranch` replaces the module of a removed residual branch (an attention or MLP half
of a transformer block): it returns zeros shaped like its input, so `x + branch(x)` is `x`.
`SkippedBlock` replaces a removed residual block that returned a tuple (Hugging Face layers
return `(hidden,)`); a block that returned a tensor becomes `nn.Identity`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def evaluating(module: nn.Module) -> nn.Module:
    """`module` switched to eval mode, returned: `module.eval()` returns what `module.train()` returns, and some
    models override `train()` without returning the module (timm's TinyViT attention returns None)."""
    module.eval()
    return module


class PrunedAttention(nn.Module):
    """Multi-head self-attention (batch first) with q/k dim per head `qk_dim` and v dim per head `v_dim`.

    `returns` describes the output of the module it replaced: "tensor", or a tuple of
    "out" / None / "probs" (per-head attention weights) / "mean_probs" (averaged over heads).
    """

    def __init__(self, embed_dim: int, num_heads: int, qk_dim: int, v_dim: int, scale: float,
                 bias: bool = True, proj_bias: bool = True, dropout: float = 0.0, out_dim: int | None = None,
                 returns: Any = "tensor") -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.out_dim = embed_dim if out_dim is None else out_dim
        self.num_heads = num_heads
        self.qk_dim = qk_dim
        self.v_dim = v_dim
        self.scale = scale
        self.dropout = dropout
        self.returns = returns
        self.qk = nn.Linear(embed_dim, 2 * num_heads * qk_dim, bias=bias)
        self.v = nn.Linear(embed_dim, num_heads * v_dim, bias=bias)
        self.proj = nn.Linear(num_heads * v_dim, self.out_dim, bias=proj_bias)

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T * scale), shape (..., heads, tokens, tokens): the q/k side of the cost."""
        *lead, n, _ = x.shape
        # non-negative axes: the ONNX exporter writes movedim / transpose over negative axes as invalid perms
        r = len(lead)
        q, k = self.qk(x).reshape(*lead, n, 2, self.num_heads, self.qk_dim).unbind(r + 1)
        q, k = q.transpose(r, r + 1), k.transpose(r, r + 1)
        probs = ((q @ k.transpose(r + 1, r + 2)) * self.scale).softmax(dim=-1)
        return F.dropout(probs, self.dropout, self.training)

    def attend(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """proj(probs @ v): the v side of the cost."""
        *lead, n, _ = x.shape
        r = len(lead)
        v = self.v(x).reshape(*lead, n, self.num_heads, self.v_dim).transpose(r, r + 1)
        out = (probs @ v).transpose(r, r + 1).reshape(*lead, n, self.num_heads * self.v_dim)
        return self.proj(out)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        # explicitly, as its two cost parts are timed: torch's fused kernel measured 15-20% faster here on equal
        # q/k and v head dims but as much slower on unequal ones, and tables that time another computation than
        # the one that runs mispredicted pruned ViTs by 6-15% (benchmarks/RESULTS.md)
        probs = self.attention_probs(x)
        out = self.attend(x, probs)
        if self.returns == "tensor":
            return out
        parts = {"out": out, None: None, "probs": probs, "mean_probs": probs.mean(dim=-3)}
        return tuple(parts[r] for r in self.returns)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, qk_dim={self.qk_dim}, "
                f"v_dim={self.v_dim}, out_dim={self.out_dim}, scale={self.scale:.6g}")


class RemovedBranch(nn.Module):
    """Stands in for a removed residual branch: zeros shaped like the first tensor argument, in the structure
    (`returns`, as in `PrunedAttention`) the removed module returned."""

    def __init__(self, returns: Any = "tensor") -> None:
        super().__init__()
        self.returns = returns

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        zeros = torch.zeros_like(x)
        if self.returns == "tensor":
            return zeros
        return tuple(zeros if r == "out" else None for r in self.returns)


class SkippedBlock(nn.Module):
    """A removed residual block: its first input, in the structure (`returns`, as in `PrunedAttention`) the
    block returned."""

    def __init__(self, returns: Any) -> None:
        super().__init__()
        self.returns = returns

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return tuple(x if r == "out" else None for r in self.returns)
