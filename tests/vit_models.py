"""Small hand-written vision transformers for the ViT adapter tests (no timm or torchvision needed).

Two attention layouts, same pre-norm architecture (patch embedding Conv2d, class token,
position embedding, blocks `x + attn(norm1(x))`, `x + mlp(norm2(x))`, final norm, head):
- `TimmStyleViT`: fused `qkv` Linear + `proj` Linear; the forward reads `num_heads`,
  `head_dim` and `scale` (the layout of timm's `VisionTransformer`).
- `TorchvisionStyleViT`: `nn.MultiheadAttention(batch_first=True)` inside blocks named
  like torchvision's `EncoderBlock`, a `hidden_dim` attribute read by the forward.
`vit_tiny()` is ViT-Tiny-sized (embed 192, 3 heads, 12 blocks, MLP 768, 224x224, patch 16).
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmStyleViT(nn.Module):
    def __init__(self, image_size: int = 32, patch: int = 8, dim: int = 48, depth: int = 2, num_heads: int = 4,
                 mlp_hidden: int = 96, num_classes: int = 10) -> None:
        super().__init__()
        self.embed_dim = dim
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (image_size // patch) ** 2 + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class EncoderBlock(nn.Module):
    """torchvision's EncoderBlock layout: ln_1, self_attention (MHA), ln_2, mlp (Sequential)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(inp)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = x + inp
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq_length: int, dim: int, depth: int, num_heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(1, seq_length, dim))
        self.layers = nn.Sequential(*[EncoderBlock(dim, num_heads, mlp_hidden) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(x + self.pos_embedding))


class TorchvisionStyleViT(nn.Module):
    def __init__(self, image_size: int = 32, patch: int = 8, dim: int = 48, depth: int = 2, num_heads: int = 4,
                 mlp_hidden: int = 96, num_classes: int = 10) -> None:
        super().__init__()
        self.patch_size = patch
        self.hidden_dim = dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder((image_size // patch) ** 2 + 1, dim, depth, num_heads, mlp_hidden)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


def vit_tiny(num_classes: int = 1000) -> TimmStyleViT:
    """ViT-Tiny-sized timm-style model: 224x224 input, patch 16, embed 192, 3 heads, 12 blocks, MLP 768."""
    return TimmStyleViT(image_size=224, patch=16, dim=192, depth=12, num_heads=3, mlp_hidden=768,
                        num_classes=num_classes)
