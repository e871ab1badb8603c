"""Latency calibration: tables refitted to whole models measured after `handle.apply`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import MeasuredLatency, build_spec  # noqa: E402
from mdp_opt.adapters.torch.calibration import (CalibrationPoint, calibrate_latency, calibrated_spec,  # noqa: E402
                                                configuration, fit, split_costs, uniform_choice)
from mdp_opt.solve import verify  # noqa: E402

from flops import counted_macs as macs  # noqa: E402
from torch_models import VGGLike, small_resnet  # noqa: E402
from vit_models import TimmStyleViT  # noqa: E402

MS_PER_MAC = 2e-6


def exact_backend() -> str:
    for name in ("milp", "cpsat", "dp"):
        if name in mdp_opt.installed_backends():
            return name
    pytest.skip("no exact backend installed (milp, cpsat or dp)")


def built(kind: str, latency, blocks: str | None = "auto") -> tuple:
    torch.manual_seed(0)
    if kind == "cnn":
        model, x = small_resnet().eval(), torch.randn(1, 3, 16, 16)
        data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))]
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, step=8,
                                  blocks=blocks)
    else:
        model, x = TimmStyleViT().eval(), torch.randn(1, 3, 32, 32)
        data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, step=16,
                                  head_step=2, head_dim_step=6, blocks=blocks)
    return model, x, spec, handle


def fixed_part(spec: mdp_opt.Spec) -> float:
    return split_costs(spec, configuration(spec, uniform_choice(spec, 1.0), "full"))[1]


@pytest.mark.parametrize("kind", ["cnn", "vit"])
@pytest.mark.parametrize("offset_share", [0.3, -0.5])
def test_calibrated_spec_predicts_a_known_latency_of_every_slimmed_model(kind, offset_share):
    """Raw tables are exact MACs; the 'device' takes MS_PER_MAC per MAC plus a constant (positive, or
    negative and smaller than the tables' fixed parts). Without removable blocks every configuration
    has the same fixed part, so the calibrated spec must predict every slimmed model exactly."""
    model, x, raw, handle = built(kind, "flops", blocks=None)
    offset = offset_share * MS_PER_MAC * fixed_part(raw)
    spec, calibration = calibrate_latency(raw, handle, lambda m: MS_PER_MAC * macs(m, x) + offset, "MACs",
                                          method="parts")
    assert calibration.variable_factor == pytest.approx(MS_PER_MAC, rel=1e-9)
    assert calibration.fixed_factor == pytest.approx(MS_PER_MAC * (1 + offset_share), rel=1e-9)
    assert [p.name for p in calibration.points] == ["full", "uniform 0.5"] and not calibration.note
    assert spec.meta["latency_calibration"]["variable_factor"] == calibration.variable_factor
    assert all(t.table.min() >= 0 for t in spec.costs["latency"])
    results = [mdp_opt.solve(spec, f"{pct}%", backend=exact_backend()) for pct in (30, 50, 70)]
    results.append(configuration(spec, uniform_choice(spec, 0.3), "uniform"))
    for result in results:
        truth = MS_PER_MAC * macs(handle.apply(result), x) + offset
        assert result.costs["latency"] == pytest.approx(truth, rel=1e-9)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_every_configuration_costs_its_calibrated_parts(kind):
    """With removable blocks: any configuration's calibrated cost is variable_factor x its variable part
    + fixed_factor x its fixed part of the raw tables; a removed block takes both away."""
    _, _, raw, _ = built(kind, "flops")
    calibration = fit([CalibrationPoint("full", 6.0, 2.0, 10.0), CalibrationPoint("half", 2.0, 2.0, 5.0)])
    assert (calibration.variable_factor, calibration.fixed_factor) == pytest.approx((1.25, 1.25))
    spec = calibrated_spec(raw, fit([CalibrationPoint("full", 6.0, 2.0, 9.0), CalibrationPoint("half", 2.0, 2.0, 4.0)]),
                           "test")
    a, b = spec.meta["latency_calibration"]["variable_factor"], spec.meta["latency_calibration"]["fixed_factor"]
    assert (a, b) == pytest.approx((1.25, 0.75))
    rng = np.random.default_rng(0)
    for _ in range(20):
        choice = {d.name: int(rng.integers(d.size)) for d in raw.dims}
        active = {name: bool(rng.integers(2)) for name in raw.block_names}
        answer = mdp_opt.Answer(mdp_opt.Status.FEASIBLE, choice=choice, active=active)
        result = verify(raw, {}, answer, "test", 0.0)
        variable, fixed = split_costs(raw, result)
        assert mdp_opt.evaluate(spec, choice, active).costs["latency"] == pytest.approx(a * variable + b * fixed)


def test_a_negative_fixed_factor_is_limited_to_zero_and_said():
    _, x, raw, handle = built("cnn", "flops", blocks=None)
    spec, calibration = calibrate_latency(raw, handle, lambda m: MS_PER_MAC * (macs(m, x) - 2 * fixed_part(raw)),
                                          "MACs", method="parts")
    assert calibration.fixed_factor == 0.0 and "limited" in calibration.note
    assert "note" in spec.meta["latency_calibration"]
    assert all(t.table.min() == 0 for t in spec.costs["latency"])


def test_fit_with_one_distinct_configuration_is_one_factor_through_the_full_model():
    calibration = fit([CalibrationPoint("full", 6.0, 2.0, 10.0)])
    assert (calibration.variable_factor, calibration.fixed_factor) == (1.25, 1.25)
    with pytest.raises(ValueError, match="positive"):
        fit([CalibrationPoint("full", 0.0, 0.0, 1.0)])


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_a_known_latency_proportional_to_macs_is_met_by_one_factor(kind):
    """The default method: one factor through the full model predicts every model of a device whose
    latency is proportional to the tables, removed blocks included."""
    _, x, raw, handle = built(kind, "flops")
    spec, calibration = calibrate_latency(raw, handle, lambda m: MS_PER_MAC * macs(m, x), "MACs")
    assert [p.name for p in calibration.points] == ["full"]
    assert calibration.variable_factor == calibration.fixed_factor == pytest.approx(MS_PER_MAC, rel=1e-9)
    for pct in (30, 60):
        result = mdp_opt.solve(spec, f"{pct}%", backend=exact_backend())
        assert result.costs["latency"] == pytest.approx(MS_PER_MAC * macs(handle.apply(result), x), rel=1e-9)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_measured_latency_is_calibrated_by_default_and_can_be_turned_off(kind, tmp_path):
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False, calibration_runs=2)
    _, _, spec, handle = built(kind, timer)
    record = spec.meta["latency_calibration"]
    assert record["method"] == "affine" and handle.spec is spec            # the default (see test_torch_latency_model)
    full = next(p for p in record["points"] if p["model"] == "full")
    _, _, raw, _ = built(kind, MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False,
                                               calibrate=False))
    assert "latency_calibration" not in raw.meta
    assert raw.full_cost("latency") == pytest.approx(full["tables_ms"], rel=1e-12)   # same cached tables
    _, _, factor, _ = built(kind, MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False,
                                                  calibrate="factor"))
    (full,) = factor.meta["latency_calibration"]["points"]
    assert factor.meta["latency_calibration"]["measured_with"].startswith("factor: measure_latency")
    assert factor.full_cost("latency") == pytest.approx(full["measured_ms"], rel=1e-9) and full["measured_ms"] > 0
    with pytest.raises(ValueError, match="calibrate"):
        MeasuredLatency(calibrate="yes")


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_parts_calibration_passes_through_both_measured_reference_models(kind, tmp_path):
    _, _, spec, _ = built(kind, MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False,
                                                calibrate="parts"))
    record = spec.meta["latency_calibration"]
    full, half = record["points"]
    assert full["measured_ms"] > 0 and half["measured_ms"] > 0 and record["variable_factor"] > 0
    predicted = [spec.full_cost("latency"), configuration(spec, uniform_choice(spec, 0.5), "half").costs["latency"]]
    a, b = record["variable_factor"], record["fixed_factor"]
    fitted = [a * (p["tables_ms"] - p["fixed_ms"]) + b * p["fixed_ms"] for p in (full, half)]
    assert predicted == pytest.approx(fitted, rel=1e-9)
    if "note" not in record:      # two reference models, two free factors: the spec passes through both
        assert predicted == pytest.approx([full["measured_ms"], half["measured_ms"]], rel=1e-9)


def test_calibration_is_skipped_without_a_latency_resource(tmp_path):
    torch.manual_seed(0)
    model, x = VGGLike(), torch.randn(1, 3, 8, 8)
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False)
    spec, _ = build_spec(model, x, data=[(torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,)))],
                         loss_fn=F.cross_entropy, latency=timer, costs=("params",))
    assert "latency_calibration" not in spec.meta and not list(tmp_path.iterdir())
