"""Every model family through the one door, `build_spec`: hand-written models reproducing each family's
structure (tests/family_models.py), round-tripped at three budgets with exact costs, the keep-everything
equality, and what is special to each family (layer scale, window attention, concatenation, ...)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt import Answer, Status  # noqa: E402
from mdp_opt.adapters.torch import (ConvFamily, PrunedAttention, RemovedBranch, SkippedBlock,  # noqa: E402
                                    UnsupportedModelError, build_spec, register_family)
from mdp_opt.adapters.torch import costs as cost_module  # noqa: E402
from mdp_opt.adapters.torch import families as family_module  # noqa: E402
from mdp_opt.solve import verify  # noqa: E402

from flops import counted_macs  # noqa: E402
from family_models import (BranchNet, ConvNeXtLike, DenseNetLike, HFStyleViT, HybridNet, LayerScaleViT,  # noqa: E402
                           SwinLike, WidthReadingNet, WindowAttention, biased_vit, folded_heads_vit,
                           caching_vit, sdpa_vit, wide_value_vit)

# family -> (model factory, input size, the family that must recognise it, build options)
CASES = {
    "convnext": (ConvNeXtLike, 32, "cnn", {}),
    "convnext-channels-last-scale": (lambda: ConvNeXtLike(channels_last_scale=True), 32, "cnn", {}),
    "convnext-scale-module": (lambda: ConvNeXtLike(scale_module="parameter"), 32, "cnn", {}),
    "convnext-view-scale-module": (lambda: ConvNeXtLike(scale_module="view"), 32, "cnn", {}),
    "swin": (SwinLike, 32, "transformer", {}),
    "densenet": (DenseNetLike, 16, "cnn", dict(step=4)),
    "branches": (BranchNet, 16, "cnn", dict(step=4)),
    "layer-scale-vit": (LayerScaleViT, 32, "transformer", {}),
    "hf-vit": (HFStyleViT, 32, "transformer", {}),
    "sdpa-vit": (sdpa_vit, 32, "transformer", {}),
    "folded-heads-vit": (folded_heads_vit, 32, "transformer", {}),
    "wide-value-vit": (wide_value_vit, 32, "transformer", {}),
    "caching-vit": (caching_vit, 32, "transformer", {}),
    "hybrid": (HybridNet, 32, "transformer", {}),
}


def exact_backend() -> str:
    installed = mdp_opt.installed_backends()
    return next(b for b in ("milp", "cpsat", "dp") if b in installed)


def make(kind: str) -> tuple[nn.Module, torch.Tensor]:
    factory, size, _, _ = CASES[kind]
    torch.manual_seed(0)
    model = factory().eval()
    with torch.no_grad():        # non-trivial norms, so keeping the wrong channels shows
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(2, 3, size, size)


def build(kind: str, model: nn.Module, x: torch.Tensor, **kwargs):
    size = x.shape[-1]
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 3, size, size, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)]
    options = dict(data=data, loss_fn=F.cross_entropy, latency="flops", costs=("latency", "flops", "params"),
                   step=8, mlp_step=16, head_dim_step=4)
    if kind == "folded-heads-vit":
        options["heads"] = {b.attn: 4 for b in model.blocks}
    options.update(CASES[kind][3] if kind in CASES else {})
    options.update(kwargs)
    return build_spec(model, x, **options)


def configuration(spec: mdp_opt.Spec, kept: dict[str, int] | None = None,
                  removed: tuple[str, ...] = ()) -> mdp_opt.Result:
    """A verified Result keeping `kept` units of the dims given (the full width of the others)."""
    kept = kept or {}
    choice = {d.name: d.choices.index(kept.get(d.name, d.choices[-1])) for d in spec.dims}
    active = {b: b not in removed for b in spec.block_names}
    return verify(spec, {}, Answer(Status.FEASIBLE, choice, active), "hand", 0.0)


def assert_same_output(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max()))


@pytest.fixture(scope="module")
def built() -> dict:
    out = {}
    for kind in CASES:
        model, x = make(kind)
        spec, handle = build(kind, model, x)
        out[kind] = (model, x, spec, handle)
    return out


@pytest.mark.parametrize("kind", list(CASES))
def test_the_right_family_recognises_it(built, kind):
    _, _, spec, handle = built[kind]
    assert spec.meta["family"] == CASES[kind][2] == handle.structure.family
    assert sum(len(d.choices) > 1 for d in spec.dims) >= 3
    assert bool(spec.block_names) == (kind not in ("densenet", "branches"))     # those have no residual blocks


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("percent", [70, 50, 30])
def test_round_trip_at_three_budgets(built, kind, percent):
    model, x, spec, handle = built[kind]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = mdp_opt.solve(spec, {"latency": f"{percent}%"}, backend=exact_backend())
    assert result.status is Status.OPTIMAL
    small = handle.apply(result)
    with torch.no_grad():
        assert small(x).shape == model(x).shape
    assert counted_macs(small, x) == result.costs["flops"]
    assert sum(p.numel() for p in small.parameters()) == result.costs["params"]
    assert result.costs["latency"] <= percent / 100 * spec.full_costs()["latency"] * (1 + 1e-9)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kind", list(CASES))
def test_keeping_everything_reproduces_the_output(built, kind):
    model, x, spec, handle = built[kind]
    small = handle.apply(configuration(spec))
    assert small is not model
    with torch.no_grad():
        assert_same_output(small(x), model(x))


@pytest.mark.parametrize("kind", list(CASES))
def test_full_costs_are_the_model_s(built, kind):
    model, x, spec, _ = built[kind]
    full = spec.full_costs()
    assert full["params"] == sum(p.numel() for p in model.parameters())
    if kind != "hybrid":     # nn.MultiheadAttention's fused eval kernel hides its products from the flop counter
        assert full["flops"] == counted_macs(model, x)


# ---- ConvNeXt ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["convnext", "convnext-channels-last-scale", "convnext-scale-module",
                                  "convnext-view-scale-module"])
def test_layer_scale_follows_the_channels_it_scales(built, kind):
    model, x, spec, handle = built[kind]
    stage = "features.0.0"                      # the stem convolution names the first stage's stream
    assert spec.dim(stage).choices == (8, 16)
    assert spec.block_names[:2] == ("features.1.0", "features.1.1")
    result = configuration(spec, {stage: 8})
    small = handle.apply(result)
    kept = np.sort(handle.kept_channels(result)[stage])
    scale = model.features[1][0].layer_scale
    assert torch.equal(small.features[1][0].layer_scale, scale[kept])
    assert small.features[1][0].dwconv.groups == 8 and small.features[1][0].pwconv1.in_features == 8
    if kind.endswith("scale-module"):     # a (channels, 1, 1) parameter of a module of its own, or a view shape
        gamma = model.features[1][0].scale.gamma
        assert torch.equal(small.features[1][0].scale.gamma, gamma[kept])
        if kind == "convnext-view-scale-module":
            assert small.features[1][0].scale.shape == (8, 1, 1) and model.features[1][0].scale.shape == (16, 1, 1)
    removed = handle.apply(configuration(spec, removed=("features.1.1",)))
    assert isinstance(removed.features[1][1], nn.Identity)


# ---- Swin ----------------------------------------------------------------------------------------

def test_swin_has_a_width_per_stage_and_its_window_attention_is_sliced_in_place(built):
    model, x, spec, handle = built["swin"]
    names = set(spec.dim_names)
    assert {"stages.0.embed", "stages.1.embed", "stages.0.0.heads", "stages.0.0.head_dim",
            "stages.1.1.mlp_hidden"} <= names
    assert spec.meta["attention"]["stages.1.0.attn"] == "in place"
    assert spec.block_names[:2] == ("stages.0.0.attn", "stages.0.0.mlp")
    result = configuration(spec, {"stages.0.embed": 8, "stages.1.0.heads": 2, "stages.1.0.head_dim": 4})
    small = handle.apply(result)
    heads = np.sort(handle.kept_channels(result)["stages.1.0.heads"])
    attn = small.stages[1][0].attn
    assert isinstance(attn, WindowAttention) and attn.n_heads == 2 and attn.head_dim == 4
    assert torch.equal(attn.rel_table, model.stages[1][0].attn.rel_table[:, heads])
    assert small.stages[0][2].reduction.in_features == 4 * 8          # patch merging reads 4 x the stage width
    assert small.stages[0][2].norm.normalized_shape == (32,)


def test_swin_head_removal_is_exact_on_the_relative_position_table():
    """A Swin block with one head removed computes the original block with that head's output columns zeroed."""
    model, x = make("swin")
    importance = {d: np.arange(w, dtype=float) for d, w in
                  [(d.name, d.choices[-1]) for d in build("swin", model, x)[0].dims]}
    spec, handle = build("swin", model, x, data=None, loss_fn=None, importance=importance)
    small = handle.apply(configuration(spec, {"stages.1.1.heads": 3}))
    reference = copy.deepcopy(model)
    attn = reference.stages[1][1].attn
    with torch.no_grad():
        attn.proj.weight[:, 0:8] = 0                       # head 0 scored lowest
        assert_same_output(small(x), reference(x))


def test_swin_branches_and_whole_blocks(built):
    model, x, spec, handle = built["swin"]
    small = handle.apply(configuration(spec, removed=("stages.0.1.attn", "stages.1.0.mlp")))
    assert isinstance(small.stages[0][1].attn, RemovedBranch) and isinstance(small.stages[0][1].norm1, nn.Identity)
    assert isinstance(small.stages[1][0].mlp, RemovedBranch)
    with torch.no_grad():
        small(x)
    whole, handle_whole = build("swin", model, x, blocks="whole")
    assert whole.block_names == ("stages.0.0", "stages.0.1", "stages.1.0", "stages.1.1")
    gone = handle_whole.apply(configuration(whole, removed=("stages.0.1",)))
    assert isinstance(gone.stages[0][1], nn.Identity)


# ---- concatenation -------------------------------------------------------------------------------

def test_a_consumer_of_a_concatenation_reads_every_producer(built):
    model, x, spec, handle = built["branches"]
    by_layer = {layer.name: layer for layer in handle.layers}
    assert by_layer["fuse.0"].in_dims == ("lateral.0", "inception.b1.0", "inception.b3.1.0", "inception.pool.1.0")
    kept = {"lateral.0": 8, "inception.b1.0": 4, "inception.b3.1.0": 8}
    result = configuration(spec, kept)
    small = handle.apply(result)
    channels = handle.kept_channels(result)
    cols = np.concatenate([np.sort(channels["lateral.0"]), 16 + np.sort(channels["inception.b1.0"]),
                           24 + np.sort(channels["inception.b3.1.0"]), 40 + np.arange(8)])
    assert torch.equal(small.fuse[0].weight, model.fuse[0].weight[:, cols])
    tables = {t.dims for t in spec.costs["flops"]}     # fuse's table: one axis per producer, and its own output
    assert any(set(d) == {"fuse.0", "lateral.0", "inception.b1.0", "inception.b3.1.0", "inception.pool.1.0"}
               for d in tables)


def test_dense_blocks_concatenate_every_earlier_layer(built):
    model, x, spec, handle = built["densenet"]
    layer = next(item for item in handle.layers if item.name == "block1.layers.2.bottleneck.2")
    assert layer.in_dims == ("stem", "block1.layers.0.conv.2", "block1.layers.1.conv.2")
    result = mdp_opt.solve(spec, {"flops": "50%"}, backend=exact_backend())
    small = handle.apply(result)
    assert counted_macs(small, x) == result.costs["flops"]


def test_wide_concatenations_split_their_tables_and_stay_exact(monkeypatch):
    """Past MAX_JOINT entries a table is a base plus one increment per input dim: exact for MACs and params."""
    monkeypatch.setattr(cost_module, "MAX_JOINT", 4)
    model, x = make("densenet")
    spec, handle = build("densenet", model, x)
    assert "block1.layers.2.bottleneck.2" in spec.meta["decomposed"]
    assert max(len(t.dims) for t in spec.costs["flops"]) <= 2
    for percent in (70, 40):
        result = mdp_opt.solve(spec, {"flops": f"{percent}%"}, backend=exact_backend())
        small = handle.apply(result)
        assert counted_macs(small, x) == result.costs["flops"]
        assert sum(p.numel() for p in small.parameters()) == result.costs["params"]


# ---- transformers --------------------------------------------------------------------------------

def test_layer_scale_of_a_transformer_block_is_sliced(built):
    model, x, spec, handle = built["layer-scale-vit"]
    result = configuration(spec, {"embed": 16})
    small = handle.apply(result)
    kept = np.sort(handle.kept_channels(result)["embed"])
    assert torch.equal(small.blocks[1].gamma_2, model.blocks[1].gamma_2[kept])
    assert isinstance(small.blocks[0].attn, PrunedAttention)


@pytest.mark.parametrize("kind, q", [("hf-vit", "encoder.layer.0.attention.attention.query"),
                                     ("sdpa-vit", "blocks.0.attn.to_qkv"), ("folded-heads-vit", "blocks.0.attn.q")])
def test_attention_layouts_are_read_from_the_weights(built, kind, q):
    """Separate q/k/v Linears (HF), one Linear split with chunk and SDPA, heads folded into the batch: each row
    of q, k, v found by matching the forward pass, so the replacement reproduces the module."""
    model, x, spec, handle = built[kind]
    site = next(iter(handle.structure.sites.values())).site
    assert site.q.module == q and (site.heads, site.qk_dim, site.v_dim) == (4, 12, 12)
    assert site.scale == pytest.approx(12 ** -0.5)
    prefix = "encoder.layer.0" if kind == "hf-vit" else "blocks.0"
    result = configuration(spec, {f"{prefix}.heads": 2, f"{prefix}.qk_dim": 4, f"{prefix}.v_dim": 8})
    small = handle.apply(result)
    attn = small.get_submodule(site.name)
    assert isinstance(attn, PrunedAttention) and (attn.num_heads, attn.qk_dim, attn.v_dim) == (2, 4, 8)
    if kind == "hf-vit":      # the replacement returns what the HF module returned: a tuple
        assert isinstance(attn(torch.randn(2, 17, 48)), tuple)


def test_a_removed_block_returns_what_the_block_returned(built):
    """HF layers return `(hidden,)` and their caller takes `[0]`: a removed one must return a tuple too."""
    model, x, spec, handle = built["hf-vit"]
    assert spec.block_names == ("encoder.layer.0", "encoder.layer.1")   # its MLP branch is not one module
    small = handle.apply(configuration(spec, removed=("encoder.layer.1",)))
    assert isinstance(small.encoder.layer[1], SkippedBlock)
    reference = copy.deepcopy(model)
    reference.encoder.layer = reference.encoder.layer[:1]
    with torch.no_grad():
        assert_same_output(small(x), reference(x))


def test_folded_heads_need_the_head_count_and_say_so():
    model, x = make("folded-heads-vit")
    with pytest.raises(UnsupportedModelError, match=r"blocks.0.attn: .*3-D.*heads=\{model.blocks.0.attn: count\}"):
        build("folded-heads-vit", model, x, heads=None)
    other, _ = make("sdpa-vit")
    with pytest.raises(UnsupportedModelError, match="blocks.0.attn: heads=3 was given"):
        build("sdpa-vit", other, x, heads={other.blocks[0].attn: 3})
    with pytest.raises(ValueError, match=r"heads\[blocks.0.attn\]: expected a positive head count"):
        build("folded-heads-vit", model, x, heads={model.blocks[0].attn: 0})


def test_a_hybrid_prunes_its_convolutions_its_embedding_and_its_heads(built):
    model, x, spec, handle = built["hybrid"]
    names = set(spec.dim_names)
    assert {"stem.0", "stage1.conv1", "embed", "blocks.0.heads", "blocks.1.mlp_hidden"} <= names
    assert "stage2" in spec.block_names and "blocks.0.self_attention" in spec.block_names
    result = configuration(spec, {"embed": 16, "stem.0": 8, "blocks.0.heads": 2})
    small = handle.apply(result)
    assert small.down[0].out_channels == 16 and small.pos.shape == (1, 64, 16)
    attn = small.blocks[0].self_attention
    assert isinstance(attn, PrunedAttention) and attn.returns == ("out", "mean_probs")
    with torch.no_grad():
        assert small(x).shape == (2, 10)


# ---- the one door ----------------------------------------------------------------------------------

def test_every_option_goes_through_build_spec():
    model, x = make("convnext")
    spec, _ = build("convnext", model, x, head_dim_step=16, head_step=2, mlp_step=32, heads={})
    assert spec.dim("features.1.0.pwconv1").choices[:2] == (8, 16)       # a CNN's widths all use step
    vit, x_vit = make("layer-scale-vit")
    spec, _ = build("layer-scale-vit", vit, x_vit, head_dim_step=6, head_step=2, mlp_step=32)
    assert spec.dim("blocks.0.mlp_hidden").choices == (32, 64, 96) and spec.dim("blocks.0.heads").choices == (2, 4)
    assert spec.dim("blocks.0.qk_dim").choices == (6, 12) and spec.dim("embed").choices[0] == 8
    with pytest.raises(UnsupportedModelError, match="no family recognises it; transformer: no attention"):
        build("convnext", model, x, family="transformer")
    with pytest.raises(ValueError, match="family: expected one of"):
        build("convnext", model, x, family="rnn")
    with pytest.raises(ValueError, match=r"ignore\[0\]"):
        build("convnext", model, x, ignore=[nn.Linear(2, 2)])


class StageFamily(ConvFamily):
    """A family of one module: ConvNeXt-like models, whose dims are named after their stage."""

    name = "stages"

    def find(self, model, example_input, options):
        if not isinstance(model, ConvNeXtLike):
            return family_module.Declined("not a ConvNeXtLike")
        return super().find(model, example_input, options)

    def name_dims(self, trace, sites):
        dims, dim_of = super().name_dims(trace, sites)
        renamed = {"features.0.0": "stage0", "features.2.1": "stage1"}
        for d in dims:
            if d.name in renamed:
                dim_of[d.space] = d.name = renamed[d.name]
        return dims, dim_of


def test_a_new_family_is_one_class_against_the_protocol(monkeypatch):
    monkeypatch.setattr(family_module, "FAMILIES", list(family_module.FAMILIES))
    register_family(StageFamily(), before="cnn")
    model, x = make("convnext")
    spec, handle = build("convnext", model, x)
    assert spec.meta["family"] == "stages" and {"stage0", "stage1"} <= set(spec.dim_names)
    handle.apply(mdp_opt.solve(spec, {"latency": "50%"}, backend=exact_backend()))
    other, _ = make("densenet")
    assert build("densenet", other, torch.randn(2, 3, 16, 16))[0].meta["family"] == "cnn"
    with pytest.raises(UnsupportedModelError, match="stages: not a ConvNeXtLike"):
        build("densenet", other, torch.randn(2, 3, 16, 16), family="stages")
    with pytest.raises(TypeError, match="has no find"):
        register_family(object())


def test_query_key_and_value_widths_may_differ_per_head(built):
    model, x, spec, handle = built["wide-value-vit"]
    dims = {d.name: d for d in spec.dims}
    assert max(dims["blocks.0.qk_dim"].choices) == 6 and max(dims["blocks.0.v_dim"].choices) == 12
    result = mdp_opt.solve(spec, budget={"latency": "50%"}, backend=exact_backend())
    assert result.kept["blocks.0.v_dim"] != 0
    small = handle.apply(result)
    assert small(x).shape == model(x).shape


def test_a_bias_table_module_without_inputs_is_refused_by_name_and_kept_with_ignore():
    torch.manual_seed(0)
    model, x = biased_vit().eval(), torch.randn(2, 3, 32, 32)
    with pytest.raises(UnsupportedModelError, match=r"blocks\.0\.relative_bias: TokenBiasTable .*ignore="):
        build("biased-vit", model, x)
    tables = [b.relative_bias for b in model.blocks]
    spec, handle = build("biased-vit", model, x, ignore=tables)
    pinned = spec.meta["pinned"]
    assert "blocks.0.heads" in pinned      # the table has a row per head: heads stay
    full = handle.apply(configuration(spec))
    assert_same_output(full(x), model(x))
    small = handle.apply(mdp_opt.solve(spec, budget={"latency": "50%"}, backend=exact_backend()))
    assert small(x).shape == model(x).shape


class _FailingFamily(ConvFamily):
    """A family whose reading of the model breaks on something its rules did not foresee."""
    name = "failing"

    def find(self, model, example_input, options):
        return {}["a key its rules expected"]


def test_a_family_that_breaks_while_reading_a_model_is_a_clear_refusal_not_a_traceback(monkeypatch):
    monkeypatch.setattr(family_module, "FAMILIES", list(family_module.FAMILIES))
    register_family(_FailingFamily(), before="cnn")
    model, x = make("densenet")
    with pytest.raises(UnsupportedModelError, match=r"failing family failed while reading it \(KeyError.*ignore=") \
            as caught:
        build("densenet", model, x)
    assert isinstance(caught.value.__cause__, KeyError)


PROBE_PIN = "found by running a slimmed copy at build time"


def test_a_width_the_forward_pass_reads_from_its_input_is_kept_before_the_solve(monkeypatch):
    """The mixer reshapes with `width // groups` read from its input (as CoaT's factorised attention): no
    tensor in the trace shows it, so only running a slimmed copy does. Without that probe the answer fails in
    `apply`, after the solve; with it the width is kept at build time, with the reason, and the rest prunes."""
    from mdp_opt.adapters.torch import spec_builder
    torch.manual_seed(0)
    model, x = WidthReadingNet().eval(), torch.randn(2, 3, 16, 16)
    spec, handle = build("width-reading", model, x, step=4)
    assert PROBE_PIN in spec.meta["pinned"]["stem.0"] and "RuntimeError" in spec.meta["pinned"]["stem.0"]
    assert spec.dim("stem.0").choices == (16,) and len(spec.dim("conv.0").choices) > 1
    result = mdp_opt.solve(spec, {"latency": "85%"}, backend=exact_backend())
    assert result.kept["conv.0"] < 32
    assert handle.apply(result)(x).shape == (2, 10)

    monkeypatch.setattr(spec_builder, "hard_coded_widths", lambda *args: {})
    spec, handle = build("width-reading", model, x, step=4)
    assert len(spec.dim("stem.0").choices) > 1
    result = configuration(spec, {"stem.0": 8})
    with pytest.raises(RuntimeError, match="hard-codes"):
        handle.apply(result)


@pytest.mark.parametrize("kind", list(CASES))
def test_models_that_run_slimmed_have_no_width_pinned_by_the_probe(built, kind):
    _, _, spec, _ = built[kind]
    assert not [d for d, why in spec.meta["pinned"].items() if PROBE_PIN in why]
