"""PyTorch adapter: a model -> an mdp-opt spec (importance, latency tables, removable blocks)
-> a physically slimmed model. One entry point for every family of models (CNNs, concatenations,
layer scale, transformers with any attention layout, hierarchical transformers, hybrids).

    from mdp_opt.adapters.torch import build_spec, measure_latency
    spec, handle = build_spec(model, example_input, data=batches, loss_fn=loss,
                              latency="measure", step=16, blocks="auto")
    result = mdp_opt.solve(spec, budget="50%")
    small = handle.apply(result)
    ms = measure_latency(small, example_input)

Inside a training loop: `prune_in_place(model, handle, result, optimizer)` slims your model object itself, and
`IterativePruner` prunes it in steps while it trains (see `iterative`).

Latency can be measured on another runtime: `MeasuredLatency(runtime="onnxruntime")` (or "openvino") and
`measure_latency(small, example_input, runtime="onnxruntime")` (see `runtimes`).

Under torch.distributed (DDP) every rank calls `build_spec` with its own batches and gets the same
spec (scores summed over ranks, latency measured on rank 0); `solve_on_rank0` gives every rank the
same result to apply (see `distributed`).

Needs `pip install 'mdp-opt[torch]'` (torch, tqdm, filelock); `mdp-opt[onnx]` for ONNX Runtime; `mdp-opt[openvino]` for
OpenVINO; `mdp-opt[ray]`
for latency tables built on a pool of devices (`MeasuredLatency(pool=...)`, see `latency_pool`);
`mdp-opt[torch-pruning]` for `spec_from_torch_pruning` (a Torch-Pruning `DependencyGraph` as a spec, see
`torch_pruning_bridge`).
"""

from .apply import PruningHandle
from .distributed import solve_on_rank0
from .families import (ConvFamily, Declined, Family, GraphFamily, TransformerFamily, recognise,
                       register_family)
from .handlers import (BatchNormHandler, ConvHandler, FunctionHandler, LayerHandler, LinearHandler, NormHandler,
                       OpaqueHandler, UnsupportedModelError, Workload, register_handler)
from .importance_check import ImportanceWarning
from .in_place import Configuration, InPlaceReport, prune_in_place, rebuild
from .iterative import IterativePruner, PruningStep
from .latency import MeasuredLatency, measure_latency
from .latency_cache import LatencyCacheWarning, MixedDevicesError
from .latency_pool import LatencyPool
from .modules import PrunedAttention, RemovedBranch, SkippedBlock
from .runtimes import Compiled, EagerRuntime, ExportedRuntime, OnnxRuntime, OpenVinoRuntime, Runtime
from .spec_builder import build_spec
from .structure import DimInfo, LayerWidths, Options, Structure
from .torch_pruning_bridge import TorchPruningHandle, spec_from_torch_pruning   # imports torch_pruning only when called
from .vit import ViTPruningHandle, build_vit_spec

ViTStructureError = UnsupportedModelError   # the former transformer-only refusal; every refusal is this type now

__all__ = [
    "BatchNormHandler", "Compiled", "Configuration", "ConvFamily", "ConvHandler", "Declined", "DimInfo",
    "EagerRuntime", "ExportedRuntime", "Family", "FunctionHandler", "GraphFamily", "ImportanceWarning", "InPlaceReport",
    "IterativePruner", "LatencyCacheWarning", "LatencyPool", "LayerHandler", "LayerWidths", "LinearHandler",
    "MeasuredLatency", "MixedDevicesError", "NormHandler", "OnnxRuntime", "OpaqueHandler", "OpenVinoRuntime", "Options",
    "PrunedAttention", "PruningHandle", "PruningStep", "RemovedBranch", "Runtime", "SkippedBlock", "Structure",
    "TorchPruningHandle", "TransformerFamily", "UnsupportedModelError",
    "ViTPruningHandle", "ViTStructureError", "Workload", "build_spec", "build_vit_spec", "measure_latency",
    "prune_in_place", "rebuild", "recognise", "register_family", "register_handler", "solve_on_rank0",
    "spec_from_torch_pruning",
]
