"""Pruning inside a training loop: `prune_in_place` (the user's model object slimmed, its optimizer sliced) and
`IterativePruner` (Taylor importance from the user's own backward passes, exact solves on a schedule, checkpoints).

Real hand-written models (tests/torch_models.py, vit_models.py, family_models.py), real solves, exact MACs as the
latency (`latency="flops"`), so every number is checkable."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import (Configuration, IterativePruner, PrunedAttention, build_spec,  # noqa: E402
                                    prune_in_place, rebuild)
from mdp_opt.adapters.torch.importance import taylor_scores  # noqa: E402
from mdp_opt.adapters.torch.scores import _site_scores  # noqa: E402

from family_models import BranchNet  # noqa: E402
from flops import counted_macs  # noqa: E402
from torch_models import small_resnet  # noqa: E402
from vit_models import TimmStyleViT  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::mdp_opt.adapters.torch.ImportanceWarning")


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models run 10-25x slower with two threads on a shared two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vit() -> nn.Module:
    return TimmStyleViT(image_size=16, patch=4, dim=32, depth=2, num_heads=4, mlp_hidden=64, num_classes=10)


def toy(model_fn, size: int, seed: int = 0, batches: int = 3, batch: int = 4):
    torch.manual_seed(seed)
    model = model_fn()
    data = [(torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))) for _ in range(batches)]
    return model, data


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data, rounds: int = 1, pruner=None) -> list[float]:
    model.train()
    losses = []
    for _ in range(rounds):
        for x, y in data:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if pruner is not None:
                pruner.step()
    return losses


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def solve_removing_blocks(spec, budgets=("40%", "30%", "25%", "20%", "15%", "10%")):
    for b in budgets:
        result = mdp_opt.solve(spec, b)
        if result.has_solution and not all(result.active.values()):
            return result
    raise AssertionError("no budget removed a block")


# ---- prune_in_place --------------------------------------------------------------------------------------------
def test_in_place_cnn_with_blocks_removed_matches_apply_and_slices_momentum():
    model, data = toy(small_resnet, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, data)
    x = data[0][0]
    model.eval()
    spec, handle = build_spec(model, x, data=data, loss_fn=nn.functional.cross_entropy, latency="flops", step=4)
    result = solve_removing_blocks(spec)
    expected = outputs(handle.apply(result), x)
    conv = model.layers[1][0].conv1                      # stage 2's first conv: out and in channels are dims
    widths = next(layer for layer in handle.layers if layer.name == "layers.1.0.conv1")
    weight, momentum = conv.weight, opt.state[conv.weight]["momentum_buffer"].clone()
    before = {n: p for n, p in model.named_parameters()}
    config = Configuration.of(handle, result)

    report = prune_in_place(model, handle, result, opt)

    assert torch.equal(outputs(model, x), expected)
    removed = [b for b, a in result.active.items() if not a]
    assert all(isinstance(model.get_submodule(b), nn.Identity) for b in removed)
    assert set(report.replaced_modules) == set(removed)
    kept, inputs = list(config.kept[widths.out_dim]), list(config.kept[widths.in_dim])
    assert model.layers[1][0].conv1.weight is weight and weight.shape[:2] == (len(kept), len(inputs))
    assert len(kept) < 32
    assert torch.equal(opt.state[weight]["momentum_buffer"], momentum[kept][:, inputs])
    gone = {n for n, p in before.items() if not any(p is q for q in model.parameters())}
    assert gone and gone == set(report.removed_parameters)
    assert all(any(p is q for q in model.parameters()) for n, p in before.items() if n not in gone)   # identity
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in in_opt} == {id(p) for p in model.parameters()}
    for p in in_opt:
        assert opt.state[p]["momentum_buffer"].shape == p.shape
    bn = model.layers[1][0].bn1
    assert bn.running_mean.shape == (len(kept),)
    with pytest.raises(ValueError, match="already pruned in place"):
        prune_in_place(model, handle, result, opt)


def test_in_place_training_continues_and_loss_decreases():
    model, data = toy(small_resnet, 16, batches=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, data, rounds=2)
    spec, handle = build_spec(model, data[0][0], data=data, loss_fn=nn.functional.cross_entropy, latency="flops",
                              step=4)
    prune_in_place(model, handle, mdp_opt.solve(spec, "50%"), opt)
    losses = train(model, opt, data, rounds=8)
    assert losses[-1] < 0.5 * losses[0]


def test_in_place_while_a_wrapper_holds_the_parameters_and_their_gradient_accumulators():
    """As a DistributedDataParallel reducer does: references forbid swapping the tensors, and the old gradient
    accumulators stay alive; the slimmed parameters must still get gradients of their new shapes (a wrapper made
    afterwards must not find the old accumulators either)."""
    import weakref
    model, data = toy(small_resnet, 16, batches=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, data)
    spec, handle = build_spec(model, data[0][0], data=data, loss_fn=nn.functional.cross_entropy, latency="flops",
                              step=4)
    shapes = {id(p): p.shape for p in model.parameters()}
    refs = [weakref.ref(p) for p in model.parameters()]                               # noqa: F841
    held = [p.expand_as(p).grad_fn.next_functions[0][0] for p in model.parameters()]
    report = prune_in_place(model, handle, mdp_opt.solve(spec, "50%"), opt)
    resized = [p for p in model.parameters() if id(p) in shapes and p.shape != shapes[id(p)]]
    assert resized and report.resized                   # the same objects, of new shapes
    for p in resized:
        assert not any(p.expand_as(p).grad_fn.next_functions[0][0] is acc for acc in held)
    losses = train(model, opt, data, rounds=2)          # backward and steps at the new shapes
    assert all(np.isfinite(losses))
    assert all(p.grad is None or p.grad.shape == p.shape for p in model.parameters())


def test_in_place_concat_model_with_adam():
    model, data = toy(BranchNet, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, data)
    x = data[0][0]
    spec, handle = build_spec(model, x, data=data, loss_fn=nn.functional.cross_entropy, latency="flops", step=4)
    result = mdp_opt.solve(spec, "40%")
    expected = outputs(handle.apply(result), x)
    fuse = model.fuse[0].weight                 # reads the concatenation of `lateral` (upsampled) and inception
    old = {k: v.clone() for k, v in opt.state[fuse].items()}
    config = Configuration.of(handle, result)
    prune_in_place(model, handle, result, opt)
    assert torch.equal(outputs(model, x), expected)
    out_dim = next(d for d, info in handle.dims.items() if "fuse.0" in info.layers)
    in_dims = [d for d, info in handle.dims.items() if "lateral.0" in info.layers or "inception.b1.0" in info.layers]
    assert len(in_dims) == 2 and model.fuse[0].weight is fuse
    rows = list(config.kept[out_dim])
    lateral = next(d for d in in_dims if "lateral.0" in handle.dims[d].layers)
    inception = [d for d in handle.dims if d.startswith("inception.") and d != "inception"]
    cols = list(config.kept[lateral])                            # the concatenation's first part: `up`
    assert fuse.shape[1] == len(cols) + sum(len(config.kept[d]) for d in handle.dims
                                            if handle.dims[d].layers and set(handle.dims[d].layers)
                                            & {"inception.b1.0", "inception.b3.1.0", "inception.pool.1.0"})
    assert inception
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state[fuse][key][:, :len(cols)], old[key][rows][:, cols])
    assert torch.equal(opt.state[fuse]["step"], old["step"])
    train(model, opt, data)


def test_in_place_vit_replaces_attention_and_moves_optimizer_state():
    model, data = toy(tiny_vit, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train(model, opt, data)
    x = data[0][0]
    spec, handle = build_spec(model, x, data=data, loss_fn=nn.functional.cross_entropy, latency="flops", step=4)
    result = mdp_opt.solve(spec, "45%")
    expected = outputs(handle.apply(result), x)
    qkv = model.blocks[0].attn.qkv.weight
    old = opt.state[qkv]["exp_avg"].clone()
    n_groups = len(opt.param_groups)
    report = prune_in_place(model, handle, result, opt)
    assert torch.allclose(outputs(model, x), expected, rtol=0, atol=1e-6)
    attn = model.blocks[0].attn
    assert isinstance(attn, PrunedAttention)
    assert "blocks.0.attn.qkv.weight" in report.removed_parameters and qkv not in opt.state
    assert len(opt.param_groups) == n_groups
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in in_opt} == {id(p) for p in model.parameters()}
    assert opt.state[attn.v.weight]["exp_avg"].shape == attn.v.weight.shape
    # the values' rows come from the v third of qkv; find each kept row in the old moments by its weight row
    site = handle.structure.sites["blocks.0.attn"].site
    config = Configuration.of(handle, result)
    kind = {info.kind: d for d, info in handle.dims.items() if info.site == "blocks.0.attn"}
    v_rows = site.v.index                                   # (heads, v per head) rows of qkv
    kept_heads = list(config.kept[kind["heads"]])
    kept_v = list(config.kept[kind["v_dim"]])
    kept_embed = list(config.kept["embed"])
    want = old[torch.as_tensor(v_rows[kept_heads][:, kept_v].reshape(-1))][:, kept_embed]
    assert torch.equal(opt.state[attn.v.weight]["exp_avg"], want)
    train(model, opt, data)


def test_in_place_bad_arguments():
    model, data = toy(small_resnet, 16, batches=1)
    spec, handle = build_spec(model, data[0][0], data=data, loss_fn=nn.functional.cross_entropy, latency="flops",
                              step=8)
    result = mdp_opt.solve(spec, "50%")
    with pytest.raises(TypeError, match="handle"):
        prune_in_place(model, spec, result)
    with pytest.raises(TypeError, match="optimizer"):
        prune_in_place(model, handle, result, optimizer="sgd")
    with pytest.raises(ValueError, match="differ from the model the handle"):
        prune_in_place(nn.Sequential(nn.Linear(2, 2)), handle, result)
    with pytest.raises(ValueError, match=r"configuration: expected \{'kept'"):
        Configuration.from_dict({"kept": {}})
    bad = Configuration({**Configuration.of(handle, result).kept, "conv1": (99,)}, ())
    with pytest.raises(ValueError, match=r"result.kept\[conv1\]"):
        prune_in_place(model, handle, bad)


# ---- IterativePruner -------------------------------------------------------------------------------------------
def make_pruner(model, data, budget, opt, **kw):
    kw.setdefault("steps", 3)
    kw.setdefault("every", len(data))
    kw.setdefault("latency", "flops")
    kw.setdefault("step", 4)
    return IterativePruner(model, data[0][0], budget, optimizer=opt, **kw)


def test_hook_scores_equal_build_spec_taylor_scores():
    """The pruner's importance from the user's backward passes is build_spec's Taylor score on the same batches
    (layers and attention sites), before and after a pruning step (mapped to the original units)."""
    model, data = toy(tiny_vit, 16, batches=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)         # lr 0: the weights the scores read stay put
    pruner = make_pruner(model, data, "50%", opt, steps=2, every=10)
    train(model, opt, data)
    got = pruner.scores()            # read first: every backward pass through the model counts, these too
    layers = sorted(k.split(":", 1)[1] for k in got if k.startswith("layer:"))
    want = taylor_scores(model, layers, data, nn.functional.cross_entropy)
    sites = _site_scores(model, pruner._handle.structure.sites, data, nn.functional.cross_entropy)
    for name in layers:
        np.testing.assert_allclose(got[f"layer:{name}"], want[name], rtol=1e-5, atol=1e-12)
    for key, value in sites.items():
        np.testing.assert_allclose(got[f"site:{key}"], value, rtol=1e-5, atol=1e-12)
    pruner.prune_now()
    assert not pruner.scores()[f"layer:{layers[0]}"].any()          # reset by the step
    train(model, opt, data)
    got, config = pruner.scores(), pruner.configuration
    name = "blocks.0.mlp.fc1"
    dim = next(d for d, info in pruner._handle.dims.items() if name in info.layers)
    now = taylor_scores(model, [name], data, nn.functional.cross_entropy)[name]
    kept = list(config.kept[dim])
    np.testing.assert_allclose(got[f"layer:{name}"][kept], now, rtol=1e-5, atol=1e-12)
    assert not np.delete(got[f"layer:{name}"], kept).any()


def test_iterative_cnn_schedule_budgets_and_exact_costs():
    model, data = toy(small_resnet, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = []
    pruner = make_pruner(model, data, {"latency": "30%"}, opt, on_pruned=lambda p, s: seen.append(s.step))
    assert pruner.schedule == [3, 6, 9]
    full = pruner.spec.full_costs()["latency"]
    assert counted_macs(copy.deepcopy(model), data[0][0]) == pytest.approx(full)
    losses = train(model, opt, data, rounds=4, pruner=pruner)
    assert pruner.finished and seen == [1, 2, 3] and [h.iteration for h in pruner.history] == [3, 6, 9]
    assert [round(h.budget_percent["latency"], 6) for h in pruner.history] == [pytest.approx(76.666667),
                                                                              pytest.approx(53.333333), 30.0]
    previous = {d: info.width for d, info in pruner._handle.dims.items()}
    for h in pruner.history:
        assert h.predicted["latency"] <= h.budget["latency"] * (1 + 1e-9)
        assert all(h.kept[d] <= previous[d] for d in previous)
        previous = h.kept
    assert counted_macs(copy.deepcopy(model), data[0][0]) == pytest.approx(pruner.history[-1].predicted["latency"])
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert pruner.step() is None                          # finished: counting only
    with pytest.raises(RuntimeError, match="all 3 steps are done"):
        pruner.prune_now()


def test_iterative_several_resources_and_given_budgets_on_vit():
    model, data = toy(tiny_vit, 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pruner = make_pruner(model, data, None, opt, steps=2, budgets=[{"flops": "70%", "params": "80%"},
                                                                    {"flops": "45%", "params": "60%"}])
    assert set(pruner.spec.costs) == {"flops", "params"}
    train(model, opt, data, rounds=2, pruner=pruner)
    assert pruner.finished
    last = pruner.history[-1]
    assert last.budget_percent == pytest.approx({"flops": 45.0, "params": 60.0})
    assert last.predicted_percent["flops"] <= 45.0 + 1e-6 and last.predicted_percent["params"] <= 60.0 + 1e-6
    assert counted_macs(copy.deepcopy(model), data[0][0]) == pytest.approx(last.predicted["flops"])
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(last.predicted["params"])
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in in_opt} == {id(p) for p in model.parameters()}
    for p in in_opt:
        if p in opt.state:
            assert opt.state[p]["exp_avg"].shape == p.shape
    train(model, opt, data)


def test_a_step_at_full_budget_changes_nothing():
    model, data = toy(small_resnet, 16, batches=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = make_pruner(model, data, "100%", opt, steps=1)
    train(model, opt, data)
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    momentum = {n: opt.state[p]["momentum_buffer"].clone() for n, (p, _) in before.items()}
    x = data[0][0]
    expected = outputs(model, x)
    step = pruner.prune_now()
    assert step.removed == [] and step.kept == {d: i.width for d, i in pruner._handle.dims.items()}
    assert torch.equal(outputs(model, x), expected)
    for n, p in model.named_parameters():
        assert p is before[n][0] and torch.equal(p, before[n][1])
        assert torch.equal(opt.state[p]["momentum_buffer"], momentum[n])


def run_with_checkpoint(tmp_path):
    """Three steps; a checkpoint after the second; returns what the tests compare."""
    def fresh():
        model, data = toy(small_resnet, 16, seed=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, data, opt, make_pruner(model, data, "30%", opt)

    model, data, opt, pruner = fresh()
    train(model, opt, data, rounds=2, pruner=pruner)
    assert pruner.done == 2
    train(model, opt, data[:1], pruner=pruner)            # scores of one batch are pending
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "pruner": pruner.state_dict()}, buffer)
    return fresh, model, data, opt, pruner, buffer


def test_checkpoint_round_trip_rebuild_and_resume(tmp_path):
    fresh, model, data, opt, pruner, buffer = run_with_checkpoint(tmp_path)
    buffer.seek(0)
    saved = torch.load(buffer)
    x = data[0][0]

    # rebuild from the original definition plus the saved configuration
    original, _ = toy(small_resnet, 16, seed=11)
    configuration = saved["pruner"]["configurations"][-1]
    rebuilt = rebuild(original, x, configuration)
    rebuilt.load_state_dict(saved["model"])
    assert torch.equal(outputs(rebuilt, x), outputs(model, x))
    assert pruner.rebuild(copy.deepcopy(original)).state_dict().keys() == model.state_dict().keys()

    # resume: fresh model, optimizer and pruner; pruner state first, then the model's and the optimizer's
    model2, data2, opt2, pruner2 = fresh()
    pruner2.load_state_dict(saved["pruner"])
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["optimizer"])
    assert torch.equal(outputs(model2, x), outputs(model, x))
    assert pruner2.iteration == pruner.iteration and pruner2.configuration == pruner.configuration
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])
    for k, v in pruner.scores().items():
        assert np.array_equal(v, pruner2.scores()[k])
    # both continue to the final step, bit-identically
    train(model, opt, data[1:], pruner=pruner)
    train(model2, opt2, data[1:], pruner=pruner2)
    assert pruner.finished and pruner2.finished
    assert pruner2.configuration == pruner.configuration
    assert [h.kept for h in pruner2.history] == [h.kept for h in pruner.history]
    for (n, p), (_, q) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(p, q), n


def test_iterative_bad_arguments():
    model, data = toy(small_resnet, 16, batches=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        make_pruner(model, data, "50%", opt, steps=0)
    with pytest.raises(ValueError, match="every: expected a positive integer"):
        make_pruner(model, data, "50%", opt, every=-1)
    with pytest.raises(ValueError, match="budgets: expected a list of 3 budgets"):
        make_pruner(model, data, None, opt, budgets=["50%"])
    with pytest.raises(ValueError, match="budget: give the final budget"):
        make_pruner(model, data, None, opt)
    with pytest.raises(TypeError, match="stepp: not an IterativePruner or build_spec option"):
        make_pruner(model, data, "50%", opt, stepp=4)
    with pytest.raises(TypeError, match="optimizer: expected a torch.optim.Optimizer"):
        make_pruner(model, data, "50%", "adam")
    with pytest.raises(ValueError, match=r"budgets\[1\]: expected the same resources .* none above"):
        make_pruner(model, data, None, opt, steps=2, budgets=["50%", "60%"])
    with pytest.raises(mdp_opt.SpecError, match="budget.energy"):
        make_pruner(model, data, {"latency": "50%", "energy": 3.0}, opt, costs=("latency",))
    pruner = make_pruner(model, data, "50%", opt)
    with pytest.raises(RuntimeError, match=r"no gradient reached the model .* loss.backward\(\)"):
        pruner.prune_now()
    other = make_pruner(model, data, "50%", opt, steps=2)
    with pytest.raises(ValueError, match="state.steps: saved 2"):
        pruner.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="version 1"):
        pruner.load_state_dict({"iteration": 3})
    train(model, opt, data)
    tight = make_pruner(model, data, "0.001%", opt, steps=1, every=1)
    train(model, opt, data)
    with pytest.raises(RuntimeError, match="step 1: no configuration within budget"):
        tight.prune_now()


def test_readme_snippet_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = re.search(r"### Pruning while training\n.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert capsys.readouterr().out.count("step ") == 3
    model, ema, small, model2 = (namespace[k] for k in ("model", "ema", "small", "model2"))
    assert namespace["pruner"].finished
    assert [p.shape for p in ema.parameters()] == [p.shape for p in model.parameters()]
    assert [p.shape for p in ema.parameters()] != [p.shape for p in namespace["make_model"]().parameters()]
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(outputs(small, x), outputs(model, x)) and torch.equal(outputs(model2, x), outputs(model, x))


def test_followers_are_pruned_to_the_same_units():
    model, data = toy(tiny_vit, 16, batches=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ema = copy.deepcopy(model)
    pruner = make_pruner(model, data, "40%", opt, steps=2, followers=[ema])
    train(model, opt, data)
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.copy_(p)                        # the same values: the same units kept give the same outputs
    pruner.prune_now()
    assert isinstance(ema.blocks[0].attn, PrunedAttention) and ema.blocks[0].attn is not model.blocks[0].attn
    x = data[0][0]
    assert torch.equal(outputs(ema, x), outputs(model, x))
    assert not any(e is p for e in ema.parameters() for p in model.parameters())
    with pytest.raises(ValueError, match=r"followers\[0\]: expected a copy of model's structure"):
        make_pruner(toy(tiny_vit, 16)[0], data, "40%", None, followers=[nn.Linear(2, 2)])


def test_a_step_after_blocks_were_removed_solves_what_is_left():
    model, data = toy(small_resnet, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    pruner = make_pruner(model, data, None, opt, steps=2, budgets=["15%", "8%"])
    train(model, opt, data, rounds=2, pruner=pruner)
    first, second = pruner.history
    assert first.removed and set(first.removed) < set(second.removed)
    restricted = pruner.restricted_spec(_importances(pruner))
    assert not set(first.removed) & set(restricted.block_names)
    for d in restricted.dims:
        assert max(d.choices) <= max(1, second.kept[d.name]) or second.kept[d.name] == 0
    assert second.predicted["latency"] <= second.budget["latency"] * (1 + 1e-9)
    assert counted_macs(copy.deepcopy(model), data[0][0]) == pytest.approx(second.predicted["latency"])
    for b in second.removed:
        assert isinstance(model.get_submodule(b), nn.Identity)
    train(model, opt, data)


def _importances(pruner):
    from mdp_opt.adapters.torch.importance import normalized
    from mdp_opt.adapters.torch.scores import taylor_importances
    scores = {k: v + 1.0 for k, v in pruner.scores().items()}
    return taylor_importances(pruner._handle.structure, pruner._handle.gates, normalized(scores))


def test_rebuild_bad_arguments():
    model, data = toy(small_resnet, 16, batches=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = make_pruner(model, data, "50%", opt, steps=1)
    train(model, opt, data, pruner=pruner)
    config = pruner.configuration.to_dict()
    with pytest.raises(ValueError, match="fresh instance of the original"):
        pruner.rebuild(model)                                    # already pruned
    with pytest.raises(ValueError, match="configuration: its dims do not match"):
        rebuild(BranchNet(), torch.randn(1, 3, 16, 16), config)
    with pytest.raises(TypeError, match="example_input"):
        rebuild(small_resnet(), None, config)
    assert set(Configuration.from_dict(config).kept) == set(pruner._handle.dims)
