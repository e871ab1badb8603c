"""The Torch-Pruning bridge: a Torch-Pruning DependencyGraph as a spec, solved exactly, applied back through
Torch-Pruning."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tp = pytest.importorskip("torch_pruning",
                         reason="torch-pruning is not installed (pip install 'mdp-opt[torch-pruning]')")

from torch import nn  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import MeasuredLatency, TorchPruningHandle, spec_from_torch_pruning  # noqa: E402

from family_models import BranchNet  # noqa: E402
from flops import counted_macs  # noqa: E402
from torch_models import MobileNetV2Like, small_resnet  # noqa: E402

MODELS = {"resnet": small_resnet, "mobilenet": MobileNetV2Like}


def make(kind: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return MODELS[kind](), torch.randn(2, 3, 16, 16)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def root_widths(model: nn.Module, handle: TorchPruningHandle) -> dict[str, int]:
    modules = dict(model.named_modules())
    return {g.name: (modules[g.root].out_channels if isinstance(modules[g.root], nn.Conv2d)
                     else modules[g.root].out_features) for g in handle.groups}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_half_the_flops_solved_exactly_and_applied_through_torch_pruning(kind):
    model, x = make(kind)
    before = copy.deepcopy(model.state_dict())
    spec, handle = spec_from_torch_pruning(model, x, latency="flops", costs=("latency", "params"), step=8)
    full = mdp_opt.evaluate(spec, {d.name: d.size - 1 for d in spec.dims})
    assert full.costs == {"latency": counted_macs(model, x), "params": n_params(model)}
    result = mdp_opt.solve(spec, budget={"latency": "50%"}, backend="cpsat")
    assert result.status.value == "optimal" and result.costs["latency"] <= 0.5 * full.costs["latency"] + 1e-6
    pruned = handle.apply(result)
    assert root_widths(pruned, handle) == result.kept
    assert any(k < d.choices[-1] for d, k in zip(spec.dims, result.kept.values()))
    # the predicted cost is what the pruned model costs, counted independently (PyTorch's flop counter)
    assert counted_macs(pruned, x) == result.costs["latency"]
    assert n_params(pruned) == result.costs["params"]
    assert pruned(x).shape == model(x).shape == (2, 10)
    # the user's model is untouched; the same answer applies again
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert root_widths(handle.apply(result), handle) == result.kept
    # the classifier's group reaches the output and keeps its classes
    assert any("output" in why for why in spec.meta["pinned"].values())


def test_the_answer_is_the_exact_optimum():
    """cpsat on the bridge's spec agrees with brute-force enumeration (small spec) and with dp (the full one)."""
    model, x = make("resnet")
    spec, _ = spec_from_torch_pruning(model, x, latency="flops", step=8)
    assert mdp_opt.loads(mdp_opt.dumps(spec)) == spec                     # a plain spec: saved and loaded whole
    dp = mdp_opt.solve(spec, budget="45%", backend="dp")
    cpsat = mdp_opt.solve(spec, budget="45%", backend="cpsat")
    assert dp.status.value == cpsat.status.value == "optimal"
    assert cpsat.objective == pytest.approx(dp.objective, rel=1e-9)
    small, _ = spec_from_torch_pruning(model, x, latency="flops", step=8,
                                       ignored_layers=[model.conv1, model.layers[1][0].downsample[0],
                                                       model.layers[2][0].downsample[0]])
    assert 1 < np.prod([d.size for d in small.dims]) <= 5000
    brute = mdp_opt.solve(small, budget="60%", backend="brute")
    exact = mdp_opt.solve(small, budget="60%", backend="cpsat")
    assert exact.objective == pytest.approx(brute.objective, rel=1e-9)


def test_concatenations_are_sized_by_every_group_they_join():
    torch.manual_seed(0)
    model, x = BranchNet(), torch.randn(2, 3, 16, 16)
    spec, handle = spec_from_torch_pruning(model, x, latency="flops", costs=("latency", "params"), step=4)
    assert max(len(t.dims) for t in spec.costs["latency"]) >= 3        # fuse reads two branches and a lateral conv
    result = mdp_opt.solve(spec, budget="40%", backend="cpsat")
    pruned = handle.apply(result)
    assert counted_macs(pruned, x) == result.costs["latency"] and n_params(pruned) == result.costs["params"]


def test_taylor_importance_from_data_equals_the_users_own_backward_pass():
    model, x = make("resnet")
    data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))) for _ in range(2)]
    loss_fn = nn.CrossEntropyLoss()
    spec, _ = spec_from_torch_pruning(model, x, data=data, loss_fn=loss_fn, latency="flops", step=4)
    assert spec.meta["importance"] == "GroupTaylorImportance"
    assert all(p.grad is None for p in model.parameters())                 # the model's .grad fields are restored
    for inputs, targets in data:                                            # as a Torch-Pruning user does it
        loss_fn(model(inputs), targets).backward()
    own, _ = spec_from_torch_pruning(model, x, importance=tp.importance.GroupTaylorImportance(normalizer=None),
                                     latency="flops", step=4)
    for a, b in zip(spec.objective, own.objective):
        np.testing.assert_allclose(a.table, b.table, rtol=1e-5)
    magnitude, _ = spec_from_torch_pruning(model, x, latency="flops", step=4)
    assert magnitude.meta["importance"] == "GroupMagnitudeImportance"
    assert sum(t.table[-1] for t in magnitude.objective) == pytest.approx(1.0)


def test_in_place_like_torch_pruning_and_reading_a_torch_pruning_model():
    model, x = make("resnet")
    spec, handle = spec_from_torch_pruning(model, x, latency="flops", step=8,
                                           importance=tp.importance.GroupMagnitudeImportance())
    # Torch-Pruning's own uniform pruner on a copy (widths 16/32/64 -> 8/16/32, choices at step 8): the handle
    # reads its configuration and its exact cost
    theirs = copy.deepcopy(model)
    tp.pruner.MetaPruner(theirs, x, importance=tp.importance.GroupMagnitudeImportance(), pruning_ratio=0.5,
                         ignored_layers=[theirs.fc]).step()
    uniform = handle.result_of(theirs)
    assert uniform.costs["latency"] == counted_macs(theirs, x)
    ours = mdp_opt.solve(spec, budget=uniform.costs["latency"], backend="cpsat")
    assert ours.objective >= uniform.objective - 1e-12                      # exact beats (or ties) the uniform ratio
    pruned = handle.apply(ours, inplace=True)
    assert pruned is model and counted_macs(model, x) == ours.costs["latency"]
    with pytest.raises(ValueError, match="in place"):
        handle.apply(ours)


def test_measured_and_callable_latency(tmp_path):
    model, x = make("mobilenet")
    x = x[:1]
    measured = MeasuredLatency(repeats=3, warmup=1, cache_dir=tmp_path, progress=False, calibrate="factor",
                               flush_mb=1)
    spec, handle = spec_from_torch_pruning(model, x, latency=measured, step=16)
    assert set(spec.costs) == {"latency"} and "latency_calibration" in spec.meta
    # every conv / Linear shape was timed once and cached (at 16 px the layers take microseconds: the timings
    # are too close to noise here to ask which configuration is faster)
    cached = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert len(cached["entries"]) >= sum(t.table.size for t in spec.costs["latency"] if t.dims) // 2
    result = mdp_opt.solve(spec, budget="100%", backend="cpsat")
    assert root_widths(handle.apply(result), handle) == result.kept
    calls = []
    spec2, _ = spec_from_torch_pruning(model, x, latency=lambda w: calls.append(w) or w.macs / 1e6, step=16)
    assert calls and all(w.macs > 0 for w in calls)
    assert mdp_opt.evaluate(spec2, {d.name: d.size - 1 for d in spec2.dims}).costs["latency"] == \
        pytest.approx(counted_macs(model, x) / 1e6)


class GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.head = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)
        self.spare = nn.Linear(4, 4)                   # never runs: its parameters are a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(torch.relu(self.grouped(torch.relu(self.stem(x))))).mean((2, 3)))


def test_a_grouped_convolution_is_refused_with_the_fix_that_works():
    torch.manual_seed(0)
    model, x = GroupedNet(), torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"grouped.*groups=4.*ignored_layers=\[model\.grouped, model\.stem\]"):
        spec_from_torch_pruning(model, x, latency="flops", step=4)
    spec, handle = spec_from_torch_pruning(model, x, latency="flops", costs=("latency", "params"), step=4,
                                           ignored_layers=[model.grouped, model.stem])
    assert spec.dim_names == ("head",)
    result = mdp_opt.solve(spec, budget={"latency": "90%"}, backend="cpsat")    # stem and grouped conv are fixed
    pruned = handle.apply(result)
    assert result.kept["head"] < 16
    assert counted_macs(pruned, x) == result.costs["latency"] and n_params(pruned) == result.costs["params"]


def test_bad_inputs_are_refused_clearly(monkeypatch):
    model, x = make("resnet")
    ok = dict(latency="flops", step=4)
    cases = [
        (dict(importance="taylor"), TypeError, "importance: expected a Torch-Pruning importance"),
        (dict(data=[(x, torch.zeros(2, dtype=torch.long))]), ValueError, "data, loss_fn: give both"),
        (dict(data=[(x, torch.zeros(2, dtype=torch.long))], loss_fn=nn.CrossEntropyLoss(),
              importance=tp.importance.GroupMagnitudeImportance()), ValueError, "data: only a Taylor importance"),
        (dict(importance=tp.importance.GroupTaylorImportance()), ValueError, r"loss\.backward\(\)"),
        (dict(importance=lambda group: -torch.ones(len(group[0].idxs))), ValueError, "finite scores >= 0"),
        (dict(step=0), ValueError, "step: expected a positive integer"),
        (dict(min_channels=1.5), ValueError, "min_channels: a fraction must be in"),
        (dict(costs=("latency", "energy")), ValueError, "costs: expected"),
        (dict(latency="fast"), ValueError, "latency: expected"),
        (dict(ignored_layers=model.fc), TypeError, "ignored_layers=\\[module\\]"),
        (dict(ignored_layers=[nn.Linear(2, 2)]), ValueError, r"ignored_layers\[0\]: expected a submodule"),
        (dict(data=[], loss_fn=nn.CrossEntropyLoss()), ValueError, "data: no batches"),
    ]
    for extra, error, message in cases:
        with pytest.raises(error, match=message):
            spec_from_torch_pruning(model, x, **{**ok, **extra})
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        spec_from_torch_pruning("resnet", x)
    spec, handle = spec_from_torch_pruning(model, x, **ok)
    other, _ = spec_from_torch_pruning(*make("mobilenet"), latency="flops", step=8)
    with pytest.raises(ValueError, match="do not match this handle's spec"):
        handle.apply(mdp_opt.solve(other, budget="50%", backend="cpsat"))
    with pytest.raises(ValueError, match="not one of the spec's choices"):
        handle.result_of(_odd_width(model))
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(ImportError, match=r"pip install 'mdp-opt\[torch-pruning\]'"):
        spec_from_torch_pruning(model, x, **ok)


def _odd_width(model: nn.Module) -> nn.Module:
    """A copy of the model whose stem group keeps 13 channels (not a multiple of step=4), pruned by Torch-Pruning."""
    other = copy.deepcopy(model)
    dg = tp.DependencyGraph().build_dependency(other, torch.randn(1, 3, 16, 16), verbose=False)
    dg.get_pruning_group(other.conv1, tp.prune_conv_out_channels, [0, 1, 2]).prune()
    return other


ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_snippet_runs_as_written():
    snippet = re.search(r"### Torch-Pruning users\n.*?```python\n(.*?)```", (ROOT / "README.md").read_text(),
                        re.S).group(1)
    model, x = make("resnet")
    namespace = {"model": model, "example_input": x}
    exec(compile(snippet, "README.md", "exec"), namespace)
    result, pruned = namespace["result"], namespace["pruned"]
    assert result.status.value == "optimal"
    assert counted_macs(pruned, x) == result.costs["latency"] <= 0.5 * counted_macs(model, x)


def test_the_swap_example_beats_the_uniform_ratio_at_the_same_flops(capsys):
    spec = importlib.util.spec_from_file_location("torch_pruning_swap", ROOT / "examples" / "torch_pruning_swap.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.main(ratio=0.5)
    dense, uniform, exact = rows.values()
    assert exact["macs"] <= uniform["macs"] < dense["macs"]
    assert exact["importance kept"] > uniform["importance kept"]
    out = capsys.readouterr().out
    assert "Torch-Pruning ratio 0.5" in out and "mdp-opt exact" in out and "optimal" in out


def test_the_adapter_imports_without_torch_pruning():
    code = ("import sys; sys.modules['torch_pruning'] = None\n"
            "from mdp_opt.adapters.torch import build_spec, spec_from_torch_pruning\n"
            "try:\n    spec_from_torch_pruning(None, None)\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'mdp-opt[torch-pruning]'" in out.stdout
