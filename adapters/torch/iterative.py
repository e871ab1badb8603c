"""`IterativePruner`: MDP's workflow inside a plain PyTorch training loop.

    pruner = IterativePruner(model, example_input, {"latency": "40%"}, steps=4, every=200,
                             optimizer=optimizer, latency="measure", step=8)
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()     # the pruner's hooks add this batch's Taylor scores
        optimizer.step()
        pruner.step()                       # every `every` iterations: solve exactly, prune `model` in place

The spec (latency tables, over the full widths) is built once. Each pruning step solves the spec restricted to
what is left (each dim's choices up to its current width, removed blocks gone) with the importance accumulated
since the previous step, at the next budget of the schedule (linear from 100% to the final budget, or given),
and slims the model in place (`in_place`): its optimizer keeps the sliced state of the kept channels.

Under DistributedDataParallel (give the pruner the wrapper or its `.module`; it prunes the `.module`): each rank's
hooks see the gradient of its own batch's loss (tensor hooks run before DDP averages the gradients), so each rank
holds the Taylor scores of its own batches; at a step they are summed over the ranks (`sum_across_ranks`), which
gives the importance of the union of every rank's batches, each batch scored with its own loss's gradient, as one
process that backwards every batch separately computes. Rank 0 solves and every rank applies its answer
(`from_rank0`). The wrapper's reducer holds the old parameters: make a new `DistributedDataParallel(pruner.model)`
in `on_pruned` (the optimizer is updated by the pruner; rebuild an EMA copy there too, or pass it in `followers`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import mdp_opt
from mdp_opt import Dim, Spec, Term, resolve_budgets

from .distributed import from_rank0, on_rank0, sum_across_ranks, unwrap_ddp
from .importance import DimImportance, channel_taylor, normalized, objective_terms
from .in_place import Configuration, InPlaceReport, Tags, install, slimmed
from .scores import scored_layers, site_batch_scores, taylor_importances
from .spec_builder import LatencyArg, build_spec

BudgetForm = Any       # a number, "40%", or {resource: number or percentage}
BUILD_OPTIONS = {"step", "mlp_step", "head_step", "head_dim_step", "min_channels", "ignore", "blocks", "heads",
                 "family", "name"}
STRUCTURE_OPTIONS = ("ignore", "blocks", "heads", "family")


@dataclass
class PruningStep:
    """What one pruning step did: the budget it solved at (absolute and % of the unpruned cost, per resource),
    the predicted costs of its answer, kept widths (dim -> count, 0 when removed with its blocks), the blocks it
    removed and all removed so far, and the solver's status and value (the fraction of importance kept)."""

    step: int
    iteration: int
    budget: dict[str, float]
    budget_percent: dict[str, float]
    predicted: dict[str, float]
    predicted_percent: dict[str, float]
    kept: dict[str, int]
    removed_now: list[str]
    removed: list[str]
    status: str
    objective: float
    batches: int
    changes: InPlaceReport | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("changes")
        return out

    def summary(self) -> str:
        costs = ", ".join(f"{r} {self.predicted_percent[r]:.1f}% (budget {self.budget_percent[r]:.1f}%)"
                          for r in self.predicted)
        return (f"step {self.step} at iteration {self.iteration}: {costs}; "
                f"{len(self.removed_now)} blocks removed" + (f" ({', '.join(self.removed_now)})" if self.removed_now
                                                            else ""))


class IterativePruner:
    """Prune `model` in steps while it trains, to a final budget, with MDP's exact solve at every step.

    Args:
        model: the model being trained (pruned in place: keep using the same object). A DistributedDataParallel
            wrapper is unwrapped: `pruner.model` is its `.module`, to wrap anew in `on_pruned`.
        example_input: one input batch (its device and shape are those the latency tables are for).
        budget: the final budget, as `mdp_opt.solve` accepts it over the unpruned model: a number or "40%" (for
            latency), or several resources at once, {"latency": "40%", "params": "50%"}.
        steps: number of pruning steps; `every`: training iterations (`step()` calls) between them; `start`:
            the iteration of the first step (default `every`).
        budgets: optional, the budget of each step (a list of `steps` budgets in any form above, non-increasing);
            default: linear from 100% to `budget` for every budgeted resource.
        latency: as in `build_spec` ("measure", a `MeasuredLatency`, "flops" or a callable). Tables are built
            once, over the full widths, and reused by every step.
        costs: the resources in the spec (default: those `budget` names).
        optimizer: updated at every step: kept channels keep their momentum / Adam moments, removed
            parameters leave it, new ones (a replaced attention's) join their sources' group.
        on_pruned: `callback(pruner, step)` after each step: rebuild wrappers there (DistributedDataParallel:
            `DistributedDataParallel(pruner.model, ...)` on every rank; `torch.compile`), since they hold the old
            parameters.
        followers: models of the same structure (an EMA copy of `model`), pruned in place to the same units at
            every step (their own values sliced).
        backend, time_limit: for `mdp_opt.solve`.
        build_options: `build_spec` options (step, mlp_step, head_step, head_dim_step, min_channels, ignore,
            blocks, heads, family, name).

    Call `step()` once per training iteration, after `optimizer.step()`. Importance is first-order Taylor
    (MDP's), accumulated from your own backward passes by hooks on the parameters (no extra forward pass).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, budget: BudgetForm = None, *,
                 steps: int = 5, every: int = 100, start: int | None = None,
                 budgets: Sequence[BudgetForm] | None = None, latency: LatencyArg = "measure",
                 costs: Sequence[str] | None = None, optimizer: torch.optim.Optimizer | None = None,
                 on_pruned: Callable[["IterativePruner", PruningStep], Any] | None = None,
                 followers: Sequence[nn.Module] = (), backend: str = "cpsat",
                 time_limit: float | None = None, **build_options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        model = unwrap_ddp(model)      # its .module is pruned in place: the wrapper is rebuilt in on_pruned
        for label, value in (("steps", steps), ("every", every)) + ((("start", start),) if start is not None else ()):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label}: expected a positive integer, got {value!r}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if on_pruned is not None and not callable(on_pruned):
            raise TypeError(f"on_pruned: expected a callable(pruner, step), got {type(on_pruned).__name__}")
        unknown = set(build_options) - BUILD_OPTIONS
        if unknown:
            raise TypeError(f"{sorted(unknown)[0]}: not an IterativePruner or build_spec option (build options: "
                            f"{sorted(BUILD_OPTIONS)})")
        if budget is None and budgets is None:
            raise ValueError("budget: give the final budget (e.g. {'latency': '40%'}) or budgets= for every step")
        if budgets is not None and (isinstance(budgets, (str, Mapping)) or not isinstance(budgets, Sequence)
                                    or len(budgets) != steps):
            raise ValueError(f"budgets: expected a list of {steps} budgets (one per step), got {budgets!r:.80}")
        final = budget if budget is not None else budgets[-1]
        resources = tuple(final) if isinstance(final, Mapping) else ("latency",)
        costs = resources if costs is None else tuple(costs)
        followers = [unwrap_ddp(f) if isinstance(f, nn.Module) else f for f in followers]
        shapes = {n: p.shape for n, p in model.state_dict().items()}
        for i, f in enumerate(followers):
            if not isinstance(f, nn.Module) or f is model or {n: p.shape for n, p in f.state_dict().items()} != shapes:
                raise ValueError(f"followers[{i}]: expected a copy of model's structure (same state_dict keys and "
                                 "shapes), such as an EMA copy made with copy.deepcopy(model)")
        self.followers = followers
        self.model = model
        self.example_input = example_input
        self.optimizer = optimizer
        self.on_pruned = on_pruned
        self.backend, self.time_limit = backend, time_limit
        self.steps, self.every = steps, every
        self.start = every if start is None else start
        self.structure_options = {k: build_options[k] for k in STRUCTURE_OPTIONS if k in build_options}
        self.spec, self._handle = build_spec(model, example_input, importance="uniform", latency=latency,
                                             costs=costs, **build_options)
        self.budgets = self._schedule(budget, budgets)
        self._tags = Tags(model)
        self._provenance = self._tags.provenance()
        self.configuration = Configuration.full(self._handle)
        self.configurations: list[Configuration] = []
        self.history: list[PruningStep] = []
        self.iteration = 0
        self._layers = sorted({name for entries in scored_layers(self._handle.structure).values()
                               for name, _, _ in entries})
        self._scored = self._scored_tensors()
        self._totals: dict[str, torch.Tensor] = {}
        self._batches = 0
        self._products: dict[str, torch.Tensor] = {}
        self._hooks: list[Any] = []
        self._tag_names = {id(p): n for n, p in self._tags.model.named_parameters()}
        self._hook_model()

    # ---- the schedule ------------------------------------------------------------------------------------
    def _schedule(self, budget: BudgetForm, budgets: Sequence[BudgetForm] | None) -> list[dict[str, float]]:
        full = self.spec.full_costs()
        if budgets is None:
            final = resolve_budgets(self.spec, budget)
            out = [{r: full[r] + (b - full[r]) * (i + 1) / self.steps for r, b in final.items()}
                   for i in range(self.steps)]
            out[-1] = final
        else:
            out = []
            for i, b in enumerate(budgets):
                try:
                    out.append(resolve_budgets(self.spec, b))
                except mdp_opt.SpecError as e:
                    raise ValueError(f"budgets[{i}]: {e}") from None
            if budget is not None and resolve_budgets(self.spec, budget) != out[-1]:
                raise ValueError("budgets: the last step's budget differs from budget=; give one or make them equal")
            for i in range(1, len(out)):
                if set(out[i]) != set(out[0]) or any(out[i][r] > out[i - 1][r] for r in out[i]):
                    raise ValueError(f"budgets[{i}]: expected the same resources as budgets[0], none above the "
                                     "previous step's (a pruned model cannot grow back)")
        return out

    @property
    def schedule(self) -> list[int]:
        """The iterations (counts of `step()` calls) at which the model is pruned."""
        return [self.start + i * self.every for i in range(self.steps)]

    @property
    def done(self) -> int:
        """Pruning steps done so far."""
        return len(self.configurations)

    @property
    def finished(self) -> bool:
        return self.done == self.steps

    # ---- importance from the user's backward passes -----------------------------------------------------
    def _scored_tensors(self) -> set[str]:
        """Names (in the original model) of the parameters Taylor scores read: scored layers and attention sites."""
        names = {id(p): n for n, p in self._tags.model.named_parameters()}
        out = {f"{layer}.{attr}" for layer in self._layers for attr in ("weight", "bias")} & set(names.values())
        touched: list[str] = []

        def record(p: torch.Tensor) -> torch.Tensor:
            touched.append(names[id(p)])
            return torch.zeros_like(p)

        site_batch_scores(self._tags.model, self._handle.structure.sites, record)
        return out | set(touched)

    def _hook_model(self) -> None:
        """A gradient hook on each current parameter that holds scored elements: it writes `parameter * gradient`
        (at the original elements it holds) into this backward pass's products, and the first one of a pass
        queues `_finish_batch` for the end of the pass, which adds that batch's scores (in the original model's
        units). Plain tensor hooks hold no gradient accumulator, so the parameters can be resized later."""
        self.close()
        offsets = sorted((o, n) for n, o in self._tags.offsets.items())
        starts = torch.tensor([o for o, _ in offsets])
        handles = []
        for name, p in self.model.named_parameters():
            if name not in self._provenance or not p.requires_grad:
                continue
            flat = self._provenance[name].reshape(-1)
            owner = torch.searchsorted(starts, flat, right=True) - 1
            segs = []
            for o in torch.unique(owner).tolist():
                original = offsets[o][1]
                if original in self._scored:
                    where = torch.nonzero(owner == o).reshape(-1)
                    segs.append((original, where.to(p.device), (flat[where] - offsets[o][0]).to(p.device)))
            if segs:
                handles.append(p.register_hook(self._gradient_hook(p, segs)))
        if not handles:
            raise ValueError("model: no parameter that Taylor importance reads requires gradients")
        self._hooks = handles

    def _gradient_hook(self, p: torch.Tensor, segs: list[tuple[str, torch.Tensor, torch.Tensor]]
                       ) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            if not self._products:
                torch.autograd.Variable._execution_engine.queue_callback(self._finish_batch)
            with torch.no_grad():
                flat = (p.detach() * grad).reshape(-1)
                for original, where, local in segs:
                    buf = self._products.get(original)
                    if buf is None:
                        buf = self._products[original] = torch.zeros(self._tags.shapes[original].numel(),
                                                                     dtype=flat.dtype, device=flat.device)
                    buf[local] = flat[where]
        return hook

    def _finish_batch(self) -> None:
        """One backward pass's scores, added to the totals: MDP's per-layer Taylor score and the attention
        sites' (`channel_taylor`, `site_batch_scores`: the math `build_spec` uses)."""
        products, self._products = self._products, {}
        if not products:
            return
        shapes = self._tags.shapes
        device = next(iter(products.values())).device
        with torch.no_grad():
            for layer in self._layers:
                parts = [products[f"{layer}.{a}"].reshape(shapes[f"{layer}.{a}"]) for a in ("weight", "bias")
                         if f"{layer}.{a}" in products]
                if parts:
                    key = f"layer:{layer}"
                    total = self._totals.get(key)
                    if total is None:
                        total = self._totals[key] = torch.zeros(shapes[f"{layer}.weight"][0], dtype=torch.float64,
                                                                device=device)
                    total += channel_taylor(parts, total) ** 2

            def value(t: torch.Tensor) -> torch.Tensor:
                name = self._tag_names[id(t)]
                return products[name].reshape(t.shape) if name in products else torch.zeros(t.shape, device=device)

            for key, score in site_batch_scores(self._tags.model, self._handle.structure.sites, value).items():
                key = f"site:{key}"
                self._totals[key] = self._totals[key] + score if key in self._totals else score
        self._batches += 1

    def scores(self) -> dict[str, np.ndarray]:
        """The Taylor scores accumulated since the last step, per layer (`layer:<name>`, per output channel of the
        original layer) and attention part (`site:<name>.<kind>`), on this rank."""
        out = {f"layer:{layer}": np.zeros(self._tags.shapes[f"{layer}.weight"][0]) for layer in self._layers}
        for handler_name, handler in self._handle.structure.sites.items():
            for kind in handler.site.kinds:
                out[f"site:{handler_name}.{kind}"] = np.zeros(handler.site.width(kind))
        for k, v in self._totals.items():
            out[k] = v.detach().cpu().numpy().astype(np.float64)
        return out

    # ---- stepping ----------------------------------------------------------------------------------------
    def step(self) -> PruningStep | None:
        """Count one training iteration; at a scheduled one, prune (returns what the step did, else None)."""
        self.iteration += 1
        if not self.finished and self.iteration >= self.schedule[self.done]:
            return self.prune_now()
        return None

    def prune_now(self) -> PruningStep:
        """Run the next pruning step now (at its budget), whatever the iteration."""
        if self.finished:
            raise RuntimeError(f"IterativePruner: all {self.steps} steps are done; nothing left to prune")
        i = self.done
        summed = sum_across_ranks({**self.scores(), "batches": np.array([float(self._batches)])})
        batches = int(summed.pop("batches")[0])
        if batches == 0 or not sum(float(v.sum()) for v in summed.values()) > 0:
            raise RuntimeError("IterativePruner.step: no gradient reached the model since the last step; call "
                               "loss.backward() on the model's output between pruning steps")
        imps = taylor_importances(self._handle.structure, self._handle.gates, normalized(summed))
        spec = self.restricted_spec(imps)
        budget = self.budgets[i]

        def solve() -> mdp_opt.Result | str:
            try:
                return mdp_opt.solve(spec, {r: b for r, b in budget.items()}, backend=self.backend,
                                     time_limit=self.time_limit)
            except (mdp_opt.SpecError, mdp_opt.BackendError) as e:
                return f"{type(e).__name__}: {e}"

        answer = on_rank0(solve)        # solved on rank 0 only; any other error there is raised on every rank
        if isinstance(answer, str) or not answer.has_solution:
            status = answer if isinstance(answer, str) else answer.status.value
            raise RuntimeError(f"IterativePruner step {i + 1}: no configuration within budget {self._percent(budget)} "
                               f"of the unpruned model ({status}); loosen the budget or allow smaller widths "
                               "(step=, min_channels=)")
        # every rank holds the same summed scores; rank 0's kept units are sent anyway, so that no rounding
        # difference in a collective can ever slim two replicas differently
        config, kept, costs = from_rank0(self._configuration_of(answer, imps))
        changes = self._apply(config)
        report = PruningStep(
            step=i + 1, iteration=self.iteration, budget=dict(budget), budget_percent=self._percent(budget),
            predicted=costs, predicted_percent=self._percent(costs), kept=kept,
            removed_now=[b for b in config.removed if b not in self.configuration.removed], removed=list(config.removed),
            status=answer.status.value, objective=float(answer.objective), batches=batches, changes=changes)
        self.configuration = config
        self.configurations.append(config)
        self.history.append(report)
        self._totals, self._batches = {}, 0
        if self.on_pruned is not None:
            self.on_pruned(self, report)
        return report

    def _percent(self, costs: Mapping[str, float]) -> dict[str, float]:
        full = self.spec.full_costs()
        return {r: 100.0 * c / full[r] if full[r] else math.nan for r, c in costs.items()}

    def restricted_spec(self, importances: Mapping[str, DimImportance]) -> Spec:
        """The original spec restricted to the current model: each dim's choices up to its current width, the
        removed blocks and their terms gone, and the objective from `importances` (units the model no longer
        has rank last, so a kept count always means the current units of highest score)."""
        current, removed = self.configuration, set(self.configuration.removed)
        dims, count = [], {}
        for d in self.spec.dims:
            units = current.kept[d.name]
            n = d.choices.index(len(units)) + 1 if units else 1
            count[d.name] = n
            dims.append(Dim(d.name, d.choices[:n]))
        objective: list[Term] = []
        for d in dims:
            units = current.kept[d.name]
            if not units:
                continue
            imp = importances[d.name]
            alive = np.zeros(self._handle.dims[d.name].width, dtype=bool)
            alive[list(units)] = True
            order = np.concatenate([imp.order[alive[imp.order]], imp.order[~alive[imp.order]]])
            shares = {b: s for b, s in imp.shares.items() if b is None or b not in removed}
            objective += objective_terms(d.name, d.choices, DimImportance(order, shares))
        costs = {r: tuple(Term(t.dims, t.table[tuple(slice(0, count[n]) for n in t.dims)], t.block)
                          for t in ts if t.block is None or t.block not in removed)
                 for r, ts in self.spec.costs.items()}
        return Spec(dims=tuple(dims), objective=tuple(objective), costs=costs,
                    blocks=tuple(b for b in self.spec.block_names if b not in removed),
                    name=f"{self.spec.name} (step {self.done + 1})", meta=self.spec.meta)

    def _configuration_of(self, result: mdp_opt.Result, imps: Mapping[str, DimImportance]
                          ) -> tuple[Configuration, dict[str, int], dict[str, float]]:
        removed = set(self.configuration.removed) | {b for b, a in result.active.items() if not a}
        active = {b: b not in removed for b in self.spec.block_names}
        choice = {n: result.choice[n] for n in self.spec.dim_names}
        ev = mdp_opt.evaluate(self.spec, choice, active)
        kept: dict[str, tuple[int, ...]] = {}
        for d in self.spec.dims:
            units = self.configuration.kept[d.name]
            k = ev.kept[d.name] if units else 0
            if k:
                imp = imps[d.name]
                alive = np.zeros(self._handle.dims[d.name].width, dtype=bool)
                alive[list(units)] = True
                best = imp.order[alive[imp.order]][:k]
                kept[d.name] = tuple(int(u) for u in np.sort(best))
            else:
                kept[d.name] = ()
        order = [b for b in self.spec.block_names if b in removed]
        return Configuration(kept, tuple(order)), {n: len(u) for n, u in kept.items()}, ev.costs

    def _apply(self, config: Configuration) -> InPlaceReport:
        self.close()
        for follower in self.followers:      # same structure, same provenance: the same elements kept
            install(follower, slimmed(self._handle, self._tags.model, config), self._tags, self._provenance)
        small = slimmed(self._handle, self._tags.model, config)
        self._provenance, changes = install(self.model, small, self._tags, self._provenance, self.optimizer)
        self._hook_model()
        return changes

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def rebuild(self, model: nn.Module) -> nn.Module:
        """A new model: `model` (a fresh instance of the original definition) with the current pruned structure,
        ready for `load_state_dict` of the pruned model's weights. `model` is left unmodified."""
        if {n: p.shape for n, p in model.named_parameters()} != {n: p.shape for n, p in
                                                                   self._tags.model.named_parameters()}:
            raise ValueError("model: expected a fresh instance of the original (unpruned) model definition")
        return slimmed(self._handle, model, self.configuration)

    def state_dict(self) -> dict[str, Any]:
        """The pruner's state (iteration, steps done, each step's configuration and report, scores accumulated
        since the last step): save it with the model's and optimizer's state dicts."""
        return {"version": 1, "iteration": self.iteration, "steps": self.steps, "every": self.every,
                "start": self.start, "budgets": [dict(b) for b in self.budgets], "batches": self._batches,
                "scores": {k: v.detach().cpu().clone() for k, v in self._totals.items()},
                "configurations": [c.to_dict() for c in self.configurations],
                "history": [h.to_dict() for h in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: a pruner built like the saved one, on a fresh original model (and a fresh optimizer over its
        parameters), prunes that model in place to the saved structure; then load the model's and the
        optimizer's state dicts, in that order."""
        if not isinstance(state, Mapping) or state.get("version") != 1:
            raise ValueError("state: expected IterativePruner.state_dict() (version 1)")
        for key in ("steps", "every", "start"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state.{key}: saved {state[key]}, but this pruner has {getattr(self, key)}; "
                                 "build the pruner with the saved schedule")
        if len(state["budgets"]) != len(self.budgets) or any(
                set(a) != set(b) or any(not math.isclose(a[r], b[r], rel_tol=1e-6) for r in a)
                for a, b in zip(state["budgets"], self.budgets)):
            raise ValueError("state.budgets: the saved schedule's budgets differ from this pruner's")
        configs = [Configuration.from_dict(c) for c in state["configurations"]]
        if len(configs) < self.done or configs[:self.done] != self.configurations:
            raise ValueError("state.configurations: this pruner has already pruned differently; load into a pruner "
                             "on a fresh original model")
        if len(configs) > self.done:
            self._apply(configs[-1])
        self.configurations = configs
        self.configuration = configs[-1] if configs else Configuration.full(self._handle)
        self.history = [PruningStep(**h) for h in state["history"]]
        self.iteration = int(state["iteration"])
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        self._totals = {k: torch.as_tensor(v, dtype=torch.float64).to(device) for k, v in state["scores"].items()}
        self._batches = int(state["batches"])

    def close(self) -> None:
        """Remove the importance hooks (the pruner stops scoring)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
