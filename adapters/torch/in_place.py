"""Slim the user's own model object in place, so that its optimizer, EMA copies and other references stay valid.

`handle.apply(result)` returns a new model. `prune_in_place(model, handle, result, optimizer)` changes `model`
itself to the same configuration, for every family, without per-family code:

1. the configuration (kept units of every dim, removed blocks) is applied by the family to a copy of the
   original model whose floating tensors hold their own flat indices (float64, exact up to 2^53; `Tags`), so
   each tensor of the slimmed copy says which elements of which original tensors it holds;
2. the real values (and any gradient and optimizer state of a parameter's shape: SGD's momentum, Adam's
   moments, ...) are gathered from the model's current tensors at those elements;
3. a surviving parameter keeps its identity (its `.data` is resized); a module `apply` replaces (a removed
   block, a `PrunedAttention`, ...) is replaced inside `model`; a removed parameter leaves the optimizer.

The model may already be a slimmed one: its tensors' elements are tracked as original elements (`Provenance`),
so a configuration that keeps a subset of what is left can be applied again (`IterativePruner` does that).
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mdp_opt import Result

from .apply import PruningHandle
from .checks import check_result_for

SIMPLE = (int, float, bool, str, type(None), torch.Size)


@dataclass(frozen=True)
class Configuration:
    """What a pruned model keeps: per dim of the ORIGINAL spec, the sorted original units kept (empty for a dim
    removed with its blocks), and the removed blocks. JSON-ready through `to_dict` / `from_dict`."""

    kept: Mapping[str, tuple[int, ...]]
    removed: tuple[str, ...] = ()

    @classmethod
    def full(cls, handle: PruningHandle) -> "Configuration":
        """The unpruned configuration of `handle`'s model."""
        return cls({n: tuple(range(d.width)) for n, d in handle.dims.items()}, ())

    @classmethod
    def of(cls, handle: PruningHandle, result: Result) -> "Configuration":
        """The configuration `handle.apply(result)` builds (units kept by decreasing importance)."""
        check_result_for(handle.spec, result, "build_spec")
        kept = {n: tuple(int(u) for u in np.sort(handle.orders[n][:k])) for n, k in result.kept.items()}
        return cls(kept, tuple(b for b, a in result.active.items() if not a))

    def widths(self) -> dict[str, int]:
        """Dim name -> kept count (0 for a dim removed with its blocks)."""
        return {n: len(u) for n, u in self.kept.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"kept": {n: list(u) for n, u in self.kept.items()}, "removed": list(self.removed)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Configuration":
        if not isinstance(data, Mapping) or set(data) != {"kept", "removed"}:
            raise ValueError("configuration: expected {'kept': {dim: [units]}, 'removed': [blocks]} "
                             "(Configuration.to_dict())")
        return cls({str(n): tuple(int(u) for u in units) for n, units in data["kept"].items()},
                   tuple(str(b) for b in data["removed"]))


def check_configuration(handle: PruningHandle, config: Configuration, what: str = "configuration") -> None:
    """Raise a ValueError naming the field unless `config` fits `handle`'s dims and blocks."""
    if not isinstance(config, Configuration):
        raise TypeError(f"{what}: expected a Configuration, got {type(config).__name__}")
    if set(config.kept) != set(handle.dims):
        missing = sorted(set(handle.dims) ^ set(config.kept))[:4]
        raise ValueError(f"{what}: its dims do not match this model's ({missing} differ); was it saved for "
                         "another model definition or other build options (ignore=, blocks=, heads=)?")
    for name, units in config.kept.items():
        width = handle.dims[name].width
        if any(not 0 <= u < width for u in units) or list(units) != sorted(set(units)):
            raise ValueError(f"{what}.kept[{name}]: expected sorted distinct units in [0, {width}), got {units[:8]}")
    unknown = set(config.removed) - set(handle.blocks)
    if unknown:
        raise ValueError(f"{what}.removed: {sorted(unknown)[:4]} are not blocks of this model")


def slimmed(handle: PruningHandle, model: nn.Module, config: Configuration) -> nn.Module:
    """The family's slimmed copy of `model` (the original definition, or a tagged copy of it) for `config`."""
    kept = {n: torch.as_tensor(units, dtype=torch.long) for n, units in config.kept.items()
            if 0 < len(units) < handle.dims[n].width}
    removed = [g for g in handle.gates if g.name in config.removed]
    return handle.family.apply(model, handle.structure, kept, removed)


# ---- tagging --------------------------------------------------------------------------------------------------
def _tensors(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor, bool]]:
    """(qualified name, owner module, attribute, tensor, is parameter) for every parameter and buffer."""
    for mname, module in model.named_modules(remove_duplicate=False):
        for kind, table in ((True, module._parameters), (False, module._buffers)):
            for attr, t in table.items():
                if t is not None:
                    yield (f"{mname}.{attr}" if mname else attr), module, attr, t, kind


class Tags:
    """A copy of the original model whose floating tensors hold 1 + their global flat index (float64, on the
    CPU), and where each original tensor's elements start (`offsets`, by qualified name)."""

    def __init__(self, model: nn.Module) -> None:
        memo: dict[int, Any] = {}
        self.offsets: dict[str, int] = {}
        self.shapes: dict[str, torch.Size] = {}
        start = 0
        for name, _, _, t, is_param in _tensors(model):
            if id(t) in memo or not t.is_floating_point():
                continue
            n = t.numel()
            if start + n + 1 > 2 ** 53:
                raise ValueError("model: more than 2^53 elements, too many to track exactly")
            tags = torch.arange(start + 1, start + n + 1, dtype=torch.float64).reshape(t.shape)
            memo[id(t)] = nn.Parameter(tags, requires_grad=t.requires_grad) if is_param else tags
            self.offsets[name] = start
            self.shapes[name] = t.shape
            start += n
        self.total = start
        self.model = copy.deepcopy(model, memo)
        self.integers = {name: t.clone() for name, _, _, t, _ in _tensors(self.model) if not t.is_floating_point()}

    def provenance(self) -> dict[str, torch.Tensor]:
        """Name -> global original indices of each floating tensor of the unpruned model."""
        return {n: torch.arange(o, o + int(np.prod(self.shapes[n], dtype=np.int64))).reshape(self.shapes[n])
                for n, o in self.offsets.items()}

    def decode(self, small: nn.Module) -> dict[str, torch.Tensor]:
        """Name -> global original indices of every floating tensor of a slimmed tagged copy."""
        out: dict[str, torch.Tensor] = {}
        for name, _, _, t, _ in _tensors(small):
            if not t.is_floating_point() or name in out:
                continue
            v = t.detach().double().cpu()
            idx = torch.round(v)
            if not bool(torch.all((idx == v) & (idx >= 1) & (idx <= self.total))):
                raise NotImplementedError(
                    f"{name}: the family computed this tensor from the model's values (not a selection of them), "
                    "so its elements cannot be tracked for in-place pruning; use handle.apply(result) instead")
            out[name] = idx.long() - 1
        return out


# ---- the in-place change ----------------------------------------------------------------------------------------
@dataclass
class InPlaceReport:
    """What `prune_in_place` changed: modules replaced in the model, parameters resized in place (same objects),
    new parameters (in replaced modules) and parameters gone; names are qualified names in the model."""

    replaced_modules: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    new_parameters: list[str] = field(default_factory=list)
    removed_parameters: list[str] = field(default_factory=list)


class _Sources:
    """Where each original element lives now: (tensor, flat position) in the current model."""

    def __init__(self, current: Mapping[str, torch.Tensor], provenance: Mapping[str, torch.Tensor]) -> None:
        self.names = [n for n in provenance if n in current]
        self.tensors = [current[n] for n in self.names]
        if not self.names:
            self.order = self.owner = self.pos = torch.zeros(0, dtype=torch.long)
            return
        flat = [provenance[n].reshape(-1) for n in self.names]
        for n, f, t in zip(self.names, flat, self.tensors):
            if f.numel() != t.numel():
                raise ValueError(f"model: {n} has {t.numel()} elements but the pruning record says {f.numel()}; "
                                 "was the model changed outside the pruner?")
        orig = torch.cat(flat)
        owner = torch.cat([torch.full((len(f),), i, dtype=torch.long) for i, f in enumerate(flat)])
        pos = torch.cat([torch.arange(len(f)) for f in flat])
        self.order, perm = torch.sort(orig)
        self.owner, self.pos = owner[perm], pos[perm]

    def locate(self, name: str, wanted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = wanted.reshape(-1)
        k = torch.searchsorted(self.order, flat).clamp_max(max(len(self.order) - 1, 0))
        if len(self.order) == 0 or not bool(torch.all(self.order[k] == flat)):
            raise ValueError(f"{name}: the new configuration keeps elements the model no longer has; a later "
                             "configuration must keep a subset of the current one")
        return self.owner[k], self.pos[k]

    def gather(self, owner: torch.Tensor, pos: torch.Tensor, shape: torch.Size,
               values: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
        """Elements (owner, pos) of `values` (one tensor per source, or None where missing) in `shape`."""
        used = torch.unique(owner).tolist()
        if any(values[o] is None for o in used):
            return None
        first = values[used[0]]
        out = torch.empty(len(owner), dtype=first.dtype, device=first.device)
        for o in used:
            mask = owner == o
            src = values[o].reshape(-1)
            out[mask.to(out.device)] = src[pos[mask].to(src.device)]
        return out.reshape(shape)


def _state_gather(sources: _Sources, owner: torch.Tensor, pos: torch.Tensor, shape: torch.Size,
                  states: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Optimizer state of a new or resized parameter: every state tensor shaped like its sources gathered,
    the rest (a step count) taken from the first source."""
    used = torch.unique(owner).tolist()
    if any(not states[o] for o in used):
        return None
    first = states[used[0]]
    out: dict[str, Any] = {}
    for key, value in first.items():
        shaped = [isinstance(states[o].get(key), torch.Tensor) and states[o][key].shape == sources.tensors[o].shape
                  for o in used]
        if all(shaped):
            out[key] = sources.gather(owner, pos, shape,
                                      [states[o][key] if o in used else None for o in range(len(states))])
        elif any(shaped):
            return None
        else:
            out[key] = value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
    return out


def install(model: nn.Module, small: nn.Module, tags: Tags, provenance: Mapping[str, torch.Tensor],
            optimizer: torch.optim.Optimizer | None = None) -> tuple[dict[str, torch.Tensor], InPlaceReport]:
    """Make `model` (whose tensors hold the original elements `provenance`) the slimmed tagged copy `small`, in
    place; returns the new provenance and what changed. See the module docstring."""
    new_prov = tags.decode(small)
    current = {name: t for name, _, _, t, _ in _tensors(model)}
    sources = _Sources(current, provenance)
    params_now = dict(model.named_parameters(remove_duplicate=False))
    index_of = {n: i for i, n in enumerate(sources.names)}
    states = [optimizer.state.get(t) if optimizer is not None and isinstance(t, nn.Parameter) else None
              for t in sources.tensors]
    report = InPlaceReport()

    # 1. everything gathered before anything changes
    values: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor | None] = {}
    opt_state: dict[str, dict[str, Any] | None] = {}
    located: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, idx in new_prov.items():
        owner, pos = sources.locate(name, idx)
        located[name] = (owner, pos)
        values[name] = sources.gather(owner, pos, idx.shape, [t.detach() for t in sources.tensors])
        grads[name] = sources.gather(owner, pos, idx.shape, [getattr(t, "grad", None) for t in sources.tensors])
        opt_state[name] = _state_gather(sources, owner, pos, idx.shape, states)

    def same_source(name: str) -> bool:
        owner = located[name][0]
        return name in index_of and bool(torch.all(owner == index_of[name]))

    # 2. modules: replace the ones whose type changed, update the others' tensors and simple attributes
    replaced: list[str] = []
    new_params: dict[str, nn.Parameter] = {}
    kept_params: dict[str, nn.Parameter] = {}

    def real(name: str, t: torch.Tensor, like: torch.Tensor | None) -> torch.Tensor:
        if name in values:
            return values[name]
        if not t.is_floating_point() and name in tags.integers and like is not None \
                and tags.integers[name].shape == t.shape and torch.equal(tags.integers[name], t.cpu()):
            return like         # an integer buffer apply left alone (a step counter): the model's own
        device = like.device if like is not None else next((v.device for v in values.values()), t.device)
        return t.detach().clone().to(device)

    for mname, sm in small.named_modules():
        if any(mname == r or mname.startswith(r + ".") for r in replaced):
            continue
        try:
            um = model.get_submodule(mname)
        except AttributeError:
            um = None
        if um is None or type(um) is not type(sm):
            if mname == "":
                raise ValueError("model: the whole model would be replaced; use handle.apply(result)")
            for sub, m in sm.named_modules():
                full = f"{mname}.{sub}" if sub else mname
                for attr, t in list(m._parameters.items()):
                    if t is not None:
                        name = f"{full}.{attr}"
                        m._parameters[attr] = nn.Parameter(real(name, t, None), requires_grad=t.requires_grad)
                        new_params[name] = m._parameters[attr]
                for attr, t in list(m._buffers.items()):
                    if t is not None:
                        m._buffers[attr] = real(f"{full}.{attr}", t, current.get(f"{full}.{attr}"))
            if um is not None:
                sm.train(um.training)
            model.set_submodule(mname, sm)
            replaced.append(mname)
            continue
        for key, value in vars(sm).items():
            if not key.startswith("_") and key != "training" and _simple(value):
                setattr(um, key, value)
        for attr in set(um._parameters) - set(sm._parameters):
            um._parameters.pop(attr)
        for attr in set(um._buffers) - set(sm._buffers):
            um._buffers.pop(attr)
        for attr in set(um._modules) - set(sm._modules):
            um._modules.pop(attr)
        for attr, t in sm._parameters.items():
            name = f"{mname}.{attr}" if mname else attr
            if t is None:
                um._parameters[attr] = None
                continue
            old = um._parameters.get(attr)
            if isinstance(old, nn.Parameter) and name in values and same_source(name):
                pos = located[name][1]
                if old.shape != values[name].shape or not torch.equal(pos, torch.arange(len(pos))):
                    _resize(old, values[name])
                    report.resized.append(name)
                kept_params[name] = old
            else:
                um._parameters[attr] = nn.Parameter(real(name, t, None), requires_grad=t.requires_grad)
                new_params[name] = um._parameters[attr]
        for attr, t in sm._buffers.items():
            name = f"{mname}.{attr}" if mname else attr
            old = um._buffers.get(attr)
            um._buffers[attr] = None if t is None else real(name, t, old)
    report.replaced_modules = replaced

    # 3. gradients of the new shapes, and the optimizer
    for name, p in {**kept_params, **new_params}.items():
        if name in grads:
            p.grad = grads[name]
    alive = {id(p) for p in model.parameters()}
    report.new_parameters = sorted(new_params)
    report.removed_parameters = sorted(n for n, p in params_now.items() if id(p) not in alive)
    if optimizer is not None:
        _update_optimizer(optimizer, sources, located, {**kept_params, **new_params}, opt_state, alive,
                          {id(p) for p in params_now.values()})
    return new_prov, report


def _resize(p: nn.Parameter, value: torch.Tensor) -> None:
    """Give `p` (the same Python object) `value` as its data, and a fresh autograd identity: a graph still alive
    from the last iteration (the loss a training loop holds) keeps the old gradient accumulator, whose shape
    would be checked against the new one's gradients. `.data` assignment keeps that accumulator, so the tensors
    are swapped instead (`torch.utils.swap_tensors`), which leaves it with the old tensor. When other references
    to the tensor forbid the swap (a DistributedDataParallel reducer, weak references, views), `.data` is set
    twice, first to another dtype: autograd then forgets the old accumulator (the reducer holds it alive), and the
    next backward pass (or the next DistributedDataParallel wrapper) makes one of the new shape."""
    fresh = nn.Parameter(value, requires_grad=p.requires_grad)
    try:
        torch.utils.swap_tensors(p, fresh)
    except RuntimeError:
        p.grad = None
        other = torch.float32 if value.dtype == torch.float64 else torch.float64
        p.data = torch.empty(0, dtype=other, device=value.device)
        p.data = value
        return
    # the Python object keeps its hook dicts, but the autograd side of the hooks stayed with the old tensor:
    # setting the dicts again registers them on the new one (handles to them stay valid)
    for attr in ("_backward_hooks", "_post_accumulate_grad_hooks"):
        hooks = getattr(p, attr, None)
        if hooks is not None:
            setattr(p, attr, hooks)


def _update_optimizer(optimizer: torch.optim.Optimizer, sources: _Sources,
                      located: Mapping[str, tuple[torch.Tensor, torch.Tensor]], params: Mapping[str, nn.Parameter],
                      opt_state: Mapping[str, dict[str, Any] | None], alive: set[int], before: set[int]) -> None:
    """Each group keeps its surviving parameters; a parameter built from others takes the place of its first
    source in that source's group; a removed one leaves. State is the gathered state (fresh when a source had
    none)."""
    first_source: dict[int, list[str]] = {}
    for name, p in params.items():
        owner = located[name][0]
        if len(owner):
            first_source.setdefault(id(sources.tensors[int(owner[0])]), []).append(name)
    placed: set[str] = set()
    for group in optimizer.param_groups:
        kept = []
        for p in group["params"]:
            if id(p) not in before:
                kept.append(p)          # not the model's: left alone
                continue
            for name in first_source.get(id(p), ()):
                q = params[name]
                if name not in placed and all(q is not other for other in kept):
                    kept.append(q)
                    placed.add(name)
            if id(p) not in alive or all(p is not q for q in kept):
                optimizer.state.pop(p, None)
        group["params"] = kept
    for name in placed:
        q = params[name]
        optimizer.state.pop(q, None)
        if opt_state.get(name):
            optimizer.state[q] = opt_state[name]


def _simple(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_simple(v) for v in value)
    return isinstance(value, SIMPLE)


# ---- the one-shot API -----------------------------------------------------------------------------------------
_PRUNED: "weakref.WeakKeyDictionary[nn.Module, Configuration]" = weakref.WeakKeyDictionary()


def prune_in_place(model: nn.Module, handle: PruningHandle, result: Result | Configuration,
                   optimizer: torch.optim.Optimizer | None = None) -> InPlaceReport:
    """Slim `model` itself to the configuration `handle.apply(result)` builds.

    `handle` comes from `build_spec(model, ...)` on this (unpruned) model; `result` is a solved `Result` of its
    spec (or a `Configuration`). Surviving parameters keep their identity (their data are resized); modules
    `apply` replaces (removed blocks, `PrunedAttention`) are replaced inside `model`; BatchNorm statistics and
    every buffer follow. With `optimizer`, each surviving parameter's state (momentum, Adam moments: every state
    tensor of its shape) is sliced to the kept elements, a new parameter gets its sources' state, and removed
    parameters leave the optimizer. Wrappers holding the old parameters (DistributedDataParallel, EMA copies,
    hooks on removed modules) must be rebuilt afterwards. To prune again, use `IterativePruner`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(handle, PruningHandle):
        raise TypeError(f"handle: expected the PruningHandle build_spec returned, got {type(handle).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if model in _PRUNED:
        raise ValueError("model: already pruned in place; its handle describes the model before that. To prune "
                         "again, build a new spec on it, or prune in steps with IterativePruner")
    config = result if isinstance(result, Configuration) else Configuration.of(handle, result)
    check_configuration(handle, config, "result")
    shapes = {n: p.shape for n, p in handle.model.named_parameters()}
    if handle.model is not model and shapes != {n: p.shape for n, p in model.named_parameters()}:
        raise ValueError("model: its parameters differ from the model the handle was built on; pass that model")
    tags = Tags(model)
    _, report = install(model, slimmed(handle, tags.model, config), tags, tags.provenance(), optimizer)
    _PRUNED[model] = config
    return report


class _Found:
    """What `slimmed` needs of a handle: the family, structure, blocks and dims of the original model."""

    def __init__(self, family: Any, structure: Any, gates: Sequence[Any]) -> None:
        self.family, self.structure, self.gates = family, structure, list(gates)
        self.dims = {d.name: d for d in structure.dims}
        self.blocks = [g.name for g in gates]


def rebuild(model: nn.Module, example_input: torch.Tensor, configuration: Configuration | Mapping[str, Any], *,
            ignore: Sequence[nn.Module] = (), blocks: str | Sequence[nn.Module] | None = "auto",
            heads: Mapping[nn.Module, int] | None = None, family: str | None = None) -> nn.Module:
    """A new model with the structure of a pruned one: the original definition `model` (freshly constructed, any
    weights) slimmed to `configuration` (`IterativePruner.configuration`, or its `to_dict()`), ready for
    `load_state_dict` of the pruned weights. `ignore`, `blocks`, `heads` and `family` must be the ones the
    configuration was found with (they decide the dims and blocks). `model` itself is left unmodified."""
    from .families import recognise
    from .spec_builder import heads_by_name
    from .structure import Options, module_names

    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input: expected a tensor (one input batch), got {type(example_input).__name__}")
    config = configuration if isinstance(configuration, Configuration) else Configuration.from_dict(configuration)
    options = Options(ignore=tuple(module_names(model, ignore, "ignore")), heads=heads_by_name(model, heads))
    fam, structure = recognise(model, example_input, options, family)
    found = _Found(fam, structure, fam.blocks(model, structure, blocks))
    for name, d in found.dims.items():
        if name in config.kept and config.kept[name] and config.kept[name][-1] >= d.width:
            raise ValueError(f"configuration.kept[{name}]: units up to {config.kept[name][-1]}, but this model's "
                             f"{name} has {d.width}; pass the original (unpruned) model definition")
    check_configuration(found, config)   # type: ignore[arg-type]
    return slimmed(found, model, config)  # type: ignore[arg-type]
