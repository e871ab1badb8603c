"""Model families: each recognises a kind of model and turns it into a `Structure`.

The protocol a family implements (`Family`):

    find(model, example_input, options) -> Structure | Declined   # recognise, or decline with a reason
    dims(structure)                     -> the prunable widths (DimInfo), coupled and named
    blocks(structure, option)           -> removable units (residual blocks, attention/MLP halves)
    cost_parts(structure, op, sizes)    -> per-operation workloads for latency / flops / params tables
    apply(model, structure, kept, gates)-> a new, physically smaller model

`build_spec` tries the registered families in order and the first that recognises the
model wins; when none does, the error lists what each declined and why. A family that
recognises a model but meets a part it cannot slim raises `UnsupportedModelError` naming
the module (it does not decline: another family would give the wrong error).

The two built-in families share one engine (`GraphFamily`): one traced forward pass
(`trace`) gives coupled channel dims, including concatenations (a consumer reads several
dims) and per-channel parameters outside layers (layer scale, tokens), which follow their
channels. `TransformerFamily` adds attention sites (heads and channels per head, found
from the weights and the forward pass) and transformer names for dims ("embed",
"<block>.mlp_hidden", "<block>.heads"); it handles ViTs, hierarchical transformers and
hybrids. `ConvFamily` is everything else. A new family subclasses `GraphFamily` (to add
a kind of site, say a detection head) or implements the protocol from scratch, and is
registered with `register_family`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
from torch import nn

from .attention import REPLACE, SiteHandler
from .attention_find import find_sites
from .blocks import Gate, choose_gates, find_residual_blocks
from .handlers import (CHANNELWISE, DEFAULT_HANDLER, FUNCTION, OpaqueHandler, Sizes, UnsupportedModelError, Workload,
                       handler_for_module)
from .layout import fixed
from .modules import RemovedBranch, SkippedBlock
from .slicing import common_prefix, kept_positions, set_submodule, slice_slots
from .structure import DimInfo, Options, Structure
from .trace import OpRecord, Trace, record

CostPart = tuple[tuple[str, ...], Callable[[Sizes], Workload]]


@dataclass(frozen=True)
class Declined:
    """A family's answer when the model is not one of its kind."""

    reason: str


class Family(Protocol):
    name: str

    def find(self, model: nn.Module, example_input: torch.Tensor, options: Options) -> Structure | Declined: ...

    def dims(self, structure: Structure) -> list[DimInfo]: ...

    def blocks(self, model: nn.Module, structure: Structure, option: Any) -> list[Gate]: ...

    def cost_parts(self, structure: Structure, op: OpRecord, sizes: Sizes) -> list[CostPart]: ...

    def apply(self, model: nn.Module, structure: Structure, kept: Mapping[str, torch.Tensor],
              removed: Sequence[Gate]) -> nn.Module: ...


class GraphFamily:
    """The shared engine: a traced forward pass, optionally with attention sites (see `sites`)."""

    name = "graph"

    # ---- recognising -----------------------------------------------------------------------------
    def sites(self, model: nn.Module, example_input: torch.Tensor, options: Options) -> list[SiteHandler] | Declined:
        return []

    def find(self, model: nn.Module, example_input: torch.Tensor, options: Options) -> Structure | Declined:
        found = self.sites(model, example_input, options)
        if isinstance(found, Declined):
            return found
        handlers = {h.site.name: h for h in found}
        opaque = OpaqueHandler()
        ignored = set(options.ignore)

        def atomic(name: str, module: nn.Module) -> Any:
            if name in handlers:
                return handlers[name]
            handler = handler_for_module(module)
            if name in ignored and handler in (DEFAULT_HANDLER, CHANNELWISE):
                return opaque          # a layer without rules the user keeps as it is
            return handler

        trace = record(model, example_input, atomic, FUNCTION)
        dims, dim_of = self.name_dims(trace, handlers)
        return Structure(self.name, trace, dims, dim_of, handlers, find_residual_blocks(trace))

    def name_dims(self, trace: Trace, sites: Mapping[str, SiteHandler]) -> tuple[list[DimInfo], dict[int, str]]:
        """One dim per merged space, named after the layer that made it (a site's: `<site>.<kind>`)."""
        spaces = trace.spaces
        layers: dict[int, list[str]] = {}
        for op in trace.ops:
            if op.module is not None and op.first_call and op.output.layout is not None:
                for seg in op.output.layout:
                    if seg.space is not None:
                        names = layers.setdefault(spaces.find(seg.space), [])
                        if op.name not in names:
                            names.append(op.name)
        site_of = {h.spaces[k]: (name, k) for name, h in sites.items() for k in h.spaces}
        dims, dim_of, taken = [], {}, set()
        for root in spaces.roots():
            kind = spaces.kind[root]
            name = spaces.origin[root] if kind == "channels" else f"{spaces.origin[root]}.{kind}"
            while name in taken:
                name += "'"
            taken.add(name)
            site = site_of.get(root, (None, None))[0]
            dims.append(DimInfo(name, spaces.width[root], kind, root, spaces.pinned(root), site,
                                tuple(layers.get(root, ()))))
            dim_of[root] = name
        return dims, dim_of

    def dims(self, structure: Structure) -> list[DimInfo]:
        return structure.dims

    def blocks(self, model: nn.Module, structure: Structure, option: Any) -> list[Gate]:
        return choose_gates(model, structure.residual, option)

    # ---- costs -----------------------------------------------------------------------------------
    def cost_parts(self, structure: Structure, op: OpRecord, sizes: Sizes) -> list[CostPart]:
        handler = op.handler
        if isinstance(handler, SiteHandler):
            return handler.parts(op, sizes)
        return [(handler.labels(op, sizes), lambda s, op=op, h=handler: h.workload(op, s))]

    # ---- slimming --------------------------------------------------------------------------------
    def apply(self, model: nn.Module, structure: Structure, kept: Mapping[str, torch.Tensor],
              removed: Sequence[Gate]) -> nn.Module:
        """A deep copy of `model` with removed blocks gone, attention sites slimmed and every dim cut to its kept
        units (`kept`: dim name -> sorted unit indices; dims not given keep everything)."""
        small = copy.deepcopy(model)
        spaces, dim_of = structure.spaces, structure.dim_of
        gone: list[str] = []
        for gate in removed:
            if gate.branch is None:
                set_submodule(small, gate.name, nn.Identity() if gate.returns == "tensor" else SkippedBlock(gate.returns))
            else:
                set_submodule(small, gate.branch.module, RemovedBranch(gate.branch.returns))
                if gate.branch.norm is not None:
                    set_submodule(small, gate.branch.norm, nn.Identity())
                    gone.append(gate.branch.norm)
            gone.append(gate.name)

        def present(name: str) -> bool:
            return not any(name == g or name.startswith(g + ".") for g in gone)

        replaced = []
        ops = {op.name: op for op in structure.trace.ops if op.module is not None and op.first_call}
        for name, handler in structure.sites.items():
            if not present(name):
                continue
            op, site = ops[name], handler.site
            keep = {k: kept.get(dim_of[spaces.find(handler.spaces[k])], torch.arange(site.width(k)))
                    for k in site.kinds}
            if site.mode == REPLACE:
                e_in = kept_positions(op.inputs[0].layout or fixed(site.in_width), kept, spaces, dim_of)
                e_out = kept_positions(op.output.layout or fixed(site.out_width), kept, spaces, dim_of)
                new = site.replacement(model, keep, torch.arange(site.in_width) if e_in is None else e_in,
                                       torch.arange(site.out_width) if e_out is None else e_out)
                set_submodule(small, name, new)
                replaced.append(name)
            else:
                site.slice_in_place(small.get_submodule(name), keep)

        def outside_replaced(owner: str) -> bool:
            return not any(owner == r or owner.startswith(r + ".") for r in replaced)

        slice_slots(small, [s for s in structure.trace.slots if outside_replaced(s.owner)], kept, spaces, dim_of)
        sizes = structure.sizes({name: len(units) for name, units in kept.items()})
        modules = dict(small.named_modules())
        for name, op in ops.items():
            if not present(name) or name not in modules or name in replaced:
                continue
            if isinstance(op.handler, SiteHandler):
                _finish_in_place(modules[name], op.handler)
            else:
                op.handler.resize(modules[name], op, sizes)
        for owner, attr, layout in structure.trace.width_attributes:
            if present(owner) and owner in modules:
                setattr(modules[owner], attr, sizes.width(layout))
        original = dict(model.named_modules())
        for n, m in small.named_modules():
            if n in original:
                m.training = original[n].training
        return small


def _finish_in_place(module: nn.Module, handler: SiteHandler) -> None:
    """Input and output widths of an in-place site's projections, after the embedding slots were sliced."""
    site = handler.site
    prefix = site.name + "."
    for which in ("q", "k", "v", "o"):
        lin = module.get_submodule(getattr(site, which).module[len(prefix):])
        lin.out_features, lin.in_features = lin.weight.shape


class ConvFamily(GraphFamily):
    """Convolutional and MLP models (and any model whose attention, if any, is kept as it is)."""

    name = "cnn"


class TransformerFamily(GraphFamily):
    """Models with attention: ViT/DeiT (fused qkv, nn.MultiheadAttention, separate q/k/v), hierarchical
    transformers (Swin: window attention, relative position tables, patch merging) and hybrids."""

    name = "transformer"

    def sites(self, model: nn.Module, example_input: torch.Tensor, options: Options) -> list[SiteHandler] | Declined:
        found, cores = find_sites(model, example_input, options.heads, set(options.ignore))
        if not found:
            return Declined("no attention in the forward pass (no softmax over products of activations, no "
                            "scaled_dot_product_attention, no nn.MultiheadAttention)" if not cores else
                            "every attention is kept as it is (ignore=)")
        return [SiteHandler(s, model) for s in found]

    def name_dims(self, trace: Trace, sites: Mapping[str, SiteHandler]) -> tuple[list[DimInfo], dict[int, str]]:
        dims, dim_of = super().name_dims(trace, sites)
        spaces = trace.spaces
        parent = {name: name.rpartition(".")[0] for name in sites}
        per_parent: dict[str, int] = {}
        for p in parent.values():
            per_parent[p] = per_parent.get(p, 0) + 1
        prefix = {name: (p if p and per_parent[p] == 1 else name) for name, p in parent.items()}
        by_root = {d.space: d for d in dims}
        names: dict[int, str] = {}
        stream: dict[int, list[str]] = {}
        ops = {op.name: op for op in trace.ops if op.module is not None}
        for name, handler in sites.items():
            for kind, space in handler.spaces.items():
                names[spaces.find(space)] = f"{prefix[name]}.{kind}"
            op = ops.get(name)
            for layout in (op.inputs[0].layout, op.output.layout) if op is not None else ():
                for seg in layout or ():
                    if seg.space is not None:
                        owners = stream.setdefault(spaces.find(seg.space), [])
                        if prefix[name] not in owners:
                            owners.append(prefix[name])
        for root, owners in stream.items():
            common = common_prefix(owners) if len(stream) > 1 else ""
            names[root] = f"{common}.embed" if common else "embed"
            by_root[root].kind = "embed"
        blocks = set(prefix.values())
        hidden: dict[str, list[int]] = {}
        for d in dims:
            if d.space in names or d.kind != "channels" or not d.layers:
                continue
            home = next((b for b in blocks if d.layers[0].startswith(b + ".")), None)
            if home is not None:
                hidden.setdefault(home, []).append(d.space)
        for home, roots in hidden.items():
            if len(roots) == 1:
                names[roots[0]] = f"{home}.mlp_hidden"
                by_root[roots[0]].kind = "mlp_hidden"
        if len(set(names.values())) != len(names) or set(names.values()) & {d.name for d in dims
                                                                           if d.space not in names}:
            return dims, dim_of          # keep the layer names rather than make two dims share a name
        for d in dims:
            if d.space in names:
                d.name = names[d.space]
                dim_of[d.space] = d.name
        return dims, dim_of


FAMILIES: list[Family] = [TransformerFamily(), ConvFamily()]


def register_family(family: Family, before: str | None = None) -> None:
    """Try `family` before the family named `before` (default: before every built-in family)."""
    for method in ("find", "dims", "blocks", "cost_parts", "apply"):
        if not callable(getattr(family, method, None)):
            raise TypeError(f"family: {type(family).__name__} has no {method}(); see mdp_opt.adapters.torch.families")
    names = [f.name for f in FAMILIES]
    at = names.index(before) if before in names else 0
    FAMILIES[:] = [f for f in FAMILIES if f.name != family.name]
    FAMILIES.insert(min(at, len(FAMILIES)), family)


def recognise(model: nn.Module, example_input: torch.Tensor, options: Options, family: str | None = None
              ) -> tuple[Family, Structure]:
    """The first family (or the one named) that recognises the model, and what it found."""
    candidates = [f for f in FAMILIES if family is None or f.name == family]
    if not candidates:
        raise ValueError(f"family: expected one of {[f.name for f in FAMILIES]}, got {family!r}")
    declined = []
    for f in candidates:
        try:
            found = f.find(model, example_input, options)
        except (UnsupportedModelError, ValueError, TypeError):
            raise
        except Exception as error:      # an architecture the family's rules did not foresee
            raise UnsupportedModelError(
                f"model: the {f.name} family failed while reading it ({type(error).__name__}: {error}); this is a "
                "gap in mdp-opt's rules for this architecture (please report it with the model); meanwhile keep "
                "the module named in the traceback as it is with ignore=[module], or force another family with "
                "family=") from error
        if isinstance(found, Structure):
            return f, found
        declined.append(f"{f.name}: {found.reason}")
    raise UnsupportedModelError("model: no family recognises it; " + "; ".join(declined))

