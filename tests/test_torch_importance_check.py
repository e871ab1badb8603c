"""The importance check: zero scores (zero-initialised BatchNorm gammas) and too few data are reported
with an ImportanceWarning that names the layers, and recorded in spec.meta["importance_check"]."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import ImportanceWarning, build_spec  # noqa: E402
from mdp_opt.adapters.torch.importance import taylor_scores  # noqa: E402
from mdp_opt.adapters.torch.importance_check import (_ranks, check_importance, scores_by_halves,  # noqa: E402
                                                     split_half_agreement)

from torch_models import BasicBlock, Bottleneck, small_resnet  # noqa: E402
from vit_models import TimmStyleViT  # noqa: E402


def batches(count: int, size: int, image: int = 16, classes: int = 10, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, image, image, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(count)]


def zero_init_last_bn(model: nn.Module) -> list[str]:
    """Zero the gamma (and beta) of the last BN of every residual branch, as `zero_init_residual=True` does;
    returns the names of the blocks with an identity shortcut (the removable ones)."""
    removable = []
    for name, m in model.named_modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            last = m.bn2 if isinstance(m, BasicBlock) else m.bn3
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            if m.downsample is None:
                removable.append(name)
    return removable


def build(model: nn.Module, data: list, **kwargs) -> mdp_opt.Spec:
    spec, _ = build_spec(model, torch.randn(1, 3, 16, 16), data=data, loss_fn=F.cross_entropy, latency="flops",
                         step=8, **kwargs)
    return spec


def test_zero_initialised_bn_gammas_are_reported_with_the_blocks_they_zero():
    torch.manual_seed(0)
    model = small_resnet().eval()
    removable = zero_init_last_bn(model)
    with pytest.warns(ImportanceWarning, match="removable blocks score 0") as caught:
        spec = build(model, batches(4, 8))
    record = spec.meta["importance_check"]
    assert sorted(record["zero_blocks"]) == sorted(removable) == sorted(spec.block_names)
    assert not record["ok"] and "ignore=" in record["fix"] and "trained model" in record["fix"]
    message = str(caught[0].message)
    assert all(b in message for b in removable) and "Fix:" in message
    assert "layers.0.0.bn1" in record["mostly_zero_layers"]          # no gradient reaches a zeroed branch
    # what the warning is about: below 100% blocks are removed at no loss of importance
    result = mdp_opt.solve(spec, "99%", backend="dp")
    assert not all(result.active.values()) and result.objective == pytest.approx(mdp_opt.solve(spec, "100%", backend="dp").objective)


def test_a_model_with_informative_scores_passes_silently():
    torch.manual_seed(0)
    model = small_resnet().eval()
    data = batches(1, 16) * 4                       # the same batch four times: both halves rank alike
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImportanceWarning)
        spec = build(model, data)
    record = spec.meta["importance_check"]
    assert record["ok"] and record["zero_blocks"] == [] and record["batches"] == 4 and record["samples"] == 64
    assert record["rank_agreement"]["median"] == pytest.approx(1.0) and record["rank_agreement"]["low"] == {}


def test_one_batch_is_too_few_and_the_warning_can_be_silenced():
    torch.manual_seed(0)
    with pytest.warns(ImportanceWarning, match="1 batch"):
        spec = build(small_resnet().eval(), batches(1, 4))
    assert spec.meta["importance_check"]["rank_agreement"] is None
    assert spec.meta["importance_check"]["batches"] == 1 and spec.meta["importance_check"]["samples"] == 4
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ImportanceWarning)
        spec = build(small_resnet().eval(), batches(1, 4))
    assert not [w for w in seen if issubclass(w.category, ImportanceWarning)]
    assert not spec.meta["importance_check"]["ok"]                  # still recorded


def test_small_batches_that_rank_channels_differently_are_too_few():
    torch.manual_seed(0)
    with pytest.warns(ImportanceWarning, match="rank their channels differently") as caught:
        spec = build(small_resnet().eval(), batches(2, 1, seed=3))
    record = spec.meta["importance_check"]["rank_agreement"]
    assert record["low"] and len(record["low"]) >= 0.25 * record["compared"]
    assert next(iter(record["low"])) in str(caught[0].message)


def test_halves_sum_to_the_scores_of_all_the_data():
    torch.manual_seed(0)
    model = small_resnet()
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    data = batches(5, 3)
    whole = taylor_scores(model, layers, data, F.cross_entropy)
    scoring = scores_by_halves(lambda b: taylor_scores(model, layers, b, F.cross_entropy), data)
    assert scoring.batches == 5 and scoring.samples == 15
    for name in layers:
        np.testing.assert_allclose(scoring.totals[name], whole[name], rtol=1e-9)
        np.testing.assert_allclose(scoring.halves[0][name] + scoring.halves[1][name], whole[name], rtol=1e-9)
    with pytest.raises(ValueError, match=r"data\[1\]: expected an \(inputs, targets\) pair"):
        scores_by_halves(lambda b: {}, [data[0], "oops"])
    with pytest.raises(ValueError, match="no batches"):
        scores_by_halves(lambda b: {}, [])


def test_split_half_agreement_and_ranks():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert split_half_agreement({"x": a}, {"x": 2 * a})["x"] == pytest.approx(1.0)
    assert split_half_agreement({"x": a}, {"x": a[::-1].copy()})["x"] == pytest.approx(-1.0)
    assert split_half_agreement({"x": a[:3]}, {"x": a[:3]}) == {}           # too few channels to compare
    assert split_half_agreement({"x": np.zeros(5)}, {"x": a}) == {}         # nothing ranked in one half
    np.testing.assert_allclose(_ranks(np.array([0.0, 0.0, 5.0, 1.0])), [0.5, 0.5, 3.0, 2.0])


def test_user_scores_with_zeros_are_checked_too():
    torch.manual_seed(0)
    model = small_resnet().eval()
    scores = {name: np.ones(m.weight.shape[0]) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    for name in list(scores):
        if name.startswith("layers.0."):
            scores[name] = np.zeros_like(scores[name])
    with pytest.warns(ImportanceWarning, match="zero scores"):
        spec, _ = build_spec(model, torch.randn(1, 3, 16, 16), importance=scores, latency="flops", step=8)
    record = spec.meta["importance_check"]
    assert record["source"] == "given" and "batches" not in record
    assert set(record["zero_blocks"]) == {"layers.0.0", "layers.0.1"}


def test_vit_blocks_whose_output_is_zero_are_reported():
    torch.manual_seed(0)
    model = TimmStyleViT(depth=3).eval()
    for block in model.blocks[:2]:
        for layer in (block.attn.proj, block.mlp.fc2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
    data = batches(4, 4, image=32)
    with pytest.warns(ImportanceWarning, match="removable blocks score 0") as caught:
        spec, _ = build_spec(model, torch.randn(1, 3, 32, 32), data=data, loss_fn=F.cross_entropy,
                                 latency="flops", step=16, head_dim_step=6)
    zero = spec.meta["importance_check"]["zero_blocks"]
    assert sorted(zero) == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert "blocks.0.mlp.fc1" in spec.meta["importance_check"]["mostly_zero_layers"]
    assert "blocks.0.attn" in str(caught[0].message)


def test_check_importance_names_few_layers_in_the_message_and_all_in_the_record():
    spec = mdp_opt.Spec(dims=[mdp_opt.Dim("d", (1, 2))], objective=[mdp_opt.Term(("d",), [0.0, 1.0])],
                        costs={"latency": [mdp_opt.Term(("d",), [1.0, 2.0])]})
    scores = {f"layer{i}": np.zeros(4) for i in range(10)}
    with pytest.warns(ImportanceWarning, match="and 4 more"):
        record = check_importance(scores, spec)
    assert len(record["mostly_zero_layers"]) == 10 and record["zero_share"] == 1.0
