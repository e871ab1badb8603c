"""The PyTorch adapter on hand-written CNNs: spec -> solve -> physically slimmed model."""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import (MeasuredLatency, UnsupportedModelError, Workload, build_spec,  # noqa: E402
                                    measure_latency)
from mdp_opt.adapters.torch.importance import taylor_scores  # noqa: E402
from mdp_opt.result import Answer, Status  # noqa: E402
from mdp_opt.solve import verify  # noqa: E402

from torch_models import (BasicBlock, Bottleneck, InvertedResidual, MobileNetV2Like, VGGLike,  # noqa: E402
                          small_resnet)

MODELS = {"resnet": small_resnet, "mobilenet": MobileNetV2Like, "vgg": VGGLike}


def exact_backend() -> str:
    for name in ("cpsat", "milp", "dp"):
        if name in mdp_opt.installed_backends():
            return name
    pytest.skip("no exact backend installed (cpsat, milp or dp)")


def make(kind: str) -> tuple[nn.Module, torch.Tensor, list]:
    torch.manual_seed(0)
    model = MODELS[kind]()
    _randomize_bn(model)
    x = torch.randn(2, 3, 16, 16)
    data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(2)]
    return model, x, data


def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so pruning the wrong channels shows."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def count_flops_params(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of conv and linear layers, from the modules' own shapes, and the parameter count."""
    macs = 0

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            macs += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            macs += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return macs, sum(p.numel() for p in model.parameters())


def result_for(spec: mdp_opt.Spec, kept: dict[str, int] | None = None, removed: tuple[str, ...] = ()) -> mdp_opt.Result:
    """A verified result for a chosen configuration (full width unless `kept` says otherwise)."""
    choice = {d.name: d.choices.index(kept[d.name]) if kept and d.name in kept else d.size - 1 for d in spec.dims}
    active = {b: b not in removed for b in spec.block_names}
    return verify(spec, {}, Answer(Status.FEASIBLE, choice, active), "manual", 0.0)


@pytest.fixture(scope="module")
def built() -> dict:
    out = {}
    for kind in MODELS:
        model, x, data = make(kind)
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops",
                                  costs=("flops", "params"), step=8)
        out[kind] = (model, x, spec, handle)
    return out


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("percent", [30, 50, 70])
def test_round_trip_widths_and_exact_costs(built, kind, percent):
    model, x, spec, handle = built[kind]
    result = mdp_opt.solve(spec, budget={"flops": f"{percent}%"}, backend=exact_backend(), time_limit=60)
    assert result.status == Status.OPTIMAL
    small = handle.apply(result)
    with torch.no_grad():
        assert small.eval()(x).shape == model.eval()(x).shape
    macs, params = count_flops_params(small, x)
    assert macs == result.costs["flops"] <= percent / 100 * spec.full_costs()["flops"]
    assert params == result.costs["params"]
    modules = dict(small.named_modules())
    removed = [b for b, a in result.active.items() if not a]
    for b in removed:
        assert isinstance(modules[b], nn.Identity)
    for layer in handle.layers:
        if any(layer.name.startswith(b + ".") for b in removed):
            assert layer.name not in modules
            continue
        m = modules[layer.name]
        if isinstance(m, nn.Linear):
            out_w, in_w = m.out_features, m.in_features
        elif isinstance(m, nn.BatchNorm2d):
            out_w = in_w = m.num_features
        else:
            out_w, in_w = m.out_channels, m.in_channels
        assert out_w == (result.kept[layer.out_dim] if layer.out_dim else layer.out_width), layer.name
        assert in_w == (result.kept[layer.in_dim] if layer.in_dim else layer.in_width), layer.name


def test_full_costs_match_the_unpruned_model(built):
    for model, x, spec, _ in built.values():
        macs, params = count_flops_params(model, x)
        assert spec.full_costs() == {"flops": macs, "params": params}


def test_several_budgets_at_once(built):
    model, x, spec, handle = built["resnet"]
    result = mdp_opt.solve(spec, budget={"flops": "60%", "params": "40%"}, backend=exact_backend(), time_limit=60)
    macs, params = count_flops_params(handle.apply(result), x)
    full = spec.full_costs()
    assert (macs, params) == (result.costs["flops"], result.costs["params"])
    assert macs <= 0.6 * full["flops"] and params <= 0.4 * full["params"]


def test_apply_leaves_the_model_alone_and_full_keeps_the_output(built):
    for model, x, spec, handle in built.values():
        before = {k: v.clone() for k, v in model.state_dict().items()}
        structure = repr(model)
        small_result = mdp_opt.solve(spec, budget={"flops": "40%"}, backend=exact_backend(), time_limit=60)
        handle.apply(small_result)
        assert repr(model) == structure
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        full = handle.apply(result_for(spec))
        with torch.no_grad():
            assert torch.equal(full.eval()(x), model.eval()(x))
        assert full is not model


def test_auto_blocks_are_the_identity_shortcut_blocks():
    for kind, is_block in (("resnet", lambda m: isinstance(m, (BasicBlock, Bottleneck))),
                           ("mobilenet", lambda m: isinstance(m, InvertedResidual))):
        model, x, data = make(kind)
        spec, _ = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops", costs=("params",))
        expected = [n for n, m in model.named_modules() if is_block(m)
                    and (getattr(m, "downsample", "x") is None or getattr(m, "use_residual", False))]
        assert list(spec.block_names) == expected and expected


def test_removed_block_becomes_the_identity(built):
    model, x, spec, handle = built["mobilenet"]
    block = spec.block_names[0]
    small = handle.apply(result_for(spec, removed=(block,)))
    reference = copy.deepcopy(model)
    reference.set_submodule(block, nn.Identity())
    with torch.no_grad():
        assert torch.equal(small.eval()(x), reference.eval()(x))
    printed = io.StringIO()
    text = handle.describe(result_for(spec, removed=(block,)), file=printed)
    assert printed.getvalue().strip() == text and block in text.splitlines()[-2]


def test_blocks_none_and_explicit_list():
    model, x, data = make("resnet")
    spec, _ = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops", costs=("params",), blocks=None)
    assert spec.block_names == ()
    chosen = [model.layers[0][1], model.layers[2][1]]
    spec, _ = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops", costs=("params",),
                         blocks=chosen)
    assert spec.block_names == ("layers.0.1", "layers.2.1")
    with pytest.raises(UnsupportedModelError, match="blocks\\[0\\] \\(layers.1.0\\)"):
        build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops", costs=("params",),
                   blocks=[model.layers[1][0]])


def test_step_minimum_and_ignore():
    model, x, data = make("resnet")
    pinned = model.layers[2][1].conv1
    spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops", costs=("params",),
                              step=4, min_channels=0.5, ignore=[pinned])
    widths = {d.name: d.width for d in handle.dims.values()}
    for d in spec.dims:
        assert 0 not in d.choices and d.choices[-1] == widths[d.name]
        assert all(c % 4 == 0 or c == widths[d.name] for c in d.choices)
        assert min(d.choices) >= widths[d.name] / 2
    assert spec.dim("layers.2.1.conv1").choices == (16,)
    assert spec.dim("fc").choices == (10,)          # the model's output keeps its width
    spec, _ = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops", costs=("params",),
                         step=8, min_channels={model.layers[1][1].conv1: 24})
    assert spec.dim("layers.1.1.conv1").choices == (24, 32) and spec.dim("layers.1.0.conv1").choices == (8, 16, 24, 32)


def test_taylor_scores_follow_the_formula():
    model, x, data = make("vgg")
    scores = taylor_scores(model, ["features.1"], data, F.cross_entropy)
    bn = model.features[1]
    expected = torch.zeros(bn.num_features, dtype=torch.float64)
    for inputs, targets in data:
        model.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        expected += ((bn.weight * bn.weight.grad + bn.bias * bn.bias.grad).detach().double()) ** 2
    np.testing.assert_allclose(scores["features.1"], expected.numpy(), rtol=1e-6)
    assert scores["features.1"].max() > 0


def test_taylor_objective_is_the_fraction_of_importance_kept(built):
    for _, _, spec, _ in built.values():
        full = mdp_opt.evaluate(spec, spec.full_configuration()[0]).value
        assert full == pytest.approx(1.0)


def test_shared_dim_uses_one_ranking_for_every_block_share():
    """The stage dim of a ResNet is scored by layers in several blocks: each block's term must use the
    dim's total ranking, and apply must keep exactly those channels."""
    model, x, _ = make("resnet")
    layers = ["bn1", "layers.0.0.bn2", "layers.0.1.bn2"]
    rng = np.random.default_rng(1)
    given = {name: rng.permutation(16).astype(float) ** 2 for name in layers}
    importance = dict(given)
    for d_layer in ["layers.0.0.bn1", "layers.0.1.bn1", "layers.1.0.bn1", "layers.1.0.bn2", "layers.1.1.bn1",
                    "layers.2.0.bn1", "layers.2.0.bn2", "layers.2.0.bn3", "layers.2.1.bn1", "layers.2.1.bn2"]:
        importance[d_layer] = np.ones(dict(model.named_modules())[d_layer].num_features)
    spec, handle = build_spec(model, x, importance=importance, latency="flops", costs=("params",), step=4)
    total = sum(given.values())
    top = np.argsort(-total, kind="stable")
    terms = {t.block: t.table for t in spec.objective if t.dims == ("conv1",)}
    for name, block in zip(layers, [None, "layers.0.0", "layers.0.1"]):
        expected = [given[name][top[:k]].sum() for k in spec.dim("conv1").choices]
        np.testing.assert_allclose(terms[block], expected)
    chosen = result_for(spec, kept={"conv1": 8})
    small = handle.apply(chosen)
    np.testing.assert_array_equal(handle.kept_channels(chosen)["conv1"], top[:8])
    kept = np.sort(top[:8])
    assert torch.equal(small.conv1.weight, model.conv1.weight[kept])
    assert torch.equal(small.layers[0][1].bn2.bias, model.layers[0][1].bn2.bias[kept])


def test_importance_must_cover_every_prunable_dim():
    model, x, _ = make("vgg")
    with pytest.raises(ValueError, match="no scores for dim"):
        build_spec(model, x, importance={model.features[1]: np.ones(16)}, latency="flops", costs=("params",))
    with pytest.raises(ValueError, match=r"importance\[features.1\]: expected 16"):
        build_spec(model, x, importance={model.features[1]: np.ones(3)}, latency="flops", costs=("params",))


def test_depthwise_convs_cost_one_dim(built):
    _, _, spec, handle = built["mobilenet"]
    depthwise = {layer.out_dim for layer in handle.layers if layer.kind == "Conv2d" and layer.out_dim == layer.in_dim}
    arity_one = {t.dims[0] for t in spec.costs["flops"] if len(t.dims) == 1}
    assert depthwise and depthwise <= arity_one
    assert all(len(t.dims) <= 2 for t in spec.costs["flops"])


def test_latency_callable_gets_workloads():
    model, x, data = make("vgg")
    seen = []

    def cost(w: Workload) -> float:
        seen.append(w)
        return float(w.macs)

    spec, _ = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=cost, costs=("latency", "flops"))
    assert seen and all(isinstance(w, Workload) for w in seen)
    assert spec.full_costs()["latency"] == spec.full_costs()["flops"]


def test_measured_latency_tables_are_cached(tmp_path):
    torch.manual_seed(0)
    model = VGGLike()
    x = torch.randn(1, 3, 8, 8)
    data = [(torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,)))]
    timer = MeasuredLatency(repeats=2, warmup=1, cache_dir=tmp_path, progress=False, calibrate=False)
    spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=timer, step=16)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and "threads1" in files[0].name and "batch1" in files[0].name
    cached = json.loads(files[0].read_text())["entries"]
    # 0.0 is a valid entry: a layer cheaper than the call overhead the timer subtracts (an in-place relu on
    # 16 elements measures a few microseconds, within that overhead's noise); every convolution costs more
    assert cached and all(math.isfinite(e["ms"]) and e["ms"] >= 0 for e in cached.values())
    assert all(e["ms"] > 0 for key, e in cached.items() if key.startswith("Conv2d("))
    assert sum(key.startswith("Conv2d(") for key in cached) >= 4
    again, _ = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=timer, step=16)
    assert again.costs == spec.costs      # identical tables: read back, not timed again
    smallest = mdp_opt.evaluate(spec, {d.name: 0 for d in spec.dims}).costs["latency"]
    budget = (smallest + spec.full_costs()["latency"]) / 2
    result = mdp_opt.solve(spec, budget=budget, backend=exact_backend(), time_limit=60)
    assert result.has_solution and result.costs["latency"] <= budget * (1 + 1e-9)
    assert measure_latency(handle.apply(result), x, repeats=3) > 0


@pytest.mark.parametrize("bad, message", [
    (dict(step=0), "step"), (dict(costs=("speed",)), "costs"), (dict(costs="params"), "costs"),
    (dict(latency="fast"), "latency"), (dict(min_channels=1.5), "min_channels"),
])
def test_bad_arguments_name_the_field(bad, message):
    model, x, data = make("vgg")
    kwargs = dict(data=data, loss_fn=F.cross_entropy, latency="flops", costs=("params",))
    kwargs.update(bad)
    with pytest.raises(ValueError, match=message):
        build_spec(model, x, **kwargs)
    with pytest.raises(ValueError, match="importance"):
        build_spec(model, x, latency="flops")


@pytest.mark.parametrize("factory", ["resnet50", "mobilenet_v2"])
def test_torchvision_models_round_trip(factory):
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = getattr(models, factory)(num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    data = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))]
    spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops",
                              costs=("flops", "params"), step=32)
    assert spec.block_names
    result = mdp_opt.solve(spec, budget={"flops": "50%"}, backend=exact_backend(), time_limit=120)
    small = handle.apply(result)
    assert count_flops_params(small, x) == (result.costs["flops"], result.costs["params"])


class _GroupedChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.b = nn.Conv2d(16, 24, 3, padding=1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(F.relu(self.grouped(F.relu(self.a(x)))))
        return self.fc(x.mean((2, 3)))


class _ConcatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], dim=1)).mean((2, 3))


def test_grouped_conv_keeps_its_widths_and_the_rest_is_pruned():
    torch.manual_seed(0)
    model, x = _GroupedChain(), torch.randn(1, 3, 8, 8)
    importance = {model.a: torch.rand(16), model.grouped: torch.rand(16), model.b: torch.rand(24)}
    spec, handle = build_spec(model, x, importance=importance, latency="flops", costs=("flops", "params"), step=8)
    assert spec.dim("a").choices == (16,) and spec.dim("grouped").choices == (16,)
    assert spec.dim("b").choices == (8, 16, 24)
    assert set(spec.meta["pinned"]) == {"a", "grouped", "fc"}
    result = mdp_opt.solve(spec, budget={"flops": "90%"}, backend=exact_backend(), time_limit=60)
    small = handle.apply(result)
    assert small.b.out_channels == result.kept["b"] < 24
    assert count_flops_params(small, x) == (result.costs["flops"], result.costs["params"])


def test_concatenated_channels_are_one_input_axis_per_producer():
    """c reads cat([a, b]): its cost table has one axis per producer, and apply keeps c's input columns in
    the order of the concatenation (a's kept channels, then b's)."""
    torch.manual_seed(0)
    model, x = _ConcatNet(), torch.randn(1, 3, 8, 8)
    importance = {model.a: torch.arange(8.0), model.b: -torch.arange(8.0), model.c: torch.ones(8)}
    spec, handle = build_spec(model, x, importance=importance, latency="flops", costs=("flops", "params"), step=4)
    flops = {t.dims: t.table for t in spec.costs["flops"]}
    assert flops[("a", "b", "c")].shape == (2, 2, 1)   # c's table: a x b x c (the model output: one choice)
    small = handle.apply(result_for(spec, kept={"a": 4, "b": 4}))
    a_kept, b_kept = [4, 5, 6, 7], [0, 1, 2, 3]
    assert torch.equal(small.c.weight, model.c.weight[:, a_kept + [8 + i for i in b_kept]])
    assert count_flops_params(small, x) == (mdp_opt.evaluate(spec, result_for(spec, kept={"a": 4, "b": 4}).choice
                                                             ).costs["flops"], sum(p.numel() for p in small.parameters()))


def test_spec_survives_json(built):
    for _, _, spec, _ in built.values():
        again = mdp_opt.loads(mdp_opt.dumps(spec))
        assert again == spec and dict(again.meta) == json.loads(json.dumps(dict(spec.meta)))


class _ChannelMix(nn.Module):
    """A layer the adapter has no rules for: it mixes channels with a matrix."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.weight)


def test_layer_with_parameters_and_no_handler_is_refused_or_kept_as_it_is():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), _ChannelMix(8), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(UnsupportedModelError, match="1: _ChannelMix has parameters but no handler; register one.*"
                                                     "ignore="):
        build_spec(model, x, importance={model[0]: np.ones(8)}, latency="flops", costs=("params",))
    spec, _ = build_spec(model, x, importance={model[0]: np.ones(8)}, latency="flops", costs=("params",),
                         ignore=[model[1]])
    assert spec.dim("0").choices == (8,) and "1: _ChannelMix is kept as it is" in spec.meta["pinned"]["0"]


def test_a_layer_with_one_parameter_per_channel_follows_its_channels():
    """PReLU (no handler of its own): its per-channel slopes are sliced with the channels they scale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.linspace(0.1, 0.8, 8))
    x = torch.randn(1, 3, 8, 8)
    spec, handle = build_spec(model, x, importance={model[0]: torch.arange(8.0)}, latency="flops",
                              costs=("params",), step=4)
    small = handle.apply(result_for(spec, kept={"0": 4}))
    assert torch.equal(small[1].weight, model[1].weight[4:]) and small[1].num_parameters == 4
    assert sum(p.numel() for p in small.parameters()) == mdp_opt.evaluate(
        spec, result_for(spec, kept={"0": 4}).choice).costs["params"]


class _HardCodedView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)).reshape(-1, 16))


def test_a_width_hard_coded_in_the_forward_is_kept_at_build_time_and_named_when_applying(tmp_path, monkeypatch):
    """`reshape(-1, 16)` with a literal: the trace follows the width (the size argument is the channel count),
    but the slimmed model cannot. `build_spec` runs a slimmed copy and keeps the width; without that probe,
    apply says so."""
    from mdp_opt.adapters.torch import spec_builder
    model = _HardCodedView()
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False, calibrate=False)
    x = torch.randn(1, 3, 4, 4)
    spec, handle = build_spec(model, x, importance={model.conv: np.ones(16)}, latency=timer, step=8)
    assert spec.dim("conv").choices == (16,) and "hard-coded" in spec.meta["pinned"]["conv"]
    monkeypatch.setattr(spec_builder, "hard_coded_widths", lambda *args: {})
    spec, handle = build_spec(model, x, importance={model.conv: np.ones(16)}, latency=timer, step=8)
    assert spec.dim("conv").choices == (8, 16)
    with pytest.raises(RuntimeError, match="the slimmed model fails on the example input.*ignore="):
        handle.apply(result_for(spec, kept={"conv": 8}))


class _WidthFromAttribute(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.channels = 16
        self.conv, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)).reshape(-1, self.channels))


def test_a_width_read_from_an_attribute_follows_the_channels():
    model, x = _WidthFromAttribute(), torch.randn(2, 3, 4, 4)
    spec, handle = build_spec(model, x, importance={model.conv: np.ones(16)}, latency="flops", step=8)
    small = handle.apply(result_for(spec, kept={"conv": 8}))
    assert small.channels == 8 and model.channels == 16 and small(x).shape == (2, 4)


class _SharedConv(nn.Module):
    """One convolution applied twice: both calls read and write the same channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.shared, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        return self.fc(self.shared(F.relu(self.shared(x))).mean((2, 3)))


def test_a_layer_called_twice_keeps_one_set_of_channels():
    torch.manual_seed(0)
    model, x = _SharedConv(), torch.randn(2, 3, 8, 8)
    spec, handle = build_spec(model, x, importance={model.stem: torch.rand(16)}, latency="flops",
                              costs=("flops", "params"), step=8)
    assert spec.dim_names == ("stem", "fc")      # stem's output, shared's input and its output: one dim
    result = result_for(spec, kept={"stem": 8})
    small = handle.apply(result)
    assert small.shared.weight.shape == (8, 8, 3, 3) and small(x).shape == (2, 4)
    assert count_flops_params(small, x) == (result.costs["flops"], result.costs["params"])


class _StandardisedConv2d(nn.Conv2d):
    """A weight-standardised convolution (as NF-ResNet's): a learned gain per output channel, shaped
    (out, 1, 1, 1), besides the weight and bias; its constructor is not nn.Conv2d's (measuring its latency
    tables copies it rather than calling it)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, padding: int = 0, gain_init: float = 0.5) -> None:
        super().__init__(c_in, c_out, kernel_size, padding=padding)
        self.gain = nn.Parameter(gain_init + torch.rand(self.out_channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5) * self.gain
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def test_a_convolution_s_own_per_output_channel_parameters_follow_its_channels_and_it_is_timed(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(_StandardisedConv2d(3, 16, 3, padding=1), nn.ReLU(), _StandardisedConv2d(16, 32, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4)).eval()
    x = torch.randn(1, 3, 8, 8)
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False, calibrate=False)
    spec, handle = build_spec(model, x, importance={model[0]: torch.arange(16.0), model[2]: torch.arange(32.0)},
                              latency=timer, costs=("latency", "params"), step=8)
    assert len(spec.dim("0").choices) > 1 and not spec.meta["pinned"].get("0")
    result = result_for(spec, kept={"0": 8, "2": 16})
    small = handle.apply(result)
    assert torch.equal(small[0].gain, model[0].gain[8:]) and torch.equal(small[2].gain, model[2].gain[16:])
    assert sum(p.numel() for p in small.parameters()) == result.costs["params"]
    assert spec.full_costs()["params"] == sum(p.numel() for p in model.parameters())
    assert small(x).shape == (1, 4)


class _GatedLinear(nn.Linear):
    """A Linear subclass with its own constructor and a learned gate per output feature."""

    def __init__(self, features_in: int, features_out: int, gate_init: float = 0.5) -> None:
        super().__init__(features_in, features_out)
        self.gate = nn.Parameter(gate_init + torch.rand(features_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gate


def test_a_linear_subclass_s_own_per_output_parameters_follow_its_features_and_it_is_timed(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), _GatedLinear(48, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(2, 3, 4, 4)
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False, calibrate=False)
    spec, handle = build_spec(model, x, importance={model[1]: torch.arange(32.0)}, latency=timer,
                              costs=("latency", "params"), step=8)
    result = result_for(spec, kept={"1": 16})
    small = handle.apply(result)
    assert torch.equal(small[1].gate, model[1].gate[16:]) and small[1].out_features == 16
    assert sum(p.numel() for p in small.parameters()) == result.costs["params"]
    assert spec.full_costs()["params"] == sum(p.numel() for p in model.parameters())
    assert small(x).shape == (2, 4)


def _written_by_layers(model: nn.Module, x: torch.Tensor) -> int:
    """Elements the leaf modules of `model` write on `x` (their outputs), counted with forward hooks."""
    total = 0

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


def test_activations_are_the_elements_the_layers_write():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))
    x = torch.randn(2, 3, 16, 16)
    data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(2)]
    spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency="flops",
                              costs=("activations",), step=4)
    assert spec.full_costs()["activations"] == _written_by_layers(model, x)
    result = mdp_opt.solve(spec, budget={"activations": "50%"}, backend=exact_backend(), time_limit=60)
    assert result.status == Status.OPTIMAL and any(result.kept[d.name] < d.choices[-1] for d in spec.dims)
    assert result.costs["activations"] == _written_by_layers(handle.apply(result), x)
