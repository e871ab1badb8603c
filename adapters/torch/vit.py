"""Vision transformers: heads, q/k dim, v dim, MLP hidden and embedding dims, removable sub-blocks.

    from mdp_opt.adapters.torch import build_vit_spec
    spec, handle = build_vit_spec(model, example_input, data=batches, loss_fn=loss, latency="measure",
                                  costs=("latency", "params"), step=16, head_dim_step=8)
    small = handle.apply(mdp_opt.solve(spec, budget="50%"))

The spec has one global dim `embed` (the residual stream, coupled through the patch
embedding, class/position tokens, every norm and residual add, and the head) and per
block `<block>.heads`, `<block>.qk_dim` and `<block>.v_dim` (per head; every head keeps
the same channels) and `<block>.mlp_hidden`. Blocks are `<block>.attn` and `<block>.mlp`
(`blocks="auto"`), whole transformer blocks `<block>` (`blocks="whole"`), the modules
listed, or none. See `vit_structure` for which models are recognised, `vit_costs` for
the cost terms, `vit_importance` for the scores and `vit_modules` for what `apply`
builds (attention modules are replaced by `PrunedAttention`).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO, Union

import numpy as np
import torch
from torch import nn

from mdp_opt.result import Result
from mdp_opt.spec import Dim, Spec, Term

from .checks import calibrate_if_measured, calibration_costs, check_build_arguments, check_result_for
from .importance import DimImportance, normalized, objective_terms
from .importance_check import scores_by_halves, with_importance_check
from .latency import MeasuredLatency
from .vit_costs import Grid, block_tables, block_workload, outside_tables, outside_workload, removed_everywhere
from .vit_importance import OUTSIDE, given_scores, taylor_scores
from .vit_modules import PrunedAttention, PrunedBlock
from .vit_slim import BlockKeep, keep_all, slim_block, slim_model
from .vit_structure import EMBED_ATTRIBUTES, BlockSite, ViTStructure, find_vit

KINDS = {"heads": "heads", "qk": "qk_dim", "v": "v_dim", "hidden": "mlp_hidden"}
PART_OF = {"heads": "attn", "qk": "attn", "v": "attn", "hidden": "mlp"}
DimKey = tuple[str, str]          # (block name, kind) or (OUTSIDE, "embed")
LatencyArg = Union[str, MeasuredLatency, Callable[[Any], float]]


def dim_name(key: DimKey) -> str:
    return "embed" if key == (OUTSIDE, "embed") else f"{key[0]}.{KINDS[key[1]]}"


def _unit_name(key: DimKey) -> str:
    """A scored unit's name: its dim, or the embedding share of a sub-block ("<block>.embed_attn")."""
    return dim_name(key) if key == (OUTSIDE, "embed") or key[1] in KINDS else f"{key[0]}.{key[1]}"


def build_vit_spec(model: nn.Module, example_input: torch.Tensor, *, data: Iterable[Any] | None = None,
                   loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
                   importance: Mapping[str, Any] | None = None, latency: LatencyArg = "measure",
                   costs: Sequence[str] = ("latency",), step: int = 8, mlp_step: int | None = None, head_step: int = 1,
                   head_dim_step: int | None = None, min_channels: int | float = 1, ignore: Sequence[nn.Module] = (),
                   blocks: str | Sequence[nn.Module] | None = "auto", name: str | None = None
                   ) -> tuple[Spec, "ViTPruningHandle"]:
    """Turn a vision transformer into a pruning spec and a handle that applies a solution.

    Args (as `build_spec`, plus):
        data, loss_fn: Taylor importance, scaled so the unpruned model is worth 1; or
        importance: {dim name: per-unit scores} instead of data/loss_fn (heads: one per head,
            q/k and v dims: one per channel of a head, embed and mlp_hidden: one per channel).
        latency: "measure" (calibrated against whole models, see `MeasuredLatency`), a `MeasuredLatency`,
            "flops" (multiply-accumulates as the latency),
            or a callable `fn(workload) -> cost` called once per part and width choice.
        step: granularity of the embedding width; `mlp_step` (default `step`) of the MLP hidden
            width; `head_step` of the head count; `head_dim_step` (default `step`) of the q/k and
            v dims per head. Kept counts are multiples of the granularity or the full width, never 0.
        min_channels: fewest embedding / MLP channels kept: a count or a fraction in (0, 1).
        ignore: modules whose widths stay: an attention (its heads and head dims), an MLP or
            one of its Linears (its hidden width), a transformer block (all four), or a layer
            outside the blocks (the embedding).
        blocks: "auto" (attention and MLP sub-blocks removable), "whole" (transformer blocks),
            a list of blocks / attention modules / MLP modules, or None.
    """
    check_build_arguments(model, example_input, data, loss_fn, importance, latency, costs,
                          "{dim name: per-unit scores}")
    if isinstance(latency, str) and latency == "measure":
        latency = MeasuredLatency()
    mlp_step = step if mlp_step is None else mlp_step
    head_dim_step = step if head_dim_step is None else head_dim_step
    for label, value in (("step", step), ("mlp_step", mlp_step), ("head_step", head_step),
                         ("head_dim_step", head_dim_step)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label}: expected a positive integer granularity, got {value!r}")
    structure = find_vit(model, example_input, _reconstruct)
    gates = _gates(model, structure, blocks)
    pinned = _pinned(model, structure, ignore)
    minimum = _minimum(min_channels)
    choices = _all_choices(structure, pinned, step, mlp_step, head_step, head_dim_step, minimum)
    names = {key: dim_name(key) for key in choices}

    scoring = None
    if importance is not None:
        scores = given_scores(structure, importance, names)
    else:
        scoring = scores_by_halves(lambda batches: taylor_scores(model, structure, batches, loss_fn), data)
        scores = normalized(scoring.totals)
    imps = _dim_importances(structure, scores, gates)
    objective = [t for key, imp in imps.items() for t in objective_terms(names[key], choices[key], imp)]

    cost_terms = _cost_terms(model, structure, choices, names, gates, calibration_costs(costs, latency), latency,
                             example_input)
    spec = Spec(dims=tuple(Dim(names[k], choices[k]) for k in choices), objective=tuple(objective),
                costs=cost_terms, blocks=tuple(dict.fromkeys(g for g in gates.values() if g is not None)),
                name=name or type(model).__name__,
                meta={"source": "mdp_opt.adapters.torch.vit", "model": type(model).__name__, "step": step,
                      "mlp_step": mlp_step, "head_step": head_step, "head_dim_step": head_dim_step,
                      "latency": latency if isinstance(latency, str) else type(latency).__name__,
                      "input_shape": list(example_input.shape), "tokens": structure.tokens})
    spec = with_importance_check(spec, scores, scoring, _unit_name)
    handle = ViTPruningHandle(model, example_input, spec, structure, names,
                              {k: imp.order for k, imp in imps.items()}, gates)
    return calibrate_if_measured(spec, handle, latency, costs, example_input), handle


# ---- arguments -----------------------------------------------------------------------------------

def _reconstruct(model: nn.Module, site: BlockSite) -> nn.Module:
    embed = model.get_submodule(site.norm1).normalized_shape[0]
    return slim_block(model, site, keep_all(site), torch.arange(embed))


def _gates(model: nn.Module, structure: ViTStructure, blocks: Any) -> dict[tuple[str, str], str | None]:
    """(block name, "attn" | "mlp") -> the spec block gating that sub-block, or None."""
    sites = structure.blocks
    if blocks is None:
        return {(s.name, part): None for s in sites for part in ("attn", "mlp")}
    if blocks == "auto":
        return {(s.name, part): f"{s.name}.{part}" for s in sites for part in ("attn", "mlp")}
    if blocks == "whole":
        return {(s.name, part): s.name for s in sites for part in ("attn", "mlp")}
    if isinstance(blocks, str) or not isinstance(blocks, Sequence):
        raise ValueError(f"blocks: expected 'auto', 'whole', a list of modules or None, got {blocks!r}")
    names = {m: n for n, m in model.named_modules()}
    gates: dict[tuple[str, str], str | None] = {(s.name, part): None for s in sites for part in ("attn", "mlp")}
    for i, m in enumerate(blocks):
        n = names.get(m)
        hits = [(s, part) for s in sites for part, where in (("whole", s.name), ("attn", s.attn), ("mlp", s.mlp))
                if n == where]
        if not hits:
            raise ValueError(f"blocks[{i}]: {type(m).__name__} {n or '(not in the model)'} is not a transformer "
                             "block, attention or MLP of this ViT")
        s, part = hits[0]
        for p in (("attn", "mlp") if part == "whole" else (part,)):
            if gates[(s.name, p)] is not None:
                raise ValueError(f"blocks[{i}]: {n} overlaps another listed block ({gates[(s.name, p)]})")
            gates[(s.name, p)] = s.name if part == "whole" else f"{s.name}.{p}"
    return gates


def _pinned(model: nn.Module, structure: ViTStructure, ignore: Sequence[nn.Module]) -> set[DimKey]:
    names = {m: n for n, m in model.named_modules()}
    outside = set(structure.patch_embeds + structure.norms + structure.heads)
    pinned: set[DimKey] = set()
    for i, m in enumerate(ignore):
        n = names.get(m)
        hit = False
        for s in structure.blocks:
            if n in (s.name, s.attn):
                pinned.update((s.name, k) for k in ("heads", "qk", "v"))
                hit = True
            if n in (s.name, s.mlp, s.fc1, s.fc2):
                pinned.add((s.name, "hidden"))
                hit = True
        if n == "" or n in outside:
            pinned.add((OUTSIDE, "embed"))
            hit = True
        if not hit:
            raise ValueError(f"ignore[{i}]: {type(m).__name__} {n or '(not in the model)'} is none of a block, "
                             "attention, MLP (or its Linears), or embedding layer outside the blocks of this ViT")
    return pinned


def _minimum(min_channels: Any) -> Callable[[int], int]:
    if isinstance(min_channels, bool) or not isinstance(min_channels, (int, float)):
        raise ValueError(f"min_channels: expected a channel count or a fraction in (0, 1), got {min_channels!r}")
    if isinstance(min_channels, float) and not 0 < min_channels < 1:
        raise ValueError(f"min_channels: a fraction must be in (0, 1), got {min_channels}")
    if isinstance(min_channels, int) and min_channels < 1:
        raise ValueError(f"min_channels: expected at least 1 channel, got {min_channels}")
    return lambda width: int(np.ceil(min_channels * width)) if isinstance(min_channels, float) else min_channels


def choices_for(width: int, step: int, minimum: int = 1) -> tuple[int, ...]:
    """Multiples of `step` from `minimum` up, then `width` itself; never 0."""
    return tuple(k for k in range(step, width, step) if k >= minimum) + (width,)


def _all_choices(structure: ViTStructure, pinned: set[DimKey], step: int, mlp_step: int, head_step: int,
                 head_dim_step: int, minimum: Callable[[int], int]) -> dict[DimKey, tuple[int, ...]]:
    def make(key: DimKey, width: int, granularity: int, low: int = 1) -> tuple[int, ...]:
        return (width,) if key in pinned else choices_for(width, granularity, low)

    out = {(OUTSIDE, "embed"): make((OUTSIDE, "embed"), structure.embed_dim, step, minimum(structure.embed_dim))}
    for s in structure.blocks:
        out[(s.name, "heads")] = make((s.name, "heads"), s.num_heads, head_step)
        out[(s.name, "qk")] = make((s.name, "qk"), s.head_dim, head_dim_step)
        out[(s.name, "v")] = make((s.name, "v"), s.head_dim, head_dim_step)
        out[(s.name, "hidden")] = make((s.name, "hidden"), s.mlp_hidden, mlp_step, minimum(s.mlp_hidden))
    return out


# ---- objective -----------------------------------------------------------------------------------

def _dim_importances(structure: ViTStructure, scores: Mapping[DimKey, np.ndarray],
                     gates: Mapping[tuple[str, str], str | None]) -> dict[DimKey, DimImportance]:
    """Per dim: channel ranking by total score and per-block shares (the embedding has one per sub-block)."""
    def ranked(shares: dict[str | None, np.ndarray]) -> DimImportance:
        return DimImportance(np.argsort(-sum(shares.values()), kind="stable"), shares)

    out: dict[DimKey, DimImportance] = {}
    embed: dict[str | None, np.ndarray] = {None: scores[(OUTSIDE, "embed")]}
    for s in structure.blocks:
        for kind in KINDS:
            out[(s.name, kind)] = ranked({gates[(s.name, PART_OF[kind])]: scores[(s.name, kind)]})
        for part in ("attn", "mlp"):
            share = scores.get((s.name, f"embed_{part}"))
            if share is not None:
                gate = gates[(s.name, part)]
                embed[gate] = embed.get(gate, 0) + share
    out = {(OUTSIDE, "embed"): ranked(embed), **out}
    return out


# ---- costs ---------------------------------------------------------------------------------------

def _grid(choices: Mapping[DimKey, tuple[int, ...]], keys: Sequence[DimKey]) -> Grid:
    return Grid(*(np.array(choices[k]) for k in keys))


def _term_dims(site: BlockSite, part: str) -> tuple[DimKey, ...]:
    e = (OUTSIDE, "embed")
    return {"attn_qk": (e, (site.name, "heads"), (site.name, "qk")),
            "attn_v": (e, (site.name, "heads"), (site.name, "v")),
            "mlp": (e, (site.name, "hidden"))}[part]


def _cost_terms(model: nn.Module, structure: ViTStructure, choices: Mapping[DimKey, tuple[int, ...]],
                names: Mapping[DimKey, str], gates: Mapping[tuple[str, str], str | None], costs: Sequence[str],
                latency: LatencyArg, example_input: torch.Tensor) -> dict[str, tuple[Term, ...]]:
    embed_key = (OUTSIDE, "embed")
    parts = [(s, part) for s in structure.blocks for part in ("attn_qk", "attn_v", "mlp")]

    def gate(s: BlockSite, part: str) -> str | None:
        return gates[(s.name, "mlp" if part == "mlp" else "attn")]

    analytic = {"outside": outside_tables(model, structure, np.array(choices[embed_key]))}
    for s, part in parts:
        analytic[(s.name, part)] = block_tables(s, model, structure, part, _grid(choices, _term_dims(s, part)))
    measured = None
    if "latency" in costs and latency != "flops":
        measured = _measured_tables(model, structure, choices, parts, latency, example_input)
    out: dict[str, tuple[Term, ...]] = {}
    for resource in costs:
        def table(where: Any) -> np.ndarray:
            if resource == "latency":
                return analytic[where]["flops"] if measured is None else measured[where]
            return analytic[where][resource]

        terms = [Term((names[embed_key],), table("outside"))]
        terms += [Term(tuple(names[k] for k in _term_dims(s, part)), table((s.name, part)), gate(s, part))
                  for s, part in parts]
        out[resource] = tuple(terms)
    return out


def _measured_tables(model: nn.Module, structure: ViTStructure, choices: Mapping[DimKey, tuple[int, ...]],
                     parts: list[tuple[BlockSite, str]], latency: LatencyArg, example_input: torch.Tensor
                     ) -> dict[Any, np.ndarray]:
    """Latency tables from timing every part at every width combination (equal shapes timed once)."""
    shell = slim_model(model, structure, removed_everywhere(structure), torch.arange(structure.embed_dim))
    embeds = choices[(OUTSIDE, "embed")]
    workloads = [outside_workload(shell, structure, example_input, e) for e in embeds]
    shapes: dict[Any, tuple[int, ...]] = {"outside": (len(embeds),)}
    for s, part in parts:
        grid = [choices[k] for k in _term_dims(s, part)]
        shapes[(s.name, part)] = tuple(len(g) for g in grid)
        workloads += [block_workload(s, model, structure, part, widths)
                      for widths in np.array(np.meshgrid(*grid, indexing="ij")).reshape(len(grid), -1).T.tolist()]
    if isinstance(latency, MeasuredLatency):
        values = latency(workloads, example_input.device, example_input.dtype, structure.batch)
    else:
        values = [float(latency(w)) for w in workloads]
    out, start = {}, 0
    for where, shape in shapes.items():
        size = int(np.prod(shape))
        out[where] = np.asarray(values[start:start + size], dtype=np.float64).reshape(shape)
        start += size
    return out


# ---- the handle ----------------------------------------------------------------------------------

class ViTPruningHandle:
    """Made by `build_vit_spec`; slims the model for any result of its spec."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, spec: Spec, structure: ViTStructure,
                 names: Mapping[DimKey, str], orders: Mapping[DimKey, np.ndarray],
                 gates: Mapping[tuple[str, str], str | None]) -> None:
        self.model = model
        self.example_input = example_input
        self.spec = spec
        self.structure = structure
        self.names = dict(names)
        self.orders = dict(orders)
        self.gates = dict(gates)

    def kept_channels(self, result: Result) -> dict[str, np.ndarray]:
        """Dim name -> sorted indices of the heads / channels `apply` keeps (the highest-scored ones)."""
        self._check(result)
        return {self.names[k]: np.sort(order[:result.kept[self.names[k]]]) for k, order in self.orders.items()}

    def active(self, result: Result, block: str, part: str) -> bool:
        gate = self.gates[(block, part)]
        return gate is None or result.active[gate]

    def apply(self, result: Result) -> nn.Module:
        """A new model with the kept heads and channels; removed sub-blocks are gone (the residual stays).

        The user's model is not modified. Attention modules become `PrunedAttention`s and
        transformer blocks `PrunedBlock`s (or Identity when both sub-blocks are removed).
        """
        kept = {k: torch.as_tensor(v, dtype=torch.long) for k, v in self.kept_channels(result).items()}
        keep = {}
        for s in self.structure.blocks:
            def idx(kind: str) -> torch.Tensor:
                return kept[self.names[(s.name, kind)]]
            keep[s.name] = BlockKeep(self.active(result, s.name, "attn"), self.active(result, s.name, "mlp"),
                                     idx("heads"), idx("qk"), idx("v"), idx("hidden"))
        small = slim_model(self.model, self.structure, keep, kept["embed"])
        self._check_widths(small, result)
        self._check_runs(small)
        return small

    def describe(self, result: Result, file: TextIO | None = None) -> str:
        """Print (to `file`, default stdout) and return a per-block table of original -> kept widths."""
        self._check(result)

        def change(key: DimKey, full: int) -> str:
            k = result.kept[self.names[key]]
            return str(full) if k == full else f"{full} -> {k}"

        rows = [("block", "attention", "heads", "q/k dim", "v dim", "mlp", "mlp hidden")]
        for s in self.structure.blocks:
            attn, mlp = self.active(result, s.name, "attn"), self.active(result, s.name, "mlp")
            rows.append((s.name, "kept" if attn else "removed",
                         *((change((s.name, k), w) for k, w in (("heads", s.num_heads), ("qk", s.head_dim),
                                                                 ("v", s.head_dim))) if attn else ("-",) * 3),
                         "kept" if mlp else "removed",
                         change((s.name, "hidden"), s.mlp_hidden) if mlp else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"embedding: {change((OUTSIDE, 'embed'), self.structure.embed_dim)}")
        full = self.spec.full_costs()
        lines.append("costs: " + ", ".join(f"{r} {c:.6g} ({100 * c / full[r]:.1f}% of {full[r]:.6g})" if full[r]
                                           else f"{r} {c:.6g}" for r, c in result.costs.items()))
        text = "\n".join(lines)
        print(text, file=file or sys.stdout)
        return text

    def _check(self, result: Result) -> None:
        check_result_for(self.spec, result, "build_vit_spec")

    def _check_runs(self, small: nn.Module) -> None:
        flags = {m: m.training for m in small.modules()}
        try:
            with torch.no_grad():
                small.eval()(self.example_input)
        except RuntimeError as e:
            raise RuntimeError(f"the slimmed model fails on the example input ({e}); its forward may read the "
                               f"embedding width from an attribute other than {EMBED_ATTRIBUTES}") from e
        finally:
            for m, flag in flags.items():
                m.training = flag

    def _check_widths(self, small: nn.Module, result: Result) -> None:
        embed = result.kept["embed"]
        for s in self.structure.blocks:
            block = small.get_submodule(s.name)
            want: dict[str, int] = {}
            got: dict[str, int] = {}
            if self.active(result, s.name, "attn"):
                attn = block.attn
                want.update({k: result.kept[self.names[(s.name, k)]] for k in ("heads", "qk", "v")}, embed=embed)
                got.update(heads=attn.num_heads, qk=attn.qk_dim, v=attn.v_dim, embed=attn.embed_dim)
            if self.active(result, s.name, "mlp"):
                fc1 = block.mlp.get_submodule(s.fc1[len(s.mlp) + 1:])
                want.update(hidden=result.kept[self.names[(s.name, "hidden")]], mlp_in=embed)
                got.update(hidden=fc1.out_features, mlp_in=fc1.in_features)
            if got != want or not isinstance(block, (PrunedBlock, nn.Identity)) or (
                    isinstance(block, PrunedBlock) and block.attn is not None
                    and not isinstance(block.attn, PrunedAttention)):
                raise RuntimeError(f"{s.name}: slimmed to {got}, but the result says {want}")
