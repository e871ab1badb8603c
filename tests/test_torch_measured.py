"""solve_measured on real torch models: the answer is applied with the handle and measured on the model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import MeasuredLatency, measure_latency  # noqa: E402

from test_torch_calibration import built, exact_backend, macs  # noqa: E402


@pytest.mark.parametrize("kind", ["cnn", "vit"])
@pytest.mark.parametrize("percent", [35, 60])
def test_a_cost_the_spec_does_not_model_is_met_on_the_applied_model(kind, percent):
    """The spec counts MACs of conv and linear layers; the 'device' also charges every parameter of the
    applied model (BN, biases, norms included), which the spec cannot see. The answer must fit on the device."""
    model, x, spec, handle = built(kind, "flops")

    def device(m: torch.nn.Module) -> float:
        return macs(m, x) + 50.0 * sum(p.numel() for p in m.parameters())

    def measure(result: mdp_opt.Result) -> float:   # in the spec's units: scaled so the full model matches
        return device(handle.apply(result)) * spec.full_cost("latency") / device(model)

    target = percent / 100 * spec.full_cost("latency")
    fit = mdp_opt.solve_measured(spec, f"{percent}%", measure, backend=exact_backend())
    assert fit.within
    assert fit.measured == pytest.approx(measure(fit.result)) and fit.measured <= target
    open_loop = mdp_opt.solve(spec, f"{percent}%", backend=exact_backend())
    assert fit.rounds[0].predicted == pytest.approx(open_loop.costs["latency"])
    if measure(open_loop) > target:              # the model alone misses: the search had to tighten
        assert len(fit.rounds) > 1 and fit.result.costs["latency"] < open_loop.costs["latency"]


def test_readme_usage_with_measured_latency(tmp_path):
    """As in the README: a calibrated measured spec, and measure_latency of the applied model."""
    _, x, spec, handle = built("cnn", MeasuredLatency(cache_dir=tmp_path, progress=False, repeats=5))
    seen = []

    def measure(result: mdp_opt.Result) -> float:
        seen.append(measure_latency(handle.apply(result), x, repeats=5))
        return seen[-1]

    fit = mdp_opt.solve_measured(spec, "50%", measure, backend=exact_backend(), max_rounds=4)
    assert 1 <= len(fit.rounds) <= 4 and len(seen) == sum(r.measured is not None for r in fit.rounds)
    assert fit.measured in seen
    if fit.within:
        assert fit.measured <= 0.5 * spec.full_cost("latency")
    handle.apply(fit.result)(x)          # whatever the verdict, the answer is a runnable model
