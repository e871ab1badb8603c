"""PyTorch adapter: a CNN -> an mdp-opt spec (importance, latency tables, removable blocks)
-> a physically slimmed model.

    from mdp_opt.adapters.torch import build_spec, measure_latency
    spec, handle = build_spec(model, example_input, data=batches, loss_fn=loss,
                              latency="measure", step=16, blocks="auto")
    result = mdp_opt.solve(spec, budget="50%")
    small = handle.apply(result)
    ms = measure_latency(small, example_input)

Latency can be measured on another runtime: `MeasuredLatency(runtime="onnxruntime")` and
`measure_latency(small, example_input, runtime="onnxruntime")` (see `runtimes`).

Needs `pip install 'mdp-opt[torch]'` (torch, torch-pruning, tqdm).
"""

from .apply import LayerWidths, PruningHandle
from .handlers import (BatchNormHandler, ConvHandler, FunctionHandler, LayerHandler, LinearHandler,
                       UnsupportedModelError, Workload, register_handler)
from .importance_check import ImportanceWarning
from .latency import MeasuredLatency, measure_latency
from .runtimes import Compiled, EagerRuntime, OnnxRuntime, Runtime
from .spec_builder import build_spec
from .vit import ViTPruningHandle, build_vit_spec
from .vit_modules import PrunedAttention, PrunedBlock
from .vit_structure import ViTStructureError

__all__ = [
    "BatchNormHandler", "Compiled", "ConvHandler", "EagerRuntime", "FunctionHandler", "ImportanceWarning",
    "LayerHandler", "LayerWidths", "LinearHandler", "MeasuredLatency", "OnnxRuntime", "PrunedAttention",
    "PrunedBlock", "PruningHandle", "Runtime", "UnsupportedModelError", "ViTPruningHandle", "ViTStructureError",
    "Workload", "build_spec", "build_vit_spec", "measure_latency", "register_handler",
]
