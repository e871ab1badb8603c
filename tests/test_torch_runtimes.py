"""Runtimes for latency tables and whole models: eager PyTorch, ONNX Runtime and OpenVINO (plumbing, not timings)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import (Compiled, EagerRuntime, MeasuredLatency, Runtime, build_spec,  # noqa: E402
                                    measure_latency)
from mdp_opt.adapters.torch.runtimes import ExportError, export_onnx, get_runtime  # noqa: E402

from torch_models import small_resnet  # noqa: E402
from vit_models import TimmStyleViT  # noqa: E402

HAS_ORT = all(__import__("importlib").util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime/onnx not installed (pip install 'mdp-opt[onnx]')")
HAS_OV = all(__import__("importlib").util.find_spec(m) is not None for m in ("openvino", "onnx"))
needs_ov = pytest.mark.skipif(not HAS_OV, reason="openvino/onnx not installed (pip install 'mdp-opt[openvino]')")
# the runtimes that time an ONNX export of each layer and of the whole model
EXPORTING = [pytest.param("onnxruntime", marks=needs_ort), pytest.param("openvino", marks=needs_ov)]


class CountingRuntime(EagerRuntime):
    """Eager PyTorch that counts what it compiles (a runtime written by a user)."""

    name = "counting"

    def __init__(self) -> None:
        self.compiled = 0

    def compile(self, fn, inputs, device, threads) -> Compiled:
        self.compiled += 1
        return super().compile(fn, inputs, device, threads)


def cnn(latency, costs=("latency",)):
    torch.manual_seed(0)
    model, x = small_resnet().eval(), torch.randn(1, 3, 16, 16)
    data = [(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))] * 2
    spec, handle = build_spec(model, x, data=data, loss_fn=F.cross_entropy, latency=latency, costs=costs, step=8)
    return model, x, spec, handle


def timer(tmp_path, runtime, **kwargs) -> MeasuredLatency:
    return MeasuredLatency(repeats=1, warmup=0, cache_dir=tmp_path, progress=False, runtime=runtime, **kwargs)


def test_a_user_runtime_times_tables_and_models_and_keys_the_cache(tmp_path):
    runtime = CountingRuntime()
    _, x, spec, handle = cnn(timer(tmp_path, runtime, calibrate=False))
    (cache,) = tmp_path.glob("*.json")          # beside it, the cache's lock file
    assert f"counting{torch.__version__}".replace("+", "_") in cache.name
    shapes = len(json.loads(cache.read_text())["entries"])
    assert runtime.compiled == 2 * shapes                      # each shape and its twin, once
    cnn(timer(tmp_path, runtime, calibrate=False))             # a second build reads the cache
    assert runtime.compiled == 2 * shapes
    small = handle.apply(solved_halfway(spec))
    assert measure_latency(small, x, repeats=2, runtime=runtime) > 0 and runtime.compiled == 2 * shapes + 1


class AloneRuntime(EagerRuntime):
    """Eager PyTorch claiming that a layer run alone spends 1,000 ms on work a whole model does not do."""

    name = "alone"

    def compile_layer(self, fn, inputs, device, threads) -> Compiled:
        compiled = self.compile(fn, inputs, device, threads)
        return Compiled(compiled.run, compiled.touch, excluded=lambda: 1000.0)


def test_what_a_layer_costs_only_alone_is_left_out_of_tables_not_whole_models(tmp_path):
    _, x, spec, handle = cnn(timer(tmp_path, AloneRuntime(), calibrate=False))
    assert all(np.all(t.table == 0) for t in spec.costs["latency"])     # every layer: measured - 1,000 ms, floored
    model = handle.apply(mdp_opt.solve(spec, "100%", backend="dp"))
    assert measure_latency(model, x, repeats=2, runtime=AloneRuntime()) > 0


def test_runtime_names_and_bad_runtimes():
    assert isinstance(get_runtime("eager"), EagerRuntime)
    with pytest.raises(ValueError, match="runtime: expected one of"):
        get_runtime("tensorrt")
    with pytest.raises(ValueError, match="runtime"):
        MeasuredLatency(runtime="tensorrt")
    with pytest.raises(NotImplementedError):
        Runtime().key()


@pytest.mark.parametrize("runtime", EXPORTING)
def test_exported_runtime_tables_live_in_their_own_cache_with_the_version(tmp_path, runtime):
    _, _, eager_spec, _ = cnn(timer(tmp_path, "eager", calibrate=False))
    _, _, other_spec, _ = cnn(timer(tmp_path, runtime, calibrate=False))
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    tag = f"{runtime}{get_runtime(runtime).version()}".replace("+", "_")
    assert len(names) == 2 and any(tag in n for n in names)
    assert eager_spec.full_cost("latency") > 0 and other_spec.full_cost("latency") > 0
    assert [t.dims for t in eager_spec.costs["latency"]] == [t.dims for t in other_spec.costs["latency"]]


@pytest.mark.parametrize("runtime", EXPORTING)
def test_exported_runtime_whole_model_and_calibration(tmp_path, runtime):
    model, x, spec, handle = cnn(timer(tmp_path, runtime))
    record = spec.meta["latency_calibration"]
    assert runtime in record["measured_with"]
    small = handle.apply(solved_halfway(spec))
    assert measure_latency(small, x, repeats=2, runtime=runtime) > 0


def solved_halfway(spec: mdp_opt.Spec) -> mdp_opt.Result:
    """The optimum halfway between the narrowest model without blocks and the full one in latency. (On a 16-32 px
    model the fitted fixed cost alone can be 30-45% of the full latency, so a plain "50%" may be infeasible.)"""
    least = mdp_opt.evaluate(spec, {d.name: 0 for d in spec.dims}, {b: False for b in spec.block_names})
    result = mdp_opt.solve(spec, (least.costs["latency"] + spec.full_cost("latency")) / 2, backend="dp")
    assert result.status is mdp_opt.Status.OPTIMAL
    return result


def run_onnx(runtime: str, model: bytes, x: torch.Tensor) -> np.ndarray:
    """The first output of the ONNX `model` on `x` in `runtime` (OpenVINO at f32)."""
    if runtime == "onnxruntime":
        import onnxruntime as ort
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"input0": x.numpy()})[0]
    import openvino
    compiled = openvino.Core().compile_model(openvino.Core().read_model(model), "CPU",
                                             {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({"input0": x.numpy()})[compiled.outputs[0]]


@pytest.mark.parametrize("runtime", EXPORTING)
def test_exported_computations_compute_what_torch_computes(runtime):
    torch.manual_seed(0)
    norm, mlp = nn.LayerNorm(16), nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
    x = torch.randn(2, 5, 16)
    for fn in (mlp, lambda t: t + mlp(norm(t))):          # a module, and a closure over modules
        out = run_onnx(runtime, export_onnx(fn, [x]), x)
        with torch.no_grad():
            np.testing.assert_allclose(out, fn(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("runtime", EXPORTING)
def test_vit_parts_export_and_time_in_an_exported_runtime(tmp_path, runtime):
    torch.manual_seed(0)
    model, x = TimmStyleViT().eval(), torch.randn(1, 3, 32, 32)
    spec, handle = build_spec(model, x, importance=None, data=[(torch.randn(2, 3, 32, 32), torch.tensor([1, 2]))],
                                  loss_fn=F.cross_entropy, latency=timer(tmp_path, runtime), step=16,
                                  head_step=2, head_dim_step=6)
    assert spec.full_cost("latency") > 0 and all(np.all(t.table >= 0) for t in spec.costs["latency"])
    small = handle.apply(solved_halfway(spec))
    assert measure_latency(small, x, repeats=2, runtime=runtime) > 0


class Unexportable(nn.Module):
    """An operator without an ONNX symbolic at opset 17."""

    def forward(self, x):
        return torch.special.bessel_j0(x)


@pytest.mark.parametrize("runtime", EXPORTING)
def test_an_unexportable_model_is_a_clear_error(runtime):
    with pytest.raises(ExportError, match=f"{runtime}: cannot export Unexportable to ONNX.*runtime='eager'"):
        measure_latency(Unexportable(), torch.randn(1, 4), runtime=runtime)


@needs_ort
def test_onnxruntime_refuses_a_cuda_input_and_bad_options():
    from mdp_opt.adapters.torch import OnnxRuntime
    with pytest.raises(ValueError, match="CPU execution provider.*cuda"):
        OnnxRuntime().check(torch.device("cuda"))
    with pytest.raises(ValueError, match="optimization"):
        OnnxRuntime(optimization="max")
    assert OnnxRuntime(optimization="extended").key() != OnnxRuntime().key()


@needs_ov
def test_openvino_refuses_a_cuda_input_and_bad_options_and_keys_its_precision():
    from mdp_opt.adapters.torch import OpenVinoRuntime
    with pytest.raises(ValueError, match="OpenVINO's CPU plugin.*cuda"):
        OpenVinoRuntime().check(torch.device("cuda"))
    with pytest.raises(ValueError, match="precision"):
        OpenVinoRuntime(precision="int4")
    with pytest.raises(ValueError, match="opset"):
        OpenVinoRuntime(opset=5)
    default = OpenVinoRuntime()
    assert default.precision in OpenVinoRuntime.PRECISIONS           # OpenVINO's default, read off the processor
    assert pickle.loads(pickle.dumps(default)).key() == default.key()     # it travels to a pool's workers
    assert OpenVinoRuntime(precision="f32").key().endswith("cpu-f32-opset17")
    assert OpenVinoRuntime(precision="bf16").key() != OpenVinoRuntime(precision="f32").key()


@needs_ov
def test_openvino_leaves_out_the_conversions_at_a_layers_inputs_and_outputs():
    from mdp_opt.adapters.torch import OpenVinoRuntime
    runtime, cpu = OpenVinoRuntime(), torch.device("cpu")
    conv, x = nn.Conv2d(32, 32, 3, padding=1).eval(), torch.randn(1, 32, 32, 32)
    layer = runtime.compile_layer(conv, [x], cpu, 1)
    layer.run()
    assert layer.excluded is not None and layer.excluded() > 0     # the plain f32 input reordered, and the output
    assert runtime.compile(conv, [x], cpu, 1).excluded is None     # a whole model is timed with everything
    assert runtime.call_overhead([x], cpu, 1).excluded is None
