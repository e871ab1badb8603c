"""Latency calibration: tables refitted to whole models measured after `handle.apply`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import MeasuredLatency, build_spec  # noqa: E402
from mdp_opt.adapters.torch.calibration import (CalibrationPoint, calibrate_latency, calibrated_spec,  # noqa: E402
                                                configuration, fit, uniform_choice, ungated_floor)
from mdp_opt.adapters.torch.vit import build_vit_spec  # noqa: E402

from torch_models import VGGLike, small_resnet  # noqa: E402
from vit_models import TimmStyleViT  # noqa: E402

MS_PER_MAC = 2e-6


def exact_backend() -> str:
    for name in ("milp", "cpsat", "dp"):
        if name in mdp_opt.installed_backends():
            return name
    pytest.skip("no exact backend installed (milp, cpsat or dp)")


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every matmul and convolution, as PyTorch's flop counter sees them."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def built(kind: str, latency) -> tuple:
    torch.manual_seed(0)
    if kind == "cnn":
        model, x = small_resnet().eval(), torch.randn(1, 3, 16, 16)
        data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))]
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, step=8)
    else:
        model, x = TimmStyleViT().eval(), torch.randn(1, 3, 32, 32)
        data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
        spec, handle = build_vit_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, step=16,
                                      head_step=2, head_dim_step=6)
    return model, x, spec, handle


@pytest.mark.parametrize("kind", ["cnn", "vit"])
@pytest.mark.parametrize("offset_share", [0.3, -0.5])
def test_calibrated_spec_predicts_a_known_latency_of_every_slimmed_model(kind, offset_share):
    """Raw tables are exact MACs; the 'device' takes MS_PER_MAC per MAC plus a constant (positive, or a
    negative one the ungated tables can absorb): the calibrated spec must predict every slimmed model."""
    model, x, raw, handle = built(kind, "flops")
    offset = offset_share * MS_PER_MAC * (raw.full_cost("latency") if offset_share > 0 else ungated_floor(raw))
    spec, calibration = calibrate_latency(raw, handle, lambda m: MS_PER_MAC * macs(m, x) + offset, "MACs")
    assert calibration.factor == pytest.approx(MS_PER_MAC, rel=1e-9)
    assert calibration.offset_ms == pytest.approx(offset, rel=1e-6)
    assert [p.name for p in calibration.points] == ["full", "uniform 0.5"]
    assert spec.meta["latency_calibration"]["factor"] == calibration.factor
    assert all(t.table.min() >= 0 for t in spec.costs["latency"])
    results = [mdp_opt.solve(spec, f"{pct}%", backend=exact_backend()) for pct in (30, 50, 70)]
    results.append(configuration(spec, uniform_choice(spec, 0.3), "uniform"))
    for result in results:
        truth = MS_PER_MAC * macs(handle.apply(result), x) + offset
        assert result.costs["latency"] == pytest.approx(truth, rel=1e-9)


def test_an_offset_below_the_ungated_tables_is_limited_and_said():
    model, x, raw, handle = built("cnn", "flops")
    floor = ungated_floor(raw)
    spec, calibration = calibrate_latency(raw, handle, lambda m: MS_PER_MAC * (macs(m, x) - 2 * floor), "MACs")
    assert "offset limited" in calibration.note and "note" in spec.meta["latency_calibration"]
    assert calibration.offset_ms == pytest.approx(-calibration.factor * floor)
    smallest = {d.name: 0 for d in spec.dims}
    assert mdp_opt.evaluate(spec, smallest, {b: False for b in spec.block_names}).costs["latency"] == \
        pytest.approx(0.0, abs=1e-12)
    assert all(t.table.min() >= 0 for t in spec.costs["latency"])


def test_fit_with_one_distinct_prediction_is_one_factor_through_the_full_model():
    points = [CalibrationPoint("full", 8.0, 10.0), CalibrationPoint("same", 8.0, 11.0)]
    calibration = fit(points)
    assert (calibration.factor, calibration.offset_ms) == (1.25, 0.0)
    affine = fit([CalibrationPoint("full", 8.0, 10.0), CalibrationPoint("half", 4.0, 6.0)])
    assert (affine.factor, affine.offset_ms) == pytest.approx((1.0, 2.0))
    with pytest.raises(ValueError, match="positive"):
        fit([CalibrationPoint("full", 0.0, 1.0)])


def test_calibrated_spec_refuses_an_offset_the_tables_cannot_give():
    _, _, raw, _ = built("cnn", "flops")
    calibration = fit([CalibrationPoint("full", raw.full_cost("latency"), 1.0)])
    too_low = type(calibration)(1.0, -2 * ungated_floor(raw), calibration.points)
    with pytest.raises(ValueError, match="offset"):
        calibrated_spec(raw, too_low, "test")


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_measured_latency_is_calibrated_by_default_and_can_be_turned_off(kind, tmp_path):
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False)
    _, _, spec, handle = built(kind, timer)
    record = spec.meta["latency_calibration"]
    full, half = record["points"]
    assert full["measured_ms"] > 0 and half["measured_ms"] > 0 and record["factor"] > 0
    predicted = [spec.full_cost("latency"), configuration(spec, uniform_choice(spec, 0.5), "half").costs["latency"]]
    fitted = [record["factor"] * p["tables_ms"] + record["offset_ms"] for p in (full, half)]
    assert predicted == pytest.approx(fitted, rel=1e-9)
    if "note" not in record:      # two reference models and a free offset: the spec passes through both
        assert predicted == pytest.approx([full["measured_ms"], half["measured_ms"]], rel=1e-9)
    assert "measure_latency" in record["measured_with"] and handle.spec is spec
    _, _, raw, _ = built(kind, MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False,
                                               calibrate=False))
    assert "latency_calibration" not in raw.meta
    assert raw.full_cost("latency") == pytest.approx(full["tables_ms"], rel=1e-12)   # same cached tables
    with pytest.raises(ValueError, match="calibrate"):
        MeasuredLatency(calibrate="yes")


def test_calibration_is_skipped_without_a_latency_resource(tmp_path):
    torch.manual_seed(0)
    model, x = VGGLike(), torch.randn(1, 3, 8, 8)
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False)
    spec, _ = build_spec(model, x, data=[(torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,)))],
                         loss_fn=F.cross_entropy, latency=timer, costs=("params",))
    assert "latency_calibration" not in spec.meta and not list(tmp_path.iterdir())
