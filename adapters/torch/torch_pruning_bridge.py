"""Torch-Pruning bridge: a Torch-Pruning `DependencyGraph` and importance -> an mdp-opt spec, and the exact
answer applied back through Torch-Pruning.

    import torch_pruning as tp
    from mdp_opt.adapters.torch import spec_from_torch_pruning

    spec, handle = spec_from_torch_pruning(model, example_input, importance=tp.importance.GroupMagnitudeImportance(),
                                           latency="flops", ignored_layers=[model.fc])
    result = mdp_opt.solve(spec, budget="50%")          # exact, instead of a uniform pruning ratio
    pruned = handle.apply(result)                        # pruned through Torch-Pruning's own groups

Each Torch-Pruning group is one dim (its channels, kept in multiples of `step`); its importance is the
Torch-Pruning importance of the group, its channels sorted and summed (`mdp_opt.importance_table`); each
convolution and Linear layer costs a table over (the group sizing its output, the groups sizing its
input): the "bilayer" latency of the MDP paper. Residual blocks are not removed: only widths.
Needs `pip install 'mdp-opt[torch,torch-pruning]'`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mdp_opt import Dim, Result, Spec, Term, importance_table

from .checks import RESOURCES, calibrate_if_measured, calibration_costs, check_result_for
from .costs import workload_latencies
from .handlers import Workload
from .importance import batch_losses
from .latency import MeasuredLatency, eval_mode
from .latency_model import as_result
from .modules import evaluating
from .spec_builder import describe_latency, width_choices
from .tp_graph import GroupInfo, LayerInfo, ParamInfo, layer_infos, param_infos, reaches_output

MAX_TABLE = 4096


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError as e:
        raise ImportError("the Torch-Pruning bridge needs torch-pruning: pip install 'mdp-opt[torch-pruning]'") from e
    return torch_pruning


def spec_from_torch_pruning(model: nn.Module, example_input: torch.Tensor, *, importance: Any = None,
                            data: Iterable[Any] | None = None,
                            loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
                            latency: str | MeasuredLatency | Callable[[Workload], float] = "measure",
                            costs: Sequence[str] = ("latency",), step: int = 8, min_channels: int | float = 1,
                            ignored_layers: Sequence[nn.Module] = (), name: str | None = None
                            ) -> tuple[Spec, "TorchPruningHandle"]:
    """A spec whose dims are the pruning groups of Torch-Pruning's `DependencyGraph` of `model`, and a handle
    that applies a solution through Torch-Pruning. Widths only: no residual block is removed (`build_spec`
    removes blocks).

    Args:
        model: the network (left unmodified; traced in eval mode).
        example_input: one input batch; its device, dtype and batch size are those timed.
        importance: a Torch-Pruning importance (`tp.importance.GroupMagnitudeImportance()`, `GroupTaylorImportance()`,
            ...; any callable `group -> per-channel scores`). Default: `GroupTaylorImportance(normalizer=None)`
            when `data` is given, else `GroupMagnitudeImportance(normalizer=None)`. A Taylor importance reads the
            parameters' `.grad`: give `data` and `loss_fn` (the gradients of those batches are summed, and the
            model's own `.grad` fields restored afterwards), or run `loss.backward()` yourself before, as with
            Torch-Pruning. Scores must be finite and >= 0; they are scaled so the prunable groups sum to 1
            (the objective is the fraction of importance kept).
        data, loss_fn: `(inputs, targets)` batches and `loss_fn(outputs, targets)`, for Taylor importance.
        latency: "measure" (a default `MeasuredLatency`: each layer timed on the device of `example_input`,
            calibrated against whole models), a configured `MeasuredLatency(...)`, "flops" (multiply-accumulates
            as the latency), or a callable `fn(workload) -> cost`. Only convolution and Linear layers have tables;
            measured latency's calibration fits the rest (norms, activations, additions) as a whole-model term.
        costs: the resources in the spec: any of "latency", "flops" (multiply-accumulates of convolutions and
            Linear layers, exact), "params" (every parameter of the model, exact) and "activations" (elements
            the pruned layers write).
        step: kept counts are multiples of `step` or the full width; `min_channels`: the fewest a group keeps
            (a count >= 1, or a fraction in (0, 1) of its width).
        ignored_layers: modules whose output channels keep their width, as in Torch-Pruning (the groups pruning
            them are left out). Groups that reach the model's output keep their width too (a classifier's classes).
        name: the spec's name (default: the model's class name).

    Refused, with the layer and the fix (usually `ignored_layers=`): grouped (not depthwise) convolutions, layers
    read unevenly through concatenations, and layer types without a cost model (transposed convolutions,
    attention and recurrent modules: use `build_spec`). Returns `(spec, handle)`.
    """
    tp = _tp()
    _check_arguments(model, example_input, importance, data, loss_fn, latency, costs, step, min_channels,
                     ignored_layers)
    if isinstance(latency, str) and latency == "measure":
        latency = MeasuredLatency()
    if importance is None:
        importance = (tp.importance.GroupTaylorImportance(normalizer=None) if data is not None
                      else tp.importance.GroupMagnitudeImportance(normalizer=None))
    ignored = list(ignored_layers)
    calls = _record_calls(model, example_input)
    dg = _build_graph(tp, model, example_input)
    groups = _groups(dg, model, ignored, step, min_channels)
    prunable = {n: (g, grp) for n, (g, grp) in groups.items() if not g.pinned}
    if not prunable:
        raise ValueError("model: Torch-Pruning found no prunable group (every group is ignored or reaches the "
                         "output); check ignored_layers=")
    choices = {n: width_choices(g.width, step, _minimum(min_channels, g.width)) for n, (g, _) in prunable.items()}
    scores = _scores(tp, model, importance, prunable, data, loss_fn)
    layers = layer_infos(dg, model, groups, calls)
    wanted = calibration_costs(costs, latency)
    params = param_infos(dg, model, groups, list(calls)) if "params" in wanted else []
    terms = _cost_terms(layers, params, choices, wanted, latency, example_input)
    order = {n: np.argsort(-s, kind="stable") for n, s in scores.items()}
    spec = Spec(dims=tuple(Dim(n, choices[n]) for n in prunable),
                objective=tuple(Term((n,), importance_table(scores[n], choices[n])) for n in prunable),
                costs=terms, name=name or type(model).__name__,
                meta={"source": "mdp_opt.adapters.torch.torch_pruning_bridge", "model": type(model).__name__,
                      "importance": type(importance).__name__, "latency": describe_latency(latency), "step": step,
                      "input_shape": list(example_input.shape),
                      "groups": {n: list(g.layers) for n, (g, _) in prunable.items()},
                      "pinned": {g.root: g.pinned for g, _ in groups.values() if g.pinned}})
    handle = TorchPruningHandle(model, example_input, spec, [g for g, _ in prunable.values()], order, layers, dg)
    return calibrate_if_measured(spec, handle, latency, costs, example_input), handle


class TorchPruningHandle:
    """Applies a solution of the spec `spec_from_torch_pruning` returned, through Torch-Pruning."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, spec: Spec, groups: Sequence[GroupInfo],
                 order: Mapping[str, np.ndarray], layers: Sequence[LayerInfo], graph: Any) -> None:
        self.model, self.example_input, self.spec = model, example_input, spec
        self.groups, self.order, self.layers, self.graph = list(groups), dict(order), list(layers), graph
        with torch.no_grad(), eval_mode(model):
            self._output_shape = _shapes(model(example_input))
        self._spent = False

    def apply(self, result: Result, inplace: bool = False) -> nn.Module:
        """The model with each group pruned to `result.kept` channels, its lowest-importance ones removed by
        Torch-Pruning (`group.prune(idxs)`). A pruned copy by default (the model is untouched, and `apply` may be
        called again); with `inplace=True` the model itself, as Torch-Pruning does (the handle is then spent:
        build a new spec from the pruned model to prune it again). Checked before it is returned: every
        convolution / Linear layer has the widths the solution says, and the model runs on the example input
        and gives outputs of the same shapes."""
        check_result_for(self.spec, result, "spec_from_torch_pruning")
        if self._spent:
            raise ValueError("apply: this handle already pruned its model in place; build a new spec from the "
                             "pruned model (spec_from_torch_pruning) to prune it again")
        for d in self.spec.dims:
            if result.kept[d.name] not in d.choices:
                raise ValueError(f"result: keeps {result.kept[d.name]} channels of {d.name}, not one of this spec's "
                                 f"choices {d.choices}; solve the spec this handle came with")
        if not isinstance(inplace, bool):
            raise TypeError(f"inplace: expected True or False, got {inplace!r}")
        target = self.model if inplace else copy.deepcopy(self.model)
        dg = self.graph if inplace else _build_graph(_tp(), target, self.example_input)
        modules = dict(target.named_modules())
        with torch.no_grad():
            for g in self.groups:
                drop = sorted(int(i) for i in self.order[g.name][result.kept[g.name]:])
                if drop:
                    root = modules[g.root]
                    dg.get_pruning_group(root, dg.get_pruner_of_module(root).prune_out_channels, drop).prune()
        if inplace:
            self._spent = True
        self._check(target, result.kept)
        return target

    def result_of(self, pruned: nn.Module) -> Result:
        """The configuration of this spec that a pruned copy of the model has (read from its group roots' output
        channels; e.g. one Torch-Pruning's own pruner made), as a `Result` with its costs and objective; the
        objective assumes each group kept its channels of highest importance, as Torch-Pruning does when it
        prunes with the same importance."""
        modules = dict(pruned.named_modules())
        choice = {}
        for d, g in zip(self.spec.dims, self.groups):
            root = modules.get(g.root)
            if root is None:
                raise ValueError(f"pruned: has no module {g.root}; give a pruned copy of the model this spec was "
                                 "built from")
            width = root.out_channels if isinstance(root, nn.modules.conv._ConvNd) else root.out_features
            if width not in d.choices:
                raise ValueError(f"pruned: {g.root} keeps {width} channels, not one of the spec's choices {d.choices}; "
                                 "build the spec with a step (step=) that allows it")
            choice[d.name] = d.choices.index(width)
        return as_result(self.spec, choice, {}, "torch-pruning model")

    def describe(self, result: Result) -> str:
        """One line per group: its root layer, full width -> kept channels, and the layers it prunes."""
        lines = [f"{'group (root layer)':40} {'width':>6} {'kept':>6}  layers"]
        for g in self.groups:
            lines.append(f"{g.name:40} {g.width:6} {result.kept[g.name]:6}  {', '.join(g.layers)}")
        return "\n".join(lines)

    def _check(self, model: nn.Module, kept: Mapping[str, int]) -> None:
        modules = dict(model.named_modules())
        for layer in self.layers:
            m = modules[layer.name]
            want = layer.widths(kept)
            have = ((m.out_channels, m.in_channels) if isinstance(m, nn.modules.conv._ConvNd)
                    else (m.out_features, m.in_features))
            if have != want or (layer.depthwise and m.groups != want[1]):
                raise RuntimeError(f"apply: {layer.name} has (out, in) = {have} after Torch-Pruning pruned it, but "
                                   f"the solution says {want}; please report this model")
        with torch.no_grad(), eval_mode(model):
            shape = _shapes(model(self.example_input))
        if shape != self._output_shape:
            raise RuntimeError(f"apply: the pruned model's output has shape {shape}, the original's "
                               f"{self._output_shape}; pass the output layer in ignored_layers=")


def _check_arguments(model: Any, example_input: Any, importance: Any, data: Any, loss_fn: Any, latency: Any,
                     costs: Any, step: Any, min_channels: Any, ignored_layers: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input: expected a tensor (one input batch), got {type(example_input).__name__}")
    if (data is None) != (loss_fn is None):
        raise ValueError("data, loss_fn: give both (batches of (inputs, targets) and loss_fn(outputs, targets)) "
                         "or neither")
    if importance is not None and not callable(importance):
        raise TypeError(f"importance: expected a Torch-Pruning importance (callable on a group), got "
                        f"{type(importance).__name__}")
    if data is not None and importance is not None and not _is_taylor(importance):
        raise ValueError(f"data: only a Taylor importance uses gradients, and {type(importance).__name__} does not; "
                         "drop data= and loss_fn= (or use tp.importance.GroupTaylorImportance())")
    if not (latency in ("measure", "flops") or isinstance(latency, MeasuredLatency)
            or (callable(latency) and not isinstance(latency, str))):
        raise ValueError(f"latency: expected 'measure', 'flops', a MeasuredLatency or a callable, got {latency!r}")
    if isinstance(costs, str) or not costs or any(c not in RESOURCES for c in costs) or len(set(costs)) != len(costs):
        raise ValueError(f"costs: expected a non-empty tuple of distinct names from {RESOURCES}, got {costs!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step: expected a positive integer granularity, got {step!r}")
    _minimum(min_channels, 1)
    if isinstance(ignored_layers, nn.Module) or isinstance(ignored_layers, str):
        raise TypeError("ignored_layers: expected a list of modules, got a single one; write ignored_layers=[module]")
    inside = {id(m) for m in model.modules()}
    for i, m in enumerate(ignored_layers):
        if not isinstance(m, nn.Module) or id(m) not in inside:
            raise ValueError(f"ignored_layers[{i}]: expected a submodule of the model, got {type(m).__name__}")


def _minimum(min_channels: Any, width: int) -> int:
    if isinstance(min_channels, bool) or not isinstance(min_channels, (int, float)):
        raise ValueError(f"min_channels: expected a channel count or a fraction in (0, 1), got {min_channels!r}")
    if isinstance(min_channels, float):
        if not 0 < min_channels < 1:
            raise ValueError(f"min_channels: a fraction must be in (0, 1), got {min_channels}; give counts as integers")
        return max(1, math.ceil(min_channels * width))
    if min_channels < 1:
        raise ValueError(f"min_channels: expected at least 1 channel, got {min_channels}")
    return min_channels


def _is_taylor(importance: Any) -> bool:
    return isinstance(importance, _tp().importance.GroupTaylorImportance)


def _shapes(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (list, tuple)):
        return tuple(_shapes(o) for o in out)
    if isinstance(out, dict):
        return {k: _shapes(v) for k, v in out.items()}
    return type(out).__name__


def _record_calls(model: nn.Module, example_input: torch.Tensor) -> dict[str, list[tuple[tuple[int, ...], ...]]]:
    """Layer name -> (input shape, output shape) of each call of every convolution / Linear in one forward pass."""
    calls: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}
    hooks = []
    for n, m in model.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, nn.RNNBase)):
            def hook(mod: nn.Module, args: tuple, out: Any, n: str = n) -> None:
                if isinstance(out, torch.Tensor):
                    calls.setdefault(n, []).append((tuple(args[0].shape), tuple(out.shape)))
                else:
                    calls.setdefault(n, []).append(((), ()))
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model):
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return calls


def _build_graph(tp: Any, model: nn.Module, example_input: torch.Tensor) -> Any:
    with torch.enable_grad(), eval_mode(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)


def _groups(dg: Any, model: nn.Module, ignored: list[nn.Module], step: int, min_channels: Any
            ) -> dict[str, tuple[GroupInfo, Any]]:
    """Every Torch-Pruning group not touching an ignored layer: name -> (GroupInfo, group)."""
    names = {m: n for n, m in model.named_modules()}
    out = {}
    for group in dg.get_all_groups(ignored_layers=ignored):
        root = group[0].dep.target.module
        root_name = names[root]
        width = dg.get_out_channels(root)
        layers = tuple(dict.fromkeys(names[item.dep.target.module] for item in group
                                     if dg.is_out_channel_pruning_fn(item.dep.handler)
                                     and isinstance(item.dep.target.module, (nn.modules.conv._ConvNd, nn.Linear))))
        pinned = ""
        if reaches_output(dg, group):
            pinned = "reaches the model's output"
        elif len(width_choices(width, step, _minimum(min_channels, width))) == 1:
            pinned = f"{width} channels allow no smaller choice (step={step}, min_channels={min_channels})"
        out[root_name] = (GroupInfo(root_name, root_name, width, layers, pinned), group)
    return out


@contextlib.contextmanager
def _gradients(model: nn.Module, data: Iterable[Any], loss_fn: Callable[[Any, Any], torch.Tensor]) -> Iterator[None]:
    """Inside the block, every parameter's `.grad` is the sum of the gradients of `data`; restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: no parameter requires gradients, so Taylor importance cannot be computed; "
                         "give importance=tp.importance.GroupMagnitudeImportance() instead")
    saved = [p.grad for p in params]
    device = params[0].device
    try:
        for p in params:
            p.grad = None
        batches = 0
        for loss in batch_losses(model, data, loss_fn, device):
            loss.backward()
            batches += 1
        if batches == 0:
            raise ValueError("data: no batches; give at least one (inputs, targets) batch")
        yield
    finally:
        for p, g in zip(params, saved):
            p.grad = g


def _scores(tp: Any, model: nn.Module, importance: Any, groups: Mapping[str, tuple[GroupInfo, Any]],
            data: Iterable[Any] | None, loss_fn: Any) -> dict[str, np.ndarray]:
    """Per prunable group, one score per channel from the Torch-Pruning importance, scaled to sum to 1 overall."""
    context = _gradients(model, data, loss_fn) if data is not None else contextlib.nullcontext()
    raw: dict[str, np.ndarray] = {}
    with context:
        if _is_taylor(importance):
            for info, group in groups.values():
                for item in group:
                    m = item.dep.target.module
                    if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and m.weight.grad is None:
                        raise ValueError(f"importance: {type(importance).__name__} reads gradients, but "
                                         f"{info.root}'s group has a layer without .grad; give data= and loss_fn=, "
                                         "or call loss.backward() before building the spec")
        for info, group in groups.values():
            values = importance(group)
            if values is None:
                raise ValueError(f"importance: {type(importance).__name__} gave no scores for the group rooted at "
                                 f"{info.root}; use an importance that scores its layers, or pass "
                                 f"ignored_layers=[model.{info.root}]")
            arr = np.asarray(values.detach().double().cpu() if isinstance(values, torch.Tensor) else values,
                             dtype=np.float64)
            if arr.shape != (info.width,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValueError(f"importance: {type(importance).__name__} gave scores of shape {arr.shape} for the "
                                 f"group rooted at {info.root}; expected {info.width} finite scores >= 0 (use a "
                                 "normalizer that keeps scores non-negative, such as None, 'mean' or 'max')")
            raw[info.name] = arr
    total = float(sum(s.sum() for s in raw.values()))
    if not total > 0:
        raise ValueError("importance: every score is zero; with Taylor importance check that loss_fn's gradients "
                         "reach the layers")
    return {n: s / total for n, s in raw.items()}


def _workload(layer: LayerInfo, call: int, c_out: int, c_in: int) -> Workload:
    """The layer's `call`-th call at `c_out` output and `c_in` input channels: a stand-in with its MACs and
    parameters."""
    m = layer.module
    in_shape, out_shape = layer.calls[call]
    if isinstance(m, nn.modules.conv._ConvNd):
        groups = c_in if layer.depthwise else m.groups
        x_shape = (in_shape[0], c_in) + tuple(in_shape[2:])
        written = math.prod(out_shape) // out_shape[1] * c_out
        macs = written * (c_in // groups) * math.prod(m.kernel_size)
        params = c_out * (c_in // groups) * math.prod(m.kernel_size) + (c_out if m.bias is not None else 0)
        config = (f"{type(m).__name__}({c_in}, {c_out}, kernel_size={m.kernel_size}, stride={m.stride}, "
                  f"padding={m.padding}, dilation={m.dilation}, groups={groups}, bias={m.bias is not None}, "
                  f"padding_mode={m.padding_mode})")

        def make() -> nn.Module:
            return type(m)(c_in, c_out, m.kernel_size, m.stride, m.padding, m.dilation, groups, m.bias is not None,
                           m.padding_mode)
    else:
        x_shape = tuple(in_shape[:-1]) + (c_in,)
        written = math.prod(out_shape[:-1]) * c_out
        macs = written * c_in
        params = c_out * c_in + (c_out if m.bias is not None else 0)
        config = f"Linear({c_in}, {c_out}, bias={m.bias is not None})"

        def make() -> nn.Module:
            return nn.Linear(c_in, c_out, m.bias is not None)

    def setup(device: torch.device, dtype: torch.dtype) -> tuple[Callable[..., Any], list[torch.Tensor]]:
        module = evaluating(make().to(device=device, dtype=dtype))
        return module, [torch.randn(*x_shape, device=device, dtype=dtype)]

    return Workload(f"{config}|{[list(x_shape)]}|", macs, params, setup, written)


def _cost_terms(layers: Sequence[LayerInfo], params: Sequence[ParamInfo], choices: Mapping[str, tuple[int, ...]],
                costs: Sequence[str], latency: Any, example_input: torch.Tensor) -> dict[str, tuple[Term, ...]]:
    """Per resource: one table per layer over its dims (summed per dims), and the other parameters."""
    entries: list[tuple[LayerInfo, tuple[str, ...], tuple[int, ...], int]] = []   # layer, dims, shape, call
    workloads: list[Workload] = []
    for layer in layers:
        dims = layer.dims
        shape = tuple(len(choices[d]) for d in dims)
        if math.prod(shape) > MAX_TABLE:
            roots = ", ".join(f"model.{d}" for d in dims[1:])
            raise ValueError(f"ignored_layers: {layer.name} reads {len(dims)} pruned groups (a concatenation), a "
                             f"table of {math.prod(shape)} entries (over {MAX_TABLE}); raise step= or pass "
                             f"ignored_layers=[{roots}]")
        for call in range(len(layer.calls)):
            entries.append((layer, dims, shape, call))
            for combo in itertools.product(*(choices[d] for d in dims)):
                workloads.append(_workload(layer, call, *layer.widths(dict(zip(dims, combo)))))
    values: dict[str, np.ndarray] = {}
    for resource in costs:
        if resource == "flops" or (resource == "latency" and latency == "flops"):
            values[resource] = np.array([w.macs for w in workloads], dtype=np.float64)
        elif resource == "params":
            values[resource] = np.array([w.params for w in workloads], dtype=np.float64)
        elif resource == "activations":
            values[resource] = np.array([w.activations for w in workloads], dtype=np.float64)
        else:
            values[resource] = workload_latencies(workloads, latency, example_input)
    out: dict[str, tuple[Term, ...]] = {}
    for resource in costs:
        tables: dict[tuple[str, ...], Any] = {}
        at = 0
        for layer, dims, shape, call in entries:
            n = math.prod(shape)
            if resource != "params" or call == 0:
                tables[dims] = tables.get(dims, 0) + values[resource][at:at + n].reshape(shape)
            at += n
        if resource == "params":
            for p in params:
                dims = tuple(d for d, _ in p.dims)
                table = np.full(tuple(len(choices[d]) for d in dims), float(p.fixed))
                for index in itertools.product(*(range(len(choices[d])) for d in dims)):
                    table[index] += p.per_channel * sum(t * choices[d][i] for (d, t), i in zip(p.dims, index))
                tables[dims] = tables.get(dims, 0) + table
        out[resource] = tuple(Term(dims, np.asarray(table, dtype=np.float64)) for dims, table in tables.items())
    return out
