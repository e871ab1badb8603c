"""The affine latency model: scaled tables, a weight-streaming term and a fixed cost, fitted to whole models.

The "device" in these tests is a known function of the slimmed model (its multiply-accumulates,
its parameters and a constant), so the fitted spec must predict every configuration exactly,
removed blocks included. No timings are asserted."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import MeasuredLatency, build_spec  # noqa: E402
from mdp_opt.adapters.torch.calibration import ANSWER_WEIGHT, calibrate_latency  # noqa: E402
from mdp_opt.adapters.torch.latency_model import (AffineFit, Reference, as_result, features, fit_affine,  # noqa: E402
                                                  nnls, reference_configurations, split_tables)

from test_torch_calibration import exact_backend, macs  # noqa: E402
from torch_models import MobileNetV2Like, small_resnet  # noqa: E402
from vit_models import TimmStyleViT  # noqa: E402

MS_PER_MAC, MS_PER_PARAM, FIXED_MS = 2e-6, 3e-6, 0.7


def built(kind: str, latency, costs=("latency", "params")):
    torch.manual_seed(0)
    if kind == "vit":
        model, x = TimmStyleViT().eval(), torch.randn(1, 3, 32, 32)
        data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))] * 2
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, costs=costs,
                                      step=16, head_step=2, head_dim_step=6)
    else:
        model = small_resnet().eval() if kind == "resnet" else MobileNetV2Like().eval()
        x = torch.randn(1, 3, 16, 16)
        data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))] * 2
        spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, costs=costs,
                                  step=8)
    return model, x, spec, handle


def device(x: torch.Tensor):
    """A device whose latency is MACs and parameters at fixed rates plus a fixed cost."""
    def measure(model: torch.nn.Module) -> float:
        return MS_PER_MAC * macs(model, x) + MS_PER_PARAM * sum(p.numel() for p in model.parameters()) + FIXED_MS
    return measure


@pytest.mark.parametrize("kind", ["resnet", "mobilenet", "vit"])
def test_the_affine_fit_recovers_a_known_device_and_predicts_every_configuration(kind):
    _, x, raw, handle = built(kind, "flops")
    measure = device(x)
    spec, fitted = calibrate_latency(raw, handle, measure, "known device", method="affine")
    assert isinstance(fitted, AffineFit) and not fitted.note
    assert fitted.factors["params"] == pytest.approx(MS_PER_PARAM, rel=1e-6)
    assert fitted.factors["tables_early"] == pytest.approx(MS_PER_MAC, rel=1e-6)
    assert fitted.factors["tables_late"] == pytest.approx(MS_PER_MAC, rel=1e-6)
    record = spec.meta["latency_calibration"]
    names = [p["model"] for p in record["points"]]
    assert record["method"] == "affine" and names[:len(reference_configurations(raw))] == [
        n for n, _, _ in reference_configurations(raw)]
    assert any(n.startswith("solver answer at") for n in names)          # the second stage
    assert all(np.all(t.table >= 0) for t in spec.costs["latency"])
    results = [mdp_opt.solve(spec, {"latency": f"{pct}%"}, backend=exact_backend()) for pct in (40, 60, 85)]
    assert all(r.has_solution for r in results)
    rng = np.random.default_rng(0)
    for _ in range(4):                       # random configurations, blocks removed at random
        choice = {d.name: int(rng.integers(d.size)) for d in spec.dims}
        active = {b: bool(rng.integers(2)) for b in spec.block_names}
        results.append(as_result(spec, choice, active, "random"))
    for result in results:
        assert result.costs["latency"] == pytest.approx(measure(handle.apply(result)), rel=1e-6)


@pytest.mark.parametrize("backend", ["cpsat", "milp", "dp"])
def test_a_cost_per_kept_block_is_fitted_and_every_exact_backend_solves_with_it(backend):
    """A device that also spends a fixed time on every residual block the model still runs (counted on the
    slimmed torch model: a removed block is the identity): the calibrated spec carries it as a term gated by each
    block, and the answers of every exact backend are predicted exactly, removed blocks included."""
    if backend not in mdp_opt.installed_backends():
        pytest.skip(f"{backend} is not installed")
    _, x, raw, handle = built("resnet", "flops")
    per_block = 0.05
    block_types = tuple({type(m) for name, m in handle.model.named_modules() if name in raw.block_names})
    assert block_types

    def measure(model: torch.nn.Module) -> float:
        kept = sum(isinstance(m, block_types) for m in model.modules())
        return device(x)(model) + per_block * kept

    spec, fitted = calibrate_latency(raw, handle, measure, "known device", method="affine")
    assert fitted.factors["blocks"] == pytest.approx(per_block, rel=1e-6)
    gated = [t for t in spec.costs["latency"] if t.block is not None and not t.dims]
    assert sorted(t.block for t in gated) == sorted(raw.block_names)
    removed = 0
    for pct in (25, 45, 70):
        result = mdp_opt.solve(spec, {"latency": f"{pct}%"}, backend=backend)
        assert result.status is mdp_opt.Status.OPTIMAL
        assert result.costs["latency"] == pytest.approx(measure(handle.apply(result)), rel=1e-6)
        removed += sum(not a for a in result.active.values())
    assert removed > 0                      # the block term was priced in some answer


def test_a_fixed_cost_is_what_one_factor_misses():
    """The issue's symptom: one factor through the full model predicts pruned models too fast on a device with a
    fixed cost; the affine model does not."""
    _, x, raw, handle = built("resnet", "flops")
    measure = device(x)
    affine, _ = calibrate_latency(raw, handle, measure, "known device", method="affine")
    factor, _ = calibrate_latency(raw, handle, measure, "known device", method="factor")
    for spec in (affine, factor):
        result = mdp_opt.solve(spec, {"latency": "30%"}, backend=exact_backend())
        error = result.costs["latency"] / measure(handle.apply(result)) - 1
        if spec is affine:
            assert abs(error) < 1e-6
        else:
            assert error < -0.05                         # predicted faster than it runs


def test_the_fit_is_non_negative_and_the_spec_holds_no_negative_entry():
    _, x, raw, handle = built("resnet", "flops")
    # a device faster than any linear model allows at the small end: the constant is limited to 0
    spec, fitted = calibrate_latency(raw, handle, lambda m: MS_PER_MAC * macs(m, x) - 0.01, "MACs", method="affine")
    assert fitted.constant >= 0 and all(v >= 0 for v in fitted.factors.values())
    assert all(np.all(t.table >= 0) for t in spec.costs["latency"])


def test_features_count_only_what_a_choice_can_remove():
    _, _, raw, _ = built("resnet", "flops")
    full_choice, active = raw.full_configuration()
    small = {d.name: 0 for d in raw.dims}
    full, least = features(raw, full_choice, active), features(raw, small, {b: False for b in active})
    assert set(full) == {"tables_early", "tables_late", "params", "blocks"}
    assert full["blocks"] == len(raw.block_names) > 0 and least["blocks"] == 0
    assert all(v >= 0 for v in least.values())
    assert full["tables_early"] > least["tables_early"] and full["tables_late"] > least["tables_late"]
    assert full["params"] > least["params"]


def test_the_tables_split_where_the_full_model_reaches_half_its_cost_in_network_order():
    terms = [mdp_opt.Term(("a",), np.array([0.0, w])) for w in (1.0, 1.0, 6.0, 1.0, 1.0)]
    early, late = split_tables(terms)
    assert early == terms[:2] and late == terms[2:]          # the big third term's midpoint is the half
    assert split_tables([mdp_opt.Term((), np.array(0.0))]) == ([mdp_opt.Term((), np.array(0.0))], [])


@pytest.mark.parametrize("kind", ["resnet", "mobilenet", "vit"])
def test_early_and_late_layers_and_kept_blocks_may_cost_different_amounts(kind):
    """A device on which the early layers run 3x slower per table millisecond than the late ones, and each kept
    block costs a fixed time beyond its tables (as OpenVINO spends on a block's operators): the fit recovers every
    rate and predicts random configurations exactly, where one factor for all the tables and no block cost cannot."""
    _, _, raw, _ = built(kind, "flops")
    assert raw.block_names
    rates = {"tables_early": 3 * MS_PER_MAC, "tables_late": MS_PER_MAC, "params": MS_PER_PARAM, "blocks": 0.02}

    def device(choice, active):
        return FIXED_MS + sum(rates[n] * v for n, v in features(raw, choice, active).items())

    def one_factor(f):
        return [f["tables_early"] + f["tables_late"], f["params"], 1.0]

    refs = [Reference(n, c, a, (device(c, a),)) for n, c, a in reference_configurations(raw)]
    fitted = fit_affine(raw, refs)
    assert fitted.factors == pytest.approx(rates, rel=1e-6) and fitted.constant == pytest.approx(FIXED_MS, rel=1e-6)
    measured = np.array([r.measured_ms for r in refs])
    merged = nnls(np.array([one_factor(f) for f in fitted.features]) / measured[:, None], np.ones(len(refs)))
    rng = np.random.default_rng(0)
    worst_one_factor = 0.0
    for _ in range(8):
        choice = {d.name: int(rng.integers(d.size)) for d in raw.dims}
        active = {b: bool(rng.integers(2)) for b in raw.block_names}
        feats, truth = features(raw, choice, active), device(choice, active)
        assert fitted.predict(feats) == pytest.approx(truth, rel=1e-6)
        worst_one_factor = max(worst_one_factor, abs(np.dot(one_factor(feats), merged) / truth - 1))
    assert worst_one_factor > 0.02


def test_halves_the_references_cannot_tell_apart_share_one_factor():
    """Two latency terms over the same dim, one twice the other: every configuration has late = 2 x early, so no
    measurement can split a factor between them; the fit gives both one factor and still predicts exactly."""
    width = np.array([1.0, 2.0, 4.0])
    spec = mdp_opt.Spec(
        dims=(mdp_opt.Dim("a", (2, 4, 8)), mdp_opt.Dim("b", (2, 4, 8))),
        objective=(mdp_opt.Term(("a",), width), mdp_opt.Term(("b",), width)),
        costs={"latency": (mdp_opt.Term(("a",), width), mdp_opt.Term(("a",), 2 * width)),
               "params": (mdp_opt.Term(("b",), 10 * width),)})
    early, late = split_tables(spec.costs["latency"])
    assert len(early) == 1 and len(late) == 1

    def device(choice):
        f = features(spec, choice, {})
        return 0.5 + 3.0 * (f["tables_early"] + f["tables_late"]) + 0.1 * f["params"]

    configs = [{"a": i, "b": j} for i in range(3) for j in range(3)]
    fitted = fit_affine(spec, [Reference(f"c{k}", c, {}, (device(c),)) for k, c in enumerate(configs)])
    assert not fitted.note
    assert fitted.factors["tables_early"] == pytest.approx(3.0) and fitted.factors["tables_late"] == pytest.approx(3.0)
    assert all(fitted.predict(features(spec, c, {})) == pytest.approx(device(c)) for c in configs)


def test_a_weighted_reference_is_fitted_closer_where_the_form_cannot_fit_all():
    """A device the affine form cannot follow (latency quadratic in the tables): giving one reference weight 9
    (as the calibration gives the solver's answers) cuts its relative error, at the others' expense."""
    _, _, raw, _ = built("resnet", "flops")

    def device(choice, active):
        f = features(raw, choice, active)
        return 0.2 + (f["tables_early"] + f["tables_late"]) ** 2 / 1e3

    refs = [Reference(n, c, a, (device(c, a),)) for n, c, a in reference_configurations(raw)]
    errors = {}
    for weight in (1.0, 9.0):
        weighted = [replace(r, weight=weight) if r.name == "uniform 0.5" else r for r in refs]
        fitted = fit_affine(raw, weighted)
        errors[weight] = [abs(fitted.predict(f) / r.measured_ms - 1) for f, r in zip(fitted.features, weighted)]
    heavy = [r.name for r in refs].index("uniform 0.5")
    assert errors[1.0][heavy] > 0.01 and errors[9.0][heavy] < 0.75 * errors[1.0][heavy]
    assert sum(errors[9.0]) - errors[9.0][heavy] > sum(errors[1.0]) - errors[1.0][heavy]


def test_the_calibration_counts_each_solver_answer_as_several_references():
    _, x, raw, handle = built("resnet", "flops")
    _, fitted = calibrate_latency(raw, handle, device(x), "known device", method="affine")
    weights = {r.name: r.weight for r in fitted.references}
    answers = [n for n in weights if n.startswith("solver answer at")]
    assert answers and all(weights[n] == ANSWER_WEIGHT > 1 for n in answers)
    assert all(w == 1.0 for n, w in weights.items() if n not in answers)


def test_the_calibration_says_which_answer_budgets_were_infeasible_in_its_first_fit():
    """A fixed cost above a fifth of the full latency makes the 20% answer infeasible: the calibration measures
    the other answers and its description names the budgets it had answers at, and the one it had none at."""
    model, x, raw, handle = built("resnet", "flops")
    measure = device(x)
    full = measure(model)
    spec, fitted = calibrate_latency(raw, handle, lambda m: measure(m) + 0.3 * full, "known device", method="affine")
    answers = {r.name for r in fitted.references if r.name.startswith("solver answer at")}
    assert answers == {"solver answer at 40%", "solver answer at 60%", "solver answer at 80%"}
    how = spec.meta["latency_calibration"]["measured_with"]
    assert "answers at 40%, 60%, 80% of a first fit; none at 20%, infeasible there" in how


def test_too_few_references_fall_back_to_one_factor():
    _, _, raw, _ = built("resnet", "flops")
    choice, active = raw.full_configuration()
    fitted = fit_affine(raw, [Reference("full", choice, active, (2.0, 2.0, 2.0))])
    assert "one factor" in fitted.note
    assert fitted.predict(features(raw, choice, active)) == pytest.approx(2.0)


def test_reference_configurations_span_widths_and_blocks():
    _, _, raw, _ = built("resnet", "flops")
    configs = reference_configurations(raw)
    names = [n for n, _, _ in configs]
    assert names[0] == "full" and "no blocks" in names and "uniform 0.25" in names
    assert len({(tuple(c.items()), tuple(a.items())) for _, c, a in configs}) == len(configs)
    assert any(not any(a.values()) for _, _, a in configs)


def test_nnls_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.normal(size=(7, 3)), rng.normal(size=7)
        x = nnls(a, b)
        assert np.all(x >= 0)
        grid = [np.array(p) for p in np.stack(np.meshgrid(*[np.linspace(0, 3, 31)] * 3), -1).reshape(-1, 3)]
        best = min(np.sum((a @ p - b) ** 2) for p in grid)
        assert np.sum((a @ x - b) ** 2) <= best + 1e-9


@pytest.mark.parametrize("kind, streak", [("resnet", 1), ("vit", 1), ("resnet", 2)])
def test_measured_latency_is_calibrated_affinely_by_default(kind, streak, tmp_path):
    timer = MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False, calibration_runs=3,
                            calibration_streak=streak)
    _, _, spec, handle = built(kind, timer, costs=("latency",))
    record = spec.meta["latency_calibration"]
    assert record["method"] == "affine" and record["measured_with"].startswith("affine: measure_latency")
    assert f"{streak} run(s) kept per turn after 15 ms of untimed runs" in record["measured_with"]
    assert set(spec.costs) == {"latency"} and handle.spec is spec            # params used for the fit only
    assert all(p["runs"] == 3 and p["measured_ms"] > 0 for p in record["points"])
    full = next(p for p in record["points"] if p["model"] == "full")
    assert spec.full_cost("latency") == pytest.approx(full["predicted_ms"], rel=1e-9)
    _, _, with_params, _ = built(kind, MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False,
                                                       calibration_runs=3), costs=("latency", "params"))
    assert set(with_params.costs) == {"latency", "params"}


def test_a_calibration_streak_below_one_is_refused():
    with pytest.raises(ValueError, match="calibration_streak"):
        MeasuredLatency(calibration_streak=0)


@pytest.mark.parametrize("bad", [-1.0, True, "15", float("nan")])
def test_a_bad_calibration_settling_time_is_refused(bad):
    with pytest.raises(ValueError, match="calibration_settle_ms"):
        MeasuredLatency(calibration_settle_ms=bad)
