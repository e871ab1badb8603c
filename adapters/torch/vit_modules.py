"""The modules a slimmed vision transformer is made of.

`handle.apply` replaces every recognised transformer block by a `PrunedBlock` holding the
block's own (sliced) norms and MLP and a `PrunedAttention`. A `PrunedAttention` replaces
both attention layouts (timm's fused `qkv` + `proj`, and `nn.MultiheadAttention`) because
neither can express a q/k dim per head different from the v dim per head: it has one
Linear for queries and keys, one for values, and the output projection, and keeps the
original model's softmax scale (`1/sqrt(original head dim)`), so a model that keeps
everything computes exactly what the original computed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PrunedAttention(nn.Module):
    """Multi-head self-attention (batch first) with q/k dim per head `qk_dim` and v dim per head `v_dim`.

    Attributes read by the forward: `num_heads`, `qk_dim`, `v_dim`, `scale`, `dropout`;
    `embed_dim` is the width of the residual stream it reads and writes.
    """

    def __init__(self, embed_dim: int, num_heads: int, qk_dim: int, v_dim: int, scale: float,
                 bias: bool = True, proj_bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.qk_dim = qk_dim
        self.v_dim = v_dim
        self.scale = scale
        self.dropout = dropout
        self.qk = nn.Linear(embed_dim, 2 * num_heads * qk_dim, bias=bias)
        self.v = nn.Linear(embed_dim, num_heads * v_dim, bias=bias)
        self.proj = nn.Linear(num_heads * v_dim, embed_dim, bias=proj_bias)

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T * scale), shape (batch, heads, tokens, tokens): the q/k side of the cost."""
        b, n, _ = x.shape
        q, k = self.qk(x).reshape(b, n, 2, self.num_heads, self.qk_dim).permute(2, 0, 3, 1, 4).unbind(0)
        probs = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return F.dropout(probs, self.dropout, self.training)

    def attend(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """proj(probs @ v): the v side of the cost."""
        b, n, _ = x.shape
        v = self.v(x).reshape(b, n, self.num_heads, self.v_dim).transpose(1, 2)
        return self.proj((probs @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.v_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(x, self.attention_probs(x))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, qk_dim={self.qk_dim}, "
                f"v_dim={self.v_dim}, scale={self.scale:.6g}")


class PrunedBlock(nn.Module):
    """Pre-norm transformer block `x + attn(norm1(x))`, `x + mlp(norm2(x))`; a removed sub-block is None."""

    def __init__(self, norm1: nn.Module | None, attn: PrunedAttention | None,
                 norm2: nn.Module | None, mlp: nn.Module | None) -> None:
        super().__init__()
        if (norm1 is None) != (attn is None) or (norm2 is None) != (mlp is None):
            raise ValueError("PrunedBlock: a norm and its sub-block are kept or removed together")
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(self.norm1(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x
