"""Recognise a vision transformer: its pre-norm blocks, their attention layout, and what couples to the embedding.

A model is a ViT here when it has attention modules, either `nn.MultiheadAttention`
(torchvision layout) or a module with a fused `qkv` Linear, a `proj` Linear and an
integer `num_heads` (timm layout). The parent of each is a transformer block whose
direct children are two LayerNorms (norm1, norm2, in registration order), the attention
and an MLP (a child holding exactly two Linears); children without parameters (dropout,
drop-path, identity layer-scale) may be present. Everything outside the blocks that holds
parameters is classified against the embedding width E: Conv2d with E outputs (patch
embedding), parameters whose last axis is E (class token, position embedding),
LayerNorm(E) (final norm), Linear with E inputs (head); layers touching neither side of
E are left alone. `find_vit` runs the model once to read the token count and checks that
every block computes exactly `x + attn(norm1(x))`, `x + mlp(norm2(x))`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

EMBED_ATTRIBUTES = ("embed_dim", "hidden_dim", "num_features", "head_hidden_size")


class ViTStructureError(ValueError):
    """The model has attention modules but a structure this adapter cannot slim; the message names the module."""


@dataclass(frozen=True)
class AttentionTensors:
    """Canonical view of one attention's weights (or gradients): rows of q/k/v are head-major."""

    q_w: torch.Tensor
    k_w: torch.Tensor
    v_w: torch.Tensor
    o_w: torch.Tensor
    q_b: torch.Tensor | None
    k_b: torch.Tensor | None
    v_b: torch.Tensor | None
    o_b: torch.Tensor | None


@dataclass(frozen=True)
class BlockSite:
    """One transformer block, every module named by its qualified name in the model."""

    name: str
    norm1: str
    attn: str
    norm2: str
    mlp: str
    fc1: str
    fc2: str
    layout: str           # "fused_qkv" or "mha"
    num_heads: int
    head_dim: int
    mlp_hidden: int
    scale: float
    dropout: float
    qkv_bias: bool
    proj_bias: bool


@dataclass(frozen=True)
class ViTStructure:
    """Where everything is, plus the shapes the cost model needs (batch and tokens of the example input)."""

    embed_dim: int
    batch: int
    tokens: int
    blocks: tuple[BlockSite, ...]
    patch_embeds: tuple[str, ...]
    token_params: tuple[str, ...]
    norms: tuple[str, ...]
    heads: tuple[str, ...]
    fixed: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]
    outside_macs_per_channel: int
    outside_macs_fixed: int


def attention_layout(module: nn.Module) -> str | None:
    """"mha", "fused_qkv", or None when `module` is not a recognised attention."""
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if (isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "proj", None), nn.Linear)
            and isinstance(getattr(module, "num_heads", None), int)):
        return "fused_qkv"
    return None


def has_attention(model: nn.Module) -> bool:
    return any(attention_layout(m) is not None for m in model.modules())


def attention_tensors(module: nn.Module, layout: str,
                      value: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.detach) -> AttentionTensors:
    """q/k/v/out weights and biases of an attention module, each passed through `value` (None where absent)."""
    if layout == "mha":
        w, b, o = module.in_proj_weight, module.in_proj_bias, module.out_proj
    else:
        w, b, o = module.qkv.weight, module.qkv.bias, module.proj
    q_w, k_w, v_w = value(w).chunk(3, dim=0)
    q_b, k_b, v_b = value(b).chunk(3, dim=0) if b is not None else (None, None, None)
    return AttentionTensors(q_w, k_w, v_w, value(o.weight), q_b, k_b, v_b,
                            None if o.bias is None else value(o.bias))


def _attention_site_fields(name: str, module: nn.Module, layout: str, embed: int) -> dict[str, Any]:
    if layout == "mha":
        problems = []
        if not module._qkv_same_embed_dim:
            problems.append("kdim/vdim differ from embed_dim")
        if module.bias_k is not None:
            problems.append("add_bias_kv=True")
        if module.add_zero_attn:
            problems.append("add_zero_attn=True")
        if not module.batch_first:
            problems.append("batch_first=False")
        if problems:
            raise ViTStructureError(f"{name}: nn.MultiheadAttention with {', '.join(problems)} is not supported; "
                                    "use batch_first=True self-attention without extra key/value biases")
        heads, inner = module.num_heads, module.embed_dim
        return dict(num_heads=heads, head_dim=inner // heads, scale=(inner // heads) ** -0.5,
                    dropout=float(module.dropout), qkv_bias=module.in_proj_bias is not None,
                    proj_bias=module.out_proj.bias is not None)
    heads = module.num_heads
    if module.qkv.out_features % (3 * heads):
        raise ViTStructureError(f"{name}.qkv: {module.qkv.out_features} outputs are not 3 x num_heads ({heads}) "
                                "x head dim")
    head_dim = module.qkv.out_features // (3 * heads)
    if module.proj.in_features != heads * head_dim or module.proj.out_features != embed:
        raise ViTStructureError(f"{name}.proj: expected Linear({heads * head_dim}, {embed}), got "
                                f"Linear({module.proj.in_features}, {module.proj.out_features})")
    drop = getattr(module, "attn_drop", None)
    return dict(num_heads=heads, head_dim=head_dim, scale=float(getattr(module, "scale", head_dim ** -0.5)),
                dropout=float(drop.p) if isinstance(drop, nn.Dropout) else 0.0,
                qkv_bias=module.qkv.bias is not None, proj_bias=module.proj.bias is not None)


def _embed_width(module: nn.Module, layout: str) -> int:
    return module.embed_dim if layout == "mha" else module.qkv.in_features


def _block_site(model: nn.Module, attn_name: str, layout: str) -> BlockSite:
    block_name, _, attn_attr = attn_name.rpartition(".")
    if not block_name:
        raise ViTStructureError(f"{attn_name}: an attention module must sit inside a transformer block module")
    block = model.get_submodule(block_name)
    attn = block.get_submodule(attn_attr)
    embed = _embed_width(attn, layout)
    own = [pname for pname, _ in block.named_parameters(recurse=False)]
    if own:
        raise ViTStructureError(f"{block_name}.{own[0]}: a parameter of the transformer block itself (layer scale?) "
                                "is not supported; blocks may hold only norms, the attention and the MLP")
    norms, mlps = [], []
    for child_name, child in block.named_children():
        if child is attn or not any(True for _ in child.parameters()):
            continue
        if isinstance(child, nn.LayerNorm) and tuple(child.normalized_shape) == (embed,):
            norms.append(child_name)
        elif sum(isinstance(m, nn.Linear) for m in child.modules()) == 2 and all(
                isinstance(m, nn.Linear) or not any(True for _ in m.parameters(recurse=False))
                for m in child.modules()):
            mlps.append(child_name)
        else:
            raise ViTStructureError(f"{block_name}.{child_name}: a {type(child).__name__} with parameters inside a "
                                    "transformer block is not supported (expected two LayerNorms, the attention "
                                    "and an MLP of two Linears)")
    if len(norms) != 2 or len(mlps) != 1:
        raise ViTStructureError(f"{block_name}: expected two LayerNorm({embed}) and one MLP beside the attention, "
                                f"found norms {norms} and MLPs {mlps}")
    mlp = block.get_submodule(mlps[0])
    linears = [n for n, m in mlp.named_modules() if isinstance(m, nn.Linear)]
    fc1, fc2 = (mlp.get_submodule(n) for n in linears)
    if fc1.in_features != embed or fc2.out_features != embed or fc1.out_features != fc2.in_features:
        raise ViTStructureError(f"{block_name}.{mlps[0]}: expected Linear({embed}, hidden) then Linear(hidden, "
                                f"{embed}), got Linear({fc1.in_features}, {fc1.out_features}) and "
                                f"Linear({fc2.in_features}, {fc2.out_features})")
    q = f"{block_name}."
    return BlockSite(name=block_name, norm1=q + norms[0], attn=attn_name, norm2=q + norms[1], mlp=q + mlps[0],
                     fc1=f"{q}{mlps[0]}.{linears[0]}", fc2=f"{q}{mlps[0]}.{linears[1]}", layout=layout,
                     mlp_hidden=fc1.out_features, **_attention_site_fields(attn_name, attn, layout, embed))


def _inside(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _linear_macs(inp: torch.Tensor, layer: nn.Linear) -> int:
    return (inp.numel() // layer.in_features) * layer.in_features * layer.out_features


def _conv_macs(out: torch.Tensor, layer: nn.Conv2d) -> int:
    return out.numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


def _classify_outside(model: nn.Module, embed: int, block_names: tuple[str, ...]) -> dict[str, list]:
    found: dict[str, list] = {"patch_embeds": [], "token_params": [], "norms": [], "heads": [], "fixed": [],
                              "attributes": []}
    for name, module in model.named_modules():
        if _inside(name, block_names):
            continue
        for attr in EMBED_ATTRIBUTES:
            if getattr(module, attr, None) == embed and type(getattr(module, attr)) is int:
                found["attributes"].append((name, attr))
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        where = name or type(model).__name__
        if isinstance(module, nn.Conv2d):
            if module.out_channels == embed and module.in_channels != embed:
                found["patch_embeds"].append(name)
            elif embed not in (module.in_channels, module.out_channels):
                found["fixed"].append(name)
            else:
                raise ViTStructureError(f"{where}: a Conv2d reading the {embed}-wide embedding is not supported")
        elif isinstance(module, nn.Linear):
            if module.in_features == embed and module.out_features != embed:
                found["heads"].append(name)
            elif embed not in (module.in_features, module.out_features):
                found["fixed"].append(name)
            else:
                raise ViTStructureError(f"{where}: a Linear writing {embed} channels outside the transformer blocks "
                                        "is not supported (only heads reading the embedding are)")
        elif isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (embed,):
            found["norms"].append(name)
        else:
            for pname, p in own.items():
                full = f"{name}.{pname}" if name else pname
                if p.dim() >= 2 and p.shape[-1] == embed:
                    found["token_params"].append(full)
                else:
                    raise ViTStructureError(f"{full}: a parameter of shape {tuple(p.shape)} outside the transformer "
                                            f"blocks is neither a token/position embedding (last axis {embed}) nor "
                                            "part of a Conv2d/Linear/LayerNorm; this adapter cannot slim it")
    if len(found["patch_embeds"]) != 1:
        raise ViTStructureError(f"model: expected one patch-embedding Conv2d with {embed} output channels, "
                                f"found {found['patch_embeds'] or 'none'}")
    return found


def find_vit(model: nn.Module, example_input: Any, reconstruct: Callable[[nn.Module, BlockSite], nn.Module]
             ) -> ViTStructure:
    """Recognise `model` as a ViT and measure its token count on `example_input`.

    `reconstruct(model, site)` must build the keep-everything replacement of a block; each
    block's output on the real example is compared with it (eval mode), so a block that
    does anything else (layer scale, post-norm, extra tokens) is refused with its name.
    """
    found = [(name, layout) for name, m in model.named_modules() if (layout := attention_layout(m)) is not None]
    if not found:
        raise ViTStructureError("model: no attention module found (nn.MultiheadAttention or qkv/proj/num_heads)")
    parents = [name.rpartition(".")[0] for name, _ in found]
    twice = next((p for p in parents if parents.count(p) > 1), None)
    if twice is not None:
        raise ViTStructureError(f"{twice or 'model'}: a block with two attention modules is not supported "
                                "(one self-attention and one MLP per pre-norm block)")
    sites = tuple(_block_site(model, name, layout) for name, layout in found)
    embeds = {_embed_width(model.get_submodule(s.attn), s.layout) for s in sites}
    if len(embeds) != 1:
        raise ViTStructureError(f"model: blocks have different embedding widths {sorted(embeds)}; "
                                "one residual stream width is required")
    embed = embeds.pop()
    names = tuple(s.name for s in sites)
    outside = _classify_outside(model, embed, names)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    macs: dict[str, int] = {}
    hooks = [model.get_submodule(s.name).register_forward_hook(
        lambda mod, inp, out, key=s.name: seen.__setitem__(key, (inp[0], out))) for s in sites]
    for name in outside["patch_embeds"] + outside["heads"] + outside["fixed"]:
        layer = model.get_submodule(name)
        count = (lambda mod, inp, out, key=name: macs.__setitem__(key, macs.get(key, 0) + (
            _conv_macs(out, mod) if isinstance(mod, nn.Conv2d) else _linear_macs(inp[0], mod))))
        hooks.append(layer.register_forward_hook(count))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
            shapes = set()
            for s in sites:
                if s.name not in seen:
                    raise ViTStructureError(f"{s.name}: the block did not run on the example input")
                x, y = seen[s.name]
                if x.dim() != 3 or x.shape[-1] != embed:
                    raise ViTStructureError(f"{s.name}: expected a (batch, tokens, {embed}) input, got {tuple(x.shape)}")
                shapes.add(tuple(x.shape[:2]))
                if not torch.allclose(reconstruct(model, s)(x), y, rtol=1e-4, atol=1e-5):
                    raise ViTStructureError(f"{s.name}: its output is not x + attn(norm1(x)), x + mlp(norm2(x)) "
                                            "with the recognised modules (layer scale, post-norm or extra "
                                            "operations are not supported)")
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)
    if len(shapes) != 1:
        raise ViTStructureError(f"model: blocks see different (batch, tokens) shapes {sorted(shapes)}")
    batch, tokens = shapes.pop()
    coupled = sum(macs.get(n, 0) for n in outside["patch_embeds"] + outside["heads"])
    if coupled % embed:
        raise ViTStructureError(f"model: multiply-accumulates of layers coupled to the embedding ({coupled}) are not a multiple of "
                                f"its width {embed}")
    return ViTStructure(embed_dim=embed, batch=batch, tokens=tokens, blocks=sites,
                        patch_embeds=tuple(outside["patch_embeds"]), token_params=tuple(outside["token_params"]),
                        norms=tuple(outside["norms"]), heads=tuple(outside["heads"]), fixed=tuple(outside["fixed"]),
                        attributes=tuple(outside["attributes"]), outside_macs_per_channel=coupled // embed,
                        outside_macs_fixed=sum(macs.get(n, 0) for n in outside["fixed"]))
