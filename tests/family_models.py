"""Small hand-written models, one per structure family, for the adapter tests (no torchvision, timm or
transformers needed). Each reproduces the structure that matters for pruning, not any library's code:

- `ConvNeXtLike`: depthwise 7x7, channels-last LayerNorm and MLP, per-channel layer scale held by the
  block (a (C, 1, 1) parameter, or a (C,) one applied channels-last), LayerNorm2d + strided conv between
  stages.
- `SwinLike`: hierarchical transformer: a width per stage, window attention with a relative position
  table and shifted-window masks, patch merging (four strided slices concatenated), channels-last stream.
- `DenseNetLike`: dense blocks, each layer reads the concatenation of everything before it.
- `BranchNet`: a two-branch stem joined by `torch.cat`, an inception-style block and a YOLO-style neck
  (upsampled deep features concatenated with shallow ones).
- `LayerScaleViT`: CaiT / DeiT-III-style blocks with per-channel layer scale on both residual branches,
  and an attention that keeps its head count under `self.heads`.
- `HFStyleViT`: the Hugging Face layout: separate `query`/`key`/`value` Linears, `num_attention_heads`,
  the MLP residual added inside the output module, tuple outputs.
- `SDPAViT`: q/k/v from one Linear split with `chunk`, `F.scaled_dot_product_attention`, head count
  under an unusual attribute name.
- `FoldedHeadsViT`: heads folded into the batch axis (3-D scores), so the head count must be given.
- `HybridNet`: convolution stages, then tokens and `nn.MultiheadAttention` blocks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


# ---- ConvNeXt ----------------------------------------------------------------------------------

class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor (a leaf module, like torchvision's LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelScale(nn.Module):
    """A learned per-channel scale of an NCHW tensor held by a module of its own: a (dim, 1, 1) parameter (as
    timm's LayerScale2d), or with `view` a (dim,) parameter viewed as `self.shape` = (dim, 1, 1) in the forward
    pass (as MetaFormer's Scale)."""

    def __init__(self, dim: int, view: bool = False) -> None:
        super().__init__()
        self.shape = (dim, 1, 1) if view else None
        self.gamma = nn.Parameter(0.5 + torch.rand(dim) if view else 0.5 + torch.rand(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gamma if self.shape is None else self.gamma.view(self.shape))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, channels_last_scale: bool, scale_module: str | None = None) -> None:
        super().__init__()
        self.scale = ChannelScale(dim, view=scale_module == "view") if scale_module else None
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.channels_last_scale = channels_last_scale
        shape = (dim,) if channels_last_scale else (dim, 1, 1)
        self.layer_scale = nn.Parameter(0.5 + torch.rand(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.channels_last_scale:
            y = self.layer_scale * y
        y = y.permute(0, 3, 1, 2)
        if not self.channels_last_scale:
            y = self.layer_scale * y
        if self.scale is not None:
            y = self.scale(y)
        return x + y


class ConvNeXtLike(nn.Module):
    def __init__(self, dims: tuple[int, ...] = (16, 32), depths: tuple[int, ...] = (2, 2), num_classes: int = 10,
                 channels_last_scale: bool = False, scale_module: str | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), ChannelsFirstLayerNorm(dims[0]))]
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            if i:
                layers.append(nn.Sequential(ChannelsFirstLayerNorm(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, 2)))
            layers.append(nn.Sequential(*[ConvNeXtBlock(dim, channels_last_scale, scale_module)
                                          for _ in range(depth)]))
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean((2, 3))))


# ---- Swin ----------------------------------------------------------------------------------------

def to_windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, size * size, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size * size, c)


def from_windows(x: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    b = x.shape[0] // ((h // size) * (w // size))
    x = x.view(b, h // size, w // size, size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """Attention inside windows, with a learned bias per head and relative offset; head count in `n_heads`."""

    def __init__(self, dim: int, n_heads: int, window: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_table = nn.Parameter(0.5 * torch.randn((2 * window - 1) ** 2, n_heads))
        grid = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        offsets = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("rel_index", offsets[..., 0] * (2 * window - 1) + offsets[..., 1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.rel_table[self.rel_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        scores = scores + bias.unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            scores = scores.view(b // windows, windows, self.n_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.view(-1, self.n_heads, n, n)
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, window: int, shift: int, resolution: int) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, n_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        mask = None
        if shift:
            regions = torch.zeros(1, resolution, resolution, 1)
            cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
            for i, hs in enumerate(cuts):
                for j, ws in enumerate(cuts):
                    regions[:, hs, ws, :] = 3 * i + j
            ids = to_windows(regions, window).squeeze(-1)
            diff = ids.unsqueeze(1) - ids.unsqueeze(2)
            mask = torch.zeros_like(diff).masked_fill(diff != 0, -100.0)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        y = self.norm1(x)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = from_windows(self.attn(to_windows(y, self.window), self.mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C): four strided slices concatenated on channels, norm, Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinLike(nn.Module):
    def __init__(self, dims: tuple[int, ...] = (16, 32), heads: tuple[int, ...] = (2, 4), window: int = 4,
                 image: int = 32, patch: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dims[0], patch, patch)
        self.patch_norm = nn.LayerNorm(dims[0])
        resolution = image // patch
        stages = []
        for i, (dim, n_heads) in enumerate(zip(dims, heads)):
            blocks: list[nn.Module] = [SwinBlock(dim, n_heads, window, 0, resolution),
                                       SwinBlock(dim, n_heads, window, window // 2, resolution)]
            if i + 1 < len(dims):
                blocks.append(PatchMerging(dim))
                resolution //= 2
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        return self.head(self.norm(self.stages(x)).mean((1, 2)))


# ---- concatenation -------------------------------------------------------------------------------

def bn_relu_conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2,
                                                                     bias=False))


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bottleneck = bn_relu_conv(c_in, 2 * growth, 1)
        self.conv = bn_relu_conv(2 * growth, growth, 3)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(self.bottleneck(torch.cat(features, 1)))


class DenseBlock(nn.Module):
    def __init__(self, c_in: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(c_in + i * growth, growth) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNetLike(nn.Module):
    def __init__(self, growth: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.block1 = DenseBlock(16, growth, 3)
        c = 16 + 3 * growth
        self.transition = nn.Sequential(bn_relu_conv(c, c // 2, 1), nn.AvgPool2d(2))
        self.block2 = DenseBlock(c // 2, growth, 2)
        c = c // 2 + 2 * growth
        self.norm = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.fc(F.relu(self.norm(x)).mean((2, 3)))


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Inception(nn.Module):
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.b1 = conv_bn_relu(c_in, 8, 1)
        self.b3 = nn.Sequential(conv_bn_relu(c_in, 8, 1), conv_bn_relu(8, 16, 3))
        self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(c_in, 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.pool(x)], 1)


class BranchNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem_a = conv_bn_relu(3, 8)
        self.stem_b = nn.Sequential(conv_bn_relu(3, 8), conv_bn_relu(8, 8))
        self.down = conv_bn_relu(16, 24, stride=2)
        self.inception = Inception(24)
        self.deep = conv_bn_relu(32, 32, stride=2)
        self.lateral = conv_bn_relu(32, 16, 1)
        self.fuse = conv_bn_relu(16 + 32, 24, 1)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(torch.cat([self.stem_a(x), self.stem_b(x)], dim=1))
        shallow = self.inception(x)
        up = F.interpolate(self.lateral(self.deep(shallow)), scale_factor=2.0, mode="nearest")
        return self.fc(self.fuse(torch.cat([up, shallow], 1)).mean((2, 3)))


# ---- transformers --------------------------------------------------------------------------------

class FusedAttention(nn.Module):
    """Fused qkv; the head count is kept in `self.heads` (not `num_heads`)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        probs = (q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)).softmax(dim=-1)
        return self.out((probs @ v).transpose(1, 2).flatten(2))


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class LayerScaleBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = FusedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)
        self.gamma_1 = nn.Parameter(0.5 + torch.rand(dim))
        self.gamma_2 = nn.Parameter(0.5 + torch.rand(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class TokenEmbedding(nn.Module):
    def __init__(self, image: int, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, (image // patch) ** 2 + 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos


class LayerScaleViT(nn.Module):
    def __init__(self, image: int = 32, patch: int = 8, dim: int = 48, depth: int = 2, heads: int = 4,
                 hidden: int = 96, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = TokenEmbedding(image, patch, dim)
        self.blocks = nn.Sequential(*[LayerScaleBlock(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x)))[:, 0])


class HFSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = dim // heads
        self.all_head_size = dim
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.dropout = nn.Dropout(0.0)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[:-1] + (self.num_attention_heads, self.attention_head_size)).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor, output_attentions: bool = False) -> tuple:
        q, k, v = (self.split_heads(f(hidden)) for f in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / self.attention_head_size ** 0.5
        probs = self.dropout(nn.functional.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.shape[:-2] + (self.all_head_size,))
        return (context, probs) if output_attentions else (context,)


class HFSelfOutput(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden))


class HFAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attention = HFSelfAttention(dim, heads)
        self.output = HFSelfOutput(dim)

    def forward(self, hidden: torch.Tensor) -> tuple:
        out = self.attention(hidden)
        return (self.output(out[0], hidden),) + out[1:]


class HFIntermediate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)
        self.intermediate_act_fn = nn.GELU()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden))


class HFOutput(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden)) + input_tensor


class HFLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attention = HFAttention(dim, heads)
        self.intermediate = HFIntermediate(dim, hidden)
        self.output = HFOutput(dim, hidden)
        self.layernorm_before = nn.LayerNorm(dim, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, hidden: torch.Tensor) -> tuple:
        attention_output = self.attention(self.layernorm_before(hidden))[0]
        hidden = attention_output + hidden
        return (self.output(self.intermediate(self.layernorm_after(hidden)), hidden),)


class HFEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(HFLayer(dim, heads, hidden) for _ in range(depth))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden)[0]
        return hidden


class HFEmbeddings(nn.Module):
    def __init__(self, image: int, patch: int, dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.patch_embeddings = nn.Conv2d(3, dim, patch, patch)
        self.position_embeddings = nn.Parameter(0.02 * torch.randn(1, (image // patch) ** 2 + 1, dim))
        self.dropout = nn.Dropout(0.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embeddings(pixels).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return self.dropout(x + self.position_embeddings)


class HFStyleViT(nn.Module):
    def __init__(self, image: int = 32, patch: int = 8, dim: int = 48, depth: int = 2, heads: int = 4,
                 hidden: int = 96, num_classes: int = 10) -> None:
        super().__init__()
        self.embeddings = HFEmbeddings(image, patch, dim)
        self.encoder = HFEncoder(dim, heads, hidden, depth)
        self.layernorm = nn.LayerNorm(dim, eps=1e-12)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layernorm(self.encoder(self.embeddings(pixels)))[:, 0, :])


class SDPAAttention(nn.Module):
    """q, k, v from one Linear split with chunk; `F.scaled_dot_product_attention`; head count in `self.h`."""

    def __init__(self, dim: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.h, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FoldedHeadsAttention(nn.Module):
    """Heads folded into the batch axis: the scores are 3-D, so the forward pass cannot tell the head count."""

    def __init__(self, dim: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def fold(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.h, -1).transpose(1, 2).reshape(b * self.h, n, -1)

        q, k, v = fold(self.q(x)), fold(self.k(x)), fold(self.v(x))
        probs = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * q.shape[-1] ** -0.5, dim=-1)
        out = torch.bmm(probs, v).view(b, self.h, n, -1).transpose(1, 2).reshape(b, n, -1)
        return self.o(out)


class WideValueAttention(nn.Module):
    """Separate q, k, v Linears with twice as many value channels per head as query/key channels
    (EfficientFormer's and LeViT's attention ratio); the output projection reads the values."""

    def __init__(self, dim: int, h: int) -> None:
        super().__init__()
        self.h, self.key_dim = h, dim // h // 2
        self.q, self.k = nn.Linear(dim, h * self.key_dim), nn.Linear(dim, h * self.key_dim)
        self.v = nn.Linear(dim, 2 * h * self.key_dim)
        self.proj = nn.Linear(2 * h * self.key_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, self.h, -1).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        probs = torch.softmax(q @ k.transpose(-2, -1) * self.key_dim ** -0.5, dim=-1)
        return self.proj((probs @ v).transpose(1, 2).reshape(b, n, -1))


class TokenBiasTable(nn.Module):
    """A learned (heads, tokens, tokens) bias, returned from a call with no tensor input (BEiT's relative
    position bias module)."""

    def __init__(self, h: int, tokens: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(h, tokens, tokens) * 0.1)

    def forward(self) -> torch.Tensor:
        return self.table


class BiasedAttention(nn.Module):
    """Fused qkv attention whose scores get a bias computed outside it and passed in (as BEiT's layers
    pass their relative position bias to the attention)."""

    def __init__(self, dim: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) * (c // self.h) ** -0.5 + bias
        return self.proj((scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))


class PreNormBlock(nn.Module):
    def __init__(self, dim: int, attention: nn.Module, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attention
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GenericViT(nn.Module):
    """Patch embedding, class token, position embedding, pre-norm blocks with the given attention class."""

    def __init__(self, attention: type, image: int = 32, patch: int = 8, dim: int = 48, depth: int = 2,
                 heads: int = 4, hidden: int = 96, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = TokenEmbedding(image, patch, dim)
        self.blocks = nn.Sequential(*[PreNormBlock(dim, attention(dim, heads), hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x)))[:, 0])


def sdpa_vit() -> GenericViT:
    return GenericViT(SDPAAttention)


def folded_heads_vit() -> GenericViT:
    return GenericViT(FoldedHeadsAttention)


def wide_value_vit() -> GenericViT:
    return GenericViT(WideValueAttention)


class CachingAttention(SDPAAttention):
    """Overrides `train()` to empty a cache and, as timm's TinyViT attention does, returns nothing from it, so
    `module.eval()` is None and cannot be chained."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> None:  # type: ignore[override]
        super().train(mode)
        self.cache = {}


def caching_vit() -> GenericViT:
    return GenericViT(CachingAttention)


class BiasedBlock(nn.Module):
    """A pre-norm block that owns a `TokenBiasTable` and hands its output to the attention."""

    def __init__(self, dim: int, heads: int, hidden: int, tokens: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), BiasedAttention(dim, heads)
        self.relative_bias = TokenBiasTable(heads, tokens)
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), self.relative_bias())
        return x + self.mlp(self.norm2(x))


def biased_vit() -> GenericViT:
    """A GenericViT (32 px images in 8 px patches: 16 tokens and the class token) of `BiasedBlock`s."""
    model = GenericViT(SDPAAttention)
    model.blocks = nn.Sequential(*[BiasedBlock(48, 4, 96, tokens=17) for _ in range(2)])
    return model


# ---- hybrid --------------------------------------------------------------------------------------

class ResidualConv(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class MHABlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class HybridNet(nn.Module):
    """Two residual convolution stages, then the feature map as tokens through attention blocks."""

    def __init__(self, image: int = 32, dim: int = 32, heads: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16, stride=2)
        self.stage1 = ResidualConv(16)
        self.down = conv_bn_relu(16, dim, stride=2)
        self.stage2 = ResidualConv(dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (image // 4) ** 2, dim))
        self.blocks = nn.Sequential(MHABlock(dim, heads, 2 * dim), MHABlock(dim, heads, 2 * dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        x = self.blocks(x.flatten(2).transpose(1, 2) + self.pos)
        return self.head(self.norm(x).mean(1))


# ---- a width read from the input (as timm's CoaT factorised attention) -----------------------------

class WidthReadingMixer(nn.Module):
    """Reads its input width from the tensor and splits a projection's output into `groups` groups of
    `width // groups` channels: it runs only at the width it was built for, and no tensor shows it."""

    def __init__(self, c: int, groups: int = 4) -> None:
        super().__init__()
        self.groups = groups
        self.proj = nn.Conv2d(c, 2 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.proj(x).reshape(b, 2, self.groups, c // self.groups, h, w).sum(1)
        return self.out(y.reshape(b, c, h, w))


class WidthReadingNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn_relu(3, 16)
        self.mixer = WidthReadingMixer(16)
        self.conv = conv_bn_relu(16, 32, stride=2)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.mixer(x)
        return self.head(self.conv(x).mean((2, 3)))
