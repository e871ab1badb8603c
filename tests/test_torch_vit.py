"""Vision transformers through `build_spec`: spec construction, exact flops/params, physical slimming, both
attention layouts (timm's fused qkv and nn.MultiheadAttention)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import (MeasuredLatency, PrunedAttention, RemovedBranch, UnsupportedModelError,  # noqa
                                    ViTPruningHandle, ViTStructureError, build_spec, build_vit_spec)
from mdp_opt.result import Answer, Status  # noqa: E402
from mdp_opt.solve import verify  # noqa: E402

from flops import counted_macs  # noqa: E402
from vit_models import TimmStyleViT, TorchvisionStyleViT  # noqa: E402

LAYOUTS = [TimmStyleViT, TorchvisionStyleViT]
# coarse enough for the brute-force backend: embed 16/32/48, heads 2/4, head dims 6/12, MLP 16..96
GRANULARITY = dict(step=16, head_step=2, head_dim_step=6)


def exact_backend() -> str:
    installed = mdp_opt.installed_backends()
    return next(b for b in ("milp", "cpsat", "dp", "brute") if b in installed)


def batches(n: int = 2, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(n)]


def make(cls: type, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls().eval()


def build(model: nn.Module, **kwargs):
    options = dict(data=batches(), loss_fn=F.cross_entropy, latency="flops", costs=("latency", "flops", "params"),
                   **GRANULARITY)
    options.update(kwargs)
    return build_spec(model, torch.randn(2, 3, 32, 32), **options)


def result_for(spec: mdp_opt.Spec, kept: dict[str, int], active: dict[str, bool] | None = None) -> mdp_opt.Result:
    """A verified Result for a hand-picked configuration (kept counts per dim)."""
    choice = {d.name: d.choices.index(kept.get(d.name, d.choices[-1])) for d in spec.dims}
    active = {b: True for b in spec.block_names} | (active or {})
    return verify(spec, {}, Answer(Status.FEASIBLE, choice, active), "hand", 0.0)


@pytest.mark.parametrize("cls", LAYOUTS)
@pytest.mark.parametrize("percent", [30, 50, 70])
def test_round_trip_exact_costs_and_widths(cls, percent):
    model = make(cls)
    before = copy.deepcopy(model.state_dict())
    spec, handle = build(model)
    result = mdp_opt.solve(spec, {"latency": f"{percent}%"}, backend=exact_backend())
    assert result.status is Status.OPTIMAL
    small = handle.apply(result)
    x = torch.randn(2, 3, 32, 32)
    assert small(x).shape == (2, 10)
    assert counted_macs(small, x) == result.costs["flops"]
    assert sum(p.numel() for p in small.parameters()) == result.costs["params"]
    assert result.costs["latency"] <= percent / 100 * spec.full_costs()["latency"] * (1 + 1e-9)
    embed = result.kept["embed"]
    patch = small.patch_embed.proj if cls is TimmStyleViT else small.conv_proj
    head = small.head if cls is TimmStyleViT else small.heads.head
    assert patch.out_channels == embed and head.in_features == embed
    blocks = small.blocks if cls is TimmStyleViT else small.encoder.layers
    prefix = "blocks" if cls is TimmStyleViT else "encoder.layers"
    for i, block in enumerate(blocks):
        name = f"{prefix}.{i}"
        attn, mlp = (block.attn, block.mlp) if cls is TimmStyleViT else (block.self_attention, block.mlp)
        attn_half, mlp_half = spec.block_names[2 * i], spec.block_names[2 * i + 1]
        if isinstance(attn, RemovedBranch):
            assert not result.active[attn_half]
        else:
            assert isinstance(attn, PrunedAttention)
            assert (attn.num_heads, attn.qk_dim, attn.v_dim, attn.embed_dim) == tuple(
                result.kept[f"{name}.{k}"] for k in ("heads", "qk_dim", "v_dim")) + (embed,)
            assert attn.qk.out_features == 2 * attn.num_heads * attn.qk_dim
            assert attn.proj.in_features == attn.num_heads * attn.v_dim
        if isinstance(mlp, RemovedBranch):
            assert not result.active[mlp_half]
        else:
            fc1 = [m for m in mlp.modules() if isinstance(m, nn.Linear)][0]
            assert (fc1.in_features, fc1.out_features) == (embed, result.kept[f"{name}.mlp_hidden"])
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("cls", LAYOUTS)
def test_full_spec_costs_match_the_original_model(cls):
    model = make(cls)
    spec, _ = build(model)
    full = spec.full_costs()
    assert full["params"] == sum(p.numel() for p in model.parameters())
    if cls is TimmStyleViT:   # MultiheadAttention's fused eval kernel hides its matmuls from the flop counter
        assert full["flops"] == counted_macs(model, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("cls", LAYOUTS)
def test_keeping_everything_reproduces_the_output(cls):
    model = make(cls)
    spec, handle = build(model)
    small = handle.apply(result_for(spec, {}))
    assert sum(isinstance(m, PrunedAttention) for m in small.modules()) == 2
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_dims_choices_and_blocks():
    model = make(TimmStyleViT)
    spec, _ = build(model)
    choices = {d.name: d.choices for d in spec.dims}
    assert choices["embed"] == (16, 32, 48)
    assert choices["blocks.0.heads"] == (2, 4)
    assert choices["blocks.1.qk_dim"] == choices["blocks.1.v_dim"] == (6, 12)
    assert choices["blocks.0.mlp_hidden"] == (16, 32, 48, 64, 80, 96)
    assert spec.block_names == ("blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp")
    latency = {t.dims: t for t in spec.costs["latency"]}
    assert latency[("embed", "blocks.0.heads", "blocks.0.qk_dim")].block == "blocks.0.attn"
    assert latency[("embed", "blocks.0.heads", "blocks.0.v_dim")].block == "blocks.0.attn"
    assert latency[("embed", "blocks.1.mlp_hidden")].block == "blocks.1.mlp"
    coarse = {d.name: d.choices for d in build(model, mlp_step=32, min_channels=0.5)[0].dims}
    assert coarse["blocks.1.mlp_hidden"] == (64, 96) and coarse["embed"] == (32, 48)
    assert build(model, blocks="whole")[0].block_names == ("blocks.0", "blocks.1")
    assert build(model, blocks=None)[0].block_names == ()
    assert build(model, blocks=[model.blocks[1].mlp])[0].block_names == ("blocks.1.mlp",)
    pinned = {d.name: d.choices for d in build(model, ignore=[model.blocks[0].attn, model.patch_embed.proj])[0].dims}
    assert pinned["blocks.0.heads"] == (4,) and pinned["blocks.0.qk_dim"] == (12,) and pinned["embed"] == (48,)
    assert len(pinned["blocks.1.heads"]) == 2


@pytest.mark.parametrize("cls", LAYOUTS)
def test_build_vit_spec_is_a_deprecated_name_for_build_spec(cls):
    model = make(cls)
    x = torch.randn(2, 3, 32, 32)
    kwargs = dict(data=batches(), loss_fn=F.cross_entropy, latency="flops", costs=("latency", "params"), step=16,
                  head_dim_step=6)
    spec, handle = build_spec(model, x, **kwargs)
    assert isinstance(handle, ViTPruningHandle) and spec.meta["family"] == "transformer"
    with pytest.deprecated_call():
        assert spec == build_vit_spec(model, x, **kwargs)[0]
    small = handle.apply(mdp_opt.solve(spec, "50%", backend=exact_backend()))
    assert small(x).shape == (2, 10)


def test_qk_and_v_dims_cost_what_they_touch():
    """q/k dim: q and k projections and the scores; v dim: v projection, probs @ v and the output projection."""
    spec, _ = build(make(TimmStyleViT))
    b, n, e = 2, 17, 48
    flops = {t.dims: t.table for t in spec.costs["flops"]}
    qk = flops[("embed", "blocks.0.heads", "blocks.0.qk_dim")]
    v = flops[("embed", "blocks.0.heads", "blocks.0.v_dim")]
    h, d = 4, 6      # last embed choice (48), heads index 1 (4), head dim index 0 (6)
    assert qk[2, 1, 0] == b * n * e * 2 * h * d + b * h * n * n * d
    assert v[2, 1, 0] == b * n * e * h * d + b * h * n * n * d + b * n * h * d * e


@pytest.mark.parametrize("cls", LAYOUTS)
def test_apply_keeps_the_highest_scored_heads_and_channels(cls):
    model = make(cls)
    blk = "blocks.0" if cls is TimmStyleViT else "encoder.layers.0"
    other = "blocks.1" if cls is TimmStyleViT else "encoder.layers.1"
    rng = np.random.default_rng(0)
    scores = {f"{b}.{k}": rng.random(w) for b in (blk, other)
              for k, w in (("heads", 4), ("qk_dim", 12), ("v_dim", 12), ("mlp_hidden", 96))}
    scores["embed"] = rng.random(48)
    scores[f"{blk}.heads"] = np.array([0.0, 5.0, 1.0, 3.0])
    spec, handle = build(model, data=None, loss_fn=None, importance=scores)
    small = handle.apply(result_for(spec, {f"{blk}.heads": 2, f"{blk}.qk_dim": 6, f"{blk}.v_dim": 6,
                                           "embed": 32, f"{blk}.mlp_hidden": 16}))
    heads = [1, 3]
    qk = np.sort(np.argsort(-scores[f"{blk}.qk_dim"], kind="stable")[:6])
    v = np.sort(np.argsort(-scores[f"{blk}.v_dim"], kind="stable")[:6])
    emb = np.sort(np.argsort(-scores["embed"], kind="stable")[:32])
    orig = model.get_submodule(blk)
    w = (orig.attn.qkv.weight if cls is TimmStyleViT else orig.self_attention.in_proj_weight).detach()
    q_w, _, v_w = w.reshape(3, 4, 12, 48)
    attn = small.get_submodule(blk).attn if cls is TimmStyleViT else small.get_submodule(blk).self_attention
    expected_q = q_w[heads][:, qk][:, :, emb].reshape(12, 32)
    assert torch.equal(attn.qk.weight[:12], expected_q)
    assert torch.equal(attn.v.weight, v_w[heads][:, v][:, :, emb].reshape(12, 32))
    hidden = np.sort(np.argsort(-scores[f"{blk}.mlp_hidden"], kind="stable")[:16])
    fc1 = orig.mlp.fc1 if cls is TimmStyleViT else orig.mlp[0]
    small_fc1 = [m for m in small.get_submodule(blk).mlp.modules() if isinstance(m, nn.Linear)][0]
    assert torch.equal(small_fc1.weight, fc1.weight.detach()[hidden][:, emb])


def test_removed_blocks_are_gone():
    model = make(TimmStyleViT)
    rng = np.random.default_rng(1)
    scores = {f"blocks.{i}.{k}": rng.random(w) * (1e-6 if i == 1 else 1.0)
              for i in (0, 1) for k, w in (("heads", 4), ("qk_dim", 12), ("v_dim", 12), ("mlp_hidden", 96))}
    scores["embed"] = rng.random(48)
    spec, handle = build(model, data=None, loss_fn=None, importance=scores, blocks="whole")
    result = mdp_opt.solve(spec, {"latency": "60%"}, backend=exact_backend())
    assert result.active == {"blocks.0": True, "blocks.1": False}
    small = handle.apply(result)
    assert isinstance(small.blocks[1], nn.Identity) and isinstance(small.blocks[0].attn, PrunedAttention)
    assert all(result.kept[f"blocks.1.{k}"] == 0 for k in ("heads", "qk_dim", "v_dim", "mlp_hidden"))
    x = torch.randn(2, 3, 32, 32)
    assert counted_macs(small, x) == result.costs["flops"]
    assert sum(p.numel() for p in small.parameters()) == result.costs["params"]


def test_removing_a_sub_block_removes_its_embedding_share():
    spec, _ = build(make(TimmStyleViT))
    full = mdp_opt.evaluate(spec, spec.full_configuration()[0]).value
    assert full == pytest.approx(1.0)     # Taylor scores are scaled so the unpruned model is worth 1
    choice, active = spec.full_configuration()
    without = mdp_opt.evaluate(spec, choice, active | {"blocks.0.attn": False}).value
    attn_terms = [t for t in spec.objective if t.block == "blocks.0.attn"]
    assert {t.dims for t in attn_terms} == {("blocks.0.heads",), ("blocks.0.qk_dim",), ("blocks.0.v_dim",), ("embed",)}
    assert without == pytest.approx(full - sum(float(t.table[-1]) for t in attn_terms))


def test_callable_latency_gets_every_part_workload():
    model = make(TimmStyleViT)
    spec, _ = build(model, latency=lambda w: float(w.macs), costs=("latency", "flops"))
    latency = {(t.dims, t.block): t.table for t in spec.costs["latency"]}
    flops = {(t.dims, t.block): t.table for t in spec.costs["flops"]}
    assert set(flops) <= set(latency) and all(np.array_equal(latency[k], flops[k]) for k in flops)
    assert all(not t.any() for k, t in latency.items() if k not in flops)


def test_measured_latency_tables_are_cached(tmp_path):
    model = make(TorchvisionStyleViT)
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False, calibrate=False)
    kwargs = dict(latency=timer, costs=("latency",), step=24, head_step=2, head_dim_step=6)
    spec, handle = build(model, **kwargs)
    (cache,) = tmp_path.glob("*.json")          # beside it, the cache's lock file
    entries = json.loads(cache.read_text())["entries"]
    # attention q/k and v sides: 2 embeds x 2 head counts x 2 head dims each, shared by both blocks
    assert sum(key.startswith("attention.qk|") for key in entries) == 8
    assert sum(key.startswith("attention.v|") for key in entries) == 8
    latency = {t.dims: t.table for t in spec.costs["latency"]}
    assert latency[("embed", "encoder.layers.0.heads", "encoder.layers.0.qk_dim")].min() > 0
    before = cache.read_text()
    again, _ = build(model, **kwargs)
    assert cache.read_text() == before      # nothing timed again
    assert all(np.array_equal(a.table, b.table) for a, b in zip(spec.costs["latency"], again.costs["latency"]))
    small = handle.apply(mdp_opt.solve(spec, "60%", backend=exact_backend()))
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


class LayerScaleBlock(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = block.norm1, block.attn, block.norm2, block.mlp
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 48))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma * self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PostNormBlock(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = block.norm1, block.attn, block.norm2, block.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


@pytest.mark.parametrize("wrapper", [LayerScaleBlock, PostNormBlock])
def test_blocks_the_previous_adapter_refused_now_prune(wrapper):
    """Layer scale (a parameter of the block) follows the embedding; a post-norm block prunes too, though it is
    not removable (its output is a norm, not x + f(x))."""
    model = make(TimmStyleViT)
    model.blocks[1] = wrapper(model.blocks[1])
    spec, handle = build(model)
    assert ("blocks.1.attn" in spec.block_names) == (wrapper is LayerScaleBlock)
    result = mdp_opt.solve(spec, {"latency": "50%"}, backend=exact_backend())
    small = handle.apply(result)
    x = torch.randn(2, 3, 32, 32)
    assert counted_macs(small, x) == result.costs["flops"]
    assert sum(p.numel() for p in small.parameters()) == result.costs["params"]
    if wrapper is LayerScaleBlock:
        assert small.blocks[1].gamma.shape == (result.kept["embed"],)
    with torch.no_grad():
        full = handle.apply(result_for(spec, {}))
        assert torch.allclose(full(x), model(x), atol=1e-5)


class CrossAttention(nn.Module):
    """Queries from the tokens, keys and values from a learned memory: not self-attention."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.inner = attn
        self.memory = nn.Parameter(torch.randn(1, 17, 48))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.inner
        b, n, _ = x.shape
        q = a.qkv(x)[..., :48].reshape(b, n, 4, 12).transpose(1, 2)
        kv = a.qkv(self.memory.expand(b, -1, -1))
        k = kv[..., 48:96].reshape(b, n, 4, 12).transpose(1, 2)
        v = kv[..., 96:].reshape(b, n, 4, 12).transpose(1, 2)
        out = ((q @ k.transpose(-2, -1)) * a.scale).softmax(-1) @ v
        return a.proj(out.transpose(1, 2).reshape(b, n, 48))


def test_an_attention_it_cannot_slim_is_refused_by_name_with_the_fix():
    model = make(TimmStyleViT)
    model.blocks[1].attn = CrossAttention(model.blocks[1].attn)
    with pytest.raises(ViTStructureError, match="blocks.1.attn: .*keep it as it is with ignore="):
        build(model)
    spec, handle = build(model, ignore=[model.blocks[1].attn])      # kept as it is; the rest prunes
    assert "blocks.1.heads" not in spec.dim_names and "blocks.0.heads" in spec.dim_names
    small = handle.apply(mdp_opt.solve(spec, {"latency": "70%"}, backend=exact_backend()))
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert ViTStructureError is UnsupportedModelError


def test_bad_arguments_name_the_field():
    model = make(TimmStyleViT)
    with pytest.raises(ValueError, match="head_dim_step"):
        build(model, head_dim_step=0)
    with pytest.raises(ValueError, match="blocks"):
        build(model, blocks="some")
    with pytest.raises(ValueError, match="importance"):
        build(model, data=None)
    with pytest.raises(ValueError, match="importance\\['embed'\\]"):
        build(model, data=None, loss_fn=None, importance={"embed": [1.0]})


def test_torchvision_vit_b_16_round_trip():
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = models.vit_b_16().eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)   # torchvision zero-initialises it: no gradient would
    x = torch.randn(1, 3, 224, 224)                           # reach any other layer, every Taylor score would be 0
    data = [(x, torch.tensor([3]))]
    spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops",
                              costs=("latency", "flops", "params"), step=192, head_step=4, head_dim_step=32)
    assert spec.full_costs()["params"] == sum(p.numel() for p in model.parameters())
    backend = exact_backend()
    if backend == "brute":
        pytest.skip("12 blocks need an exact solver backend (milp, cpsat or dp), not brute force")
    for percent in (30, 50, 70):
        result = mdp_opt.solve(spec, {"latency": f"{percent}%"}, backend=backend)
        small = handle.apply(result)
        assert small(x).shape == (1, 1000)
        assert counted_macs(small, x) == result.costs["flops"]
        assert sum(p.numel() for p in small.parameters()) == result.costs["params"]


def test_taylor_scores_follow_the_head_major_layout():
    """Head score = (sum of w*g over the head's q/k/v rows)^2 + (sum over its output-projection columns)^2."""
    from mdp_opt.adapters.torch.scores import _site_scores

    model = make(TimmStyleViT)
    _, handle = build(model)
    data = batches(n=1)
    scores = _site_scores(model, handle.structure.sites, data, F.cross_entropy)
    inputs, targets = data[0]
    attn = model.blocks[1].attn
    params = [attn.qkv.weight, attn.qkv.bias, attn.proj.weight]
    grads = torch.autograd.grad(F.cross_entropy(model(inputs), targets), params)
    qkv_w, qkv_b, proj_w = ((p.detach() * g).double() for p, g in zip(params, grads))
    rows = qkv_w.reshape(3, 4, 12, 48).sum(dim=(0, 2, 3)) + qkv_b.reshape(3, 4, 12).sum(dim=(0, 2))
    cols = proj_w.reshape(48, 4, 12).sum(dim=(0, 2))
    assert np.allclose(scores["blocks.1.attn.heads"], (rows ** 2 + cols ** 2).numpy(), rtol=1e-6)
    v_rows = qkv_w.reshape(3, 4, 12, 48)[2].sum(dim=2) + qkv_b.reshape(3, 4, 12)[2]
    v_cols = proj_w.reshape(48, 4, 12).sum(dim=0)
    assert np.allclose(scores["blocks.1.attn.v_dim"], (v_rows ** 2 + v_cols ** 2).sum(dim=0).numpy(), rtol=1e-6)


def test_describe_prints_kept_widths(capsys):
    model = make(TimmStyleViT)
    spec, handle = build(model)
    result = result_for(spec, {"blocks.0.heads": 2, "embed": 32}, {"blocks.1.mlp": False})
    text = handle.describe(result)
    assert text == capsys.readouterr().out.rstrip("\n")
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["blocks.0.attn"] == ["replaced", "4", "->", "2", "12", "12"]
    assert rows["blocks.1.attn"] == ["replaced", "4", "12", "12"]
    assert rows["blocks.0.mlp.fc1"] == ["Linear", "96", "48", "->", "32"]
    assert "blocks.1.mlp.fc1" not in rows             # removed with its branch
    assert "removed (now identity): blocks.1.mlp" in text


def test_apply_keeps_the_training_flags():
    model = make(TimmStyleViT)
    spec, handle = build(model)
    assert not any(m.training for m in handle.apply(result_for(spec, {})).modules())
    model.train()
    assert all(m.training for m in handle.apply(result_for(spec, {})).modules())


class WidthInForward(TorchvisionStyleViT):
    """Reads the embedding width from an attribute of its own (`width`) and, optionally, a literal."""

    def __init__(self, literal: bool = False) -> None:
        super().__init__()
        self.width = self.hidden_dim
        self.literal = literal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, 48 if self.literal else self.width, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


def test_apply_follows_width_attributes_and_checks_that_the_slimmed_model_runs(monkeypatch):
    """A width read from an attribute follows the kept width; one written as a literal is kept at build time
    (a slimmed copy fails), and without that probe apply names the failure."""
    from mdp_opt.adapters.torch import spec_builder
    torch.manual_seed(0)
    model = WidthInForward().eval()
    spec, handle = build(model)
    small = handle.apply(result_for(spec, {"embed": 32}))
    assert small.width == small.hidden_dim == 32 and model.width == 48
    model = WidthInForward(literal=True).eval()
    spec, handle = build(model)
    assert spec.dim("embed").choices == (48,) and "hard-coded" in spec.meta["pinned"]["embed"]
    handle.apply(result_for(spec, {}))
    monkeypatch.setattr(spec_builder, "hard_coded_widths", lambda *args: {})
    spec, handle = build(model)
    with pytest.raises(RuntimeError, match="slimmed model fails on the example input.*ignore="):
        handle.apply(result_for(spec, {"embed": 32}))


def test_attention_activations_count_queries_keys_and_probabilities():
    model = make(TimmStyleViT)
    spec, _ = build(model, costs=("activations",))
    table = {t.dims: t.table for t in spec.costs["activations"]}[("embed", "blocks.0.heads", "blocks.0.qk_dim")]
    batch, tokens = 2, (32 // 8) ** 2 + 1                      # the example input: 2 images of 16 patches + a class token
    heads, qk = spec.dims[spec.dim_names.index("blocks.0.heads")].choices, (6, 12)
    extra_heads = table[-1, 1, 1] - table[-1, 0, 1]            # queries, keys and probabilities of the heads pruned
    assert extra_heads == batch * (heads[1] - heads[0]) * (2 * tokens * qk[1] + tokens * tokens)
    assert table[-1, 1, 1] - table[-1, 1, 0] == batch * tokens * heads[1] * 2 * (qk[1] - qk[0])
