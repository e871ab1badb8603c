"""The shipped examples: the real instances load by name; the generators are valid, deterministic and shaped
like the networks they imitate."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mdp_opt
from mdp_opt import examples

# Small sizes per family, small enough for brute force (at most a few hundred configurations).
TINY = {
    "resnet50": dict(blocks=(2,), choices=2),
    "resnet101": dict(blocks=(2,), choices=2),
    "resnet152": dict(blocks=(2,), choices=2),
    "mobilenetv2": dict(stages=2, choices=2),
    "vit12": dict(blocks=1, heads=2, choices=2),
    "vit-tiny": dict(blocks=1, choices=2),
    "vit-l": dict(blocks=1, heads=2, choices=2),
    "vit-h": dict(blocks=1, heads=2, choices=2),
    "chain": dict(depth=4, choices=3),
}
EXACT = mdp_opt.backends_with(mdp_opt.Feature.EXACT, without=[mdp_opt.Feature.REFERENCE])


@pytest.mark.parametrize("name", examples.INSTANCES)
def test_real_instances_load_by_name_with_their_provenance(name):
    spec = examples.make(name)
    assert spec is not examples.make(name) and spec == examples.instance(name)
    assert spec.name == name and "NVlabs/MDP" in spec.meta["source"] and "latency" in spec.budgets
    assert mdp_opt.loads(mdp_opt.dumps(spec)) == spec
    with pytest.raises(mdp_opt.SpecError, match="takes no seed or sizes"):
        examples.make(name, choices=4)


def test_the_instances_ship_with_their_license_notice():
    from importlib import resources
    folder = resources.files("mdp_opt.examples") / "instances"
    assert "Apache License, Version 2.0" in (folder / "NOTICE").read_text()
    assert "proven optimal objective" in (folder / "README.md").read_text()


@pytest.mark.parametrize("name", examples.GENERATED)
def test_default_spec_round_trips_through_json(name):
    spec = examples.make(name)
    assert mdp_opt.loads(mdp_opt.dumps(spec)) == spec
    assert spec.budgets["latency"] == math.floor(0.5 * spec.full_cost("latency"))


@pytest.mark.parametrize("name", examples.GENERATED)
def test_same_seed_same_spec_other_seed_other_spec(name):
    assert examples.make(name, seed=3) == examples.make(name, seed=3)
    assert examples.make(name, seed=3) != examples.make(name, seed=4)


@pytest.mark.parametrize("name", examples.GENERATED)
def test_tables_are_integers_by_default_and_floats_on_request(name):
    def all_integral(spec):
        return all(np.array_equal(t.table, np.rint(t.table)) for _, _, t in spec.terms())

    assert all_integral(examples.make(name))
    assert not all_integral(examples.make(name, integer=False))


@pytest.mark.parametrize("name", examples.GENERATED)
def test_costs_non_decreasing_in_every_width_and_importance_in_kept_count(name):
    spec = examples.make(name, params=True)
    for resource, _, term in spec.terms():
        for axis in range(term.table.ndim):
            assert np.all(np.diff(term.table, axis=axis) >= 0), (resource, term.dims, axis)


@pytest.mark.parametrize("name, dims, blocks", [
    ("resnet50", 37, 12), ("resnet101", 71, 29), ("mobilenetv2", 25, 10), ("vit12", 49, 24),
    ("vit-tiny", 49, 24), ("chain", 16, 0), ("resnet152", 105, 46), ("vit-l", 97, 48), ("vit-h", 129, 64)])
def test_dim_and_block_counts(name, dims, blocks):
    spec = examples.make(name)
    assert (len(spec.dims), len(spec.blocks)) == (dims, blocks)


def test_resnet_shares_one_residual_dim_per_stage_and_keeps_first_blocks():
    spec = examples.make("resnet50")
    residual = [d for d in spec.dim_names if d.endswith(".res")]
    assert residual == ["layer1.res", "layer2.res", "layer3.res", "layer4.res"]
    assert "layer1.0" not in spec.block_names and "layer1.1" in spec.block_names
    # conv3 of each of layer3's six blocks and the downsample write into layer3.res
    writers = [t for t in spec.costs["latency"] if t.dims[:1] == ("layer3.res",)]
    assert len(writers) == 6 + 1
    assert {t.block for t in writers} == {None, "layer3.1", "layer3.2", "layer3.3", "layer3.4", "layer3.5"}
    assert all(len(t.dims) == 2 for t in spec.costs["latency"][1:-1])
    shares = [t for t in spec.objective if t.dims == ("layer3.res",)]
    assert len(shares) == 7


def test_mobilenet_has_one_arity_one_depthwise_term_per_inverted_residual():
    spec = examples.make("mobilenetv2")
    expands = [d for d in spec.dim_names if d.endswith(".expand")]
    assert len(expands) == 16
    for e in expands:
        assert sum(t.dims == (e,) for t in spec.costs["latency"]) == 1    # its depthwise conv
    assert spec.block_names == ("stage2.1", "stage3.1", "stage3.2", "stage4.1", "stage4.2", "stage4.3",
                                "stage5.1", "stage5.2", "stage6.1", "stage6.2")


def test_vit_has_arity_three_attention_and_gated_sub_blocks():
    spec = examples.make("vit12", blocks=2)
    attention = [t for t in spec.costs["latency"] if len(t.dims) == 3]
    assert [t.dims for t in attention] == [("embed", f"block{i}.heads", f"block{i}.{d}")
                                           for i in range(2) for d in ("qk_dim", "v_dim")]
    assert {t.block for t in attention} == {"block0.attn", "block1.attn"}
    mlp = [t for t in spec.costs["latency"] if len(t.dims) == 2]
    assert [(t.dims, t.block) for t in mlp] == [(("embed", f"block{i}.mlp_hidden"), f"block{i}.mlp") for i in range(2)]
    assert spec.dim("block0.heads").choices == tuple(range(1, 13))


def test_size_arguments_are_honoured():
    assert len(examples.make("resnet50", blocks=(1, 2)).dims) == 1 + 2 + 2 * 3
    assert examples.make("resnet50", choices=32).dim("layer1.0.conv1").choices == tuple(range(2, 65, 2))
    assert len(examples.make("vit-tiny", blocks=3).dims) == 1 + 3 * 4
    assert len(examples.make("chain", depth=5).dims) == 5
    assert len(examples.make("mobilenetv2", stages=1).dims) == 3
    assert examples.make("chain", budget=0.3).budgets["latency"] == math.floor(0.3 * examples.make("chain").full_cost("latency"))


def test_latency_has_a_staircase_every_16_channels():
    spec = examples.make("chain", depth=2, width=64, choices=32)
    kept = spec.dim("conv1").choices                                        # 2, 4, ..., 64
    steps = np.diff(spec.costs["latency"][1].table[:, -1])                  # T[conv1, conv0] along conv1
    at_boundary = np.array([k % 16 == 0 for k in kept[:-1]])                # 16 -> 18, 32 -> 34, 48 -> 50
    assert steps[at_boundary].min() > 50 * steps[~at_boundary].max()       # only memory traffic within a step


def test_params_are_exact_parameter_counts():
    # torchvision resnet50 / mobilenet_v2 and timm vit_base_patch16_224 parameter counts
    assert examples.make("resnet50", params=True).full_cost("params") == 25_557_032
    assert examples.make("mobilenetv2", params=True).full_cost("params") == 3_504_872
    assert examples.make("vit12", params=True).full_cost("params") == 86_567_656
    assert "params" not in examples.make("resnet50").costs


def test_unknown_name_and_size_raise_spec_errors_naming_the_choices():
    with pytest.raises(mdp_opt.SpecError, match="resnet50"):
        examples.make("resnet51")
    with pytest.raises(mdp_opt.SpecError, match="'depth'.*accepts"):
        examples.make("resnet50", depth=3)
    with pytest.raises(mdp_opt.SpecError, match="choices"):
        examples.make("chain", choices=0)
    with pytest.raises(mdp_opt.SpecError, match="budget"):
        examples.make("chain", budget=1.5)
    with pytest.raises(mdp_opt.SpecError, match="image_size: expected an integer >= 32"):
        examples.make("resnet50", image_size=16)
    with pytest.raises(mdp_opt.SpecError, match=r"blocks\[1\]"):
        examples.make("resnet50", blocks=(1, 0))
    with pytest.raises(mdp_opt.SpecError, match="heads"):
        examples.make("vit12", heads=0)


@pytest.mark.parametrize("name", examples.GENERATED)
def test_tiny_instances_solve_and_budget_binds(name):
    spec = examples.make(name, **TINY[name])
    result = mdp_opt.solve(spec, backend="brute")
    assert result.status == mdp_opt.Status.OPTIMAL
    assert result.costs["latency"] <= spec.budgets["latency"]
    full_value = mdp_opt.evaluate(spec, *spec.full_configuration()).value
    assert result.objective < full_value     # half the latency cannot keep everything
    for backend in EXACT:
        assert mdp_opt.solve(spec, backend=backend, time_limit=30).objective == pytest.approx(result.objective)


def test_flops_is_a_third_resource_that_conflicts_with_params():
    """FLOPs weigh the early high-resolution layers, parameters the late wide ones: exact counts."""
    spec = examples.make("resnet50", params=True, flops=True)
    assert set(spec.costs) == {"latency", "params", "flops"}
    assert spec.full_cost("flops") == pytest.approx(2 * 4.09e9, rel=0.01)   # ResNet-50: about 4.1 GMAC
    first = spec.dim("layer1.0.conv1").choices[-1]
    stem_share = {r: sum(float(t.table.max()) for t in spec.costs[r] if "layer1.0.conv1" in t.dims) /
                  spec.full_cost(r) for r in ("params", "flops")}
    assert first == 64 and stem_share["flops"] > 3 * stem_share["params"]
    assert examples.make("resnet50").replace(name="x") == examples.make(
        "resnet50", flops=False, monotone=True, ties=False).replace(name="x")


def test_non_monotone_latency_and_near_tie_importance():
    spec = examples.make("resnet50", monotone=False)
    assert any(np.any(np.diff(t.table, axis=0) < 0) for t in spec.costs["latency"] if t.dims)
    tied = examples.make("vit12", ties=True)
    per_channel = [np.diff(np.concatenate([[0.0], t.table])) / np.diff(np.concatenate([[0], tied.dim(t.dims[0]).choices]))
                   for t in tied.objective if len(t.dims) == 1 and t.dims[0].endswith("mlp_hidden")]
    spread = [p.max() / p.min() for p in per_channel]
    assert max(spread) < 1.05            # every channel of a layer worth the same, up to rounding


def test_hard_family_budgets_every_resource_tightly_and_stays_feasible():
    kinds = set()
    for seed in range(8):
        spec = examples.make("hard", seed=seed)
        assert set(spec.budgets) == set(spec.costs) and len(spec.costs) in (2, 3)
        assert spec.budgets["latency"] <= 0.15 * spec.full_cost("latency")
        kinds.add((spec.meta["family"], len(spec.costs), len(spec.dims)))
        narrowest = mdp_opt.evaluate(spec, {d.name: 0 for d in spec.dims}, {b: False for b in spec.block_names},
                                     spec.budgets)
        assert narrowest.feasible
    assert {n for _, n, _ in kinds} == {2, 3} and {d for _, _, d in kinds} == {71, 49}   # ResNet-101 and ViT-B
    assert examples.make("hard", seed=5) == examples.make("hard", seed=5) != examples.make("hard", seed=6)
    with pytest.raises(mdp_opt.SpecError, match="only a seed"):
        examples.make("hard", choices=4)
