"""The latency model a spec carries, fitted to whole models: scaled tables, weights and a fixed cost.

Latency tables time every layer alone. A whole model costs more or less than their sum, by
amounts the tables cannot carry: Python and framework work between layers and the calls of
container modules (a fixed cost), weights that a whole model streams from memory while a
layer timed alone finds them in a cache (a cost per parameter), operators a runtime fuses away
(ONNX Runtime folds BatchNorm into the convolution before it and runs activations inside it).
Scaling every entry by one factor (measured / predicted of the full model) turns the fixed and
per-parameter costs into proportional ones: pruned models then measure slower than predicted,
more so the more is pruned.

The model here is affine. With T_early and T_late the table cost of a configuration in the layers
that make up the first and the second half of the full model's table cost (`split_tables`), P its
parameter count and A the elements its operations write (activations), all counted above the
smallest entries of the terms that are always present (what no choice removes),

    latency = a_early * T_early  +  a_late * T_late  +  m * P  +  k * A  +  b * B  +  c,    all >= 0.

`c` is the fixed cost of the model: the always-present minimum plus whatever the runtime spends
outside the tables. P and A enter when the spec has the "params" and "activations" resources
(the builders add them for the fit and drop them after). B is the number of removable blocks kept:
a runtime spends time on each block's operators that no layer timed alone shows (OpenVINO about
0.3 ms per inference on ViT-Tiny's 24 branches at 64 px, outside every operator's own counter).
The coefficients are fitted by non-negative least squares of relative error to reference models
that span what a solver can pick (`reference_configurations`), measured run by run in alternation.
The spec stays a plain spec: each half's latency tables times its factor, the parameter tables
times `m`, the activation tables times `k` (all with their ungated tables shifted down by their
smallest entry), a term of `b` gated by each block, and `c` as one constant term, so every backend
sees the same model.

Measured on the development machine (benchmarks/RESULTS.md, `benchmarks/latency_forms.py`): every
model of a case timed in one window of interleaved runs, fitted to the references and the solver's
answers at 80/60/40/20% (each answer counted 9 times, as `calibration.calibrate_affine` counts them),
judged on the answers at 90/70/50/30%. Six architectures in eager PyTorch and ONNX Runtime at 64 and
224 px, batch 1: 95 of 96 answers within 5% (worst 5.2%, 1.8% on average of each case's worst); without
B 96 (worst 4.6%, 2.0%). Seven cases in OpenVINO: 23 of 28 (worst 8.1%, 4.8%); without B 21 (worst
16.9%, ViT-Tiny at 64 px). With every answer counted once, the form without B (the model until the
fourteenth session) had 96 of 96 and 19 of 28 (worst 24.3%). One factor for all the tables (T+P+A+c,
equal weights) had 94 of 96 (worst 6.3%), tables + parameters + constant 87 (worst 8.5%), one factor alone
58 (worst 40%). A split into dense and light terms instead of early and late did worse (worst 7.0%), and so
did the tables above their narrowest entries with a cost for each kept block's narrowest entries.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mdp_opt import Result, Spec, Status, Term, evaluate, kept_counts

RATIOS = (0.75, 0.5, 0.25)
COMPONENTS = {"tables_early": "latency tables of the layers that make up the first half of the full model's table "
                              "cost, in the network's order (ms per ms of table)",
              "tables_late": "latency tables of the other layers (ms per ms of table)",
              "params": "parameters kept (ms per parameter: weights streamed from memory)",
              "activations": "elements written by the operations (ms per element: activations streamed through "
                             "memory)",
              "blocks": "removable blocks kept (ms per block: what the runtime spends on a block's operators "
                        "beyond their tables)"}


@dataclass(frozen=True)
class Reference:
    """A reference configuration and its whole-model measurements (ms)."""

    name: str
    choice: Mapping[str, int]
    active: Mapping[str, bool]
    samples: tuple[float, ...] = ()
    weight: float = 1.0            # its squared relative error counts this many times in the fit

    @property
    def measured_ms(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Spread of the medians of five interleaved subsets of the samples, over their median (the noise floor)."""
        return noise_spread(self.samples)


def noise_spread(samples: Sequence[float], parts: int = 5) -> float:
    """(max - min) / median of the medians of `parts` interleaved subsets of `samples` (0 for too few)."""
    if len(samples) < 2 * parts:
        return 0.0
    medians = [statistics.median(samples[i::parts]) for i in range(parts)]
    return (max(medians) - min(medians)) / statistics.median(medians)


@dataclass(frozen=True)
class AffineFit:
    """`latency = sum over components of factors[c] * (cost_c - its ungated minimum) + constant` (ms),
    fitted to `references` (`features` and `tables_ms`: the references' component costs and raw tables)."""

    factors: dict[str, float]
    constant: float
    references: tuple[Reference, ...] = ()
    features: tuple[dict[str, float], ...] = ()
    tables_ms: tuple[float, ...] = ()
    note: str = ""

    def predict(self, features: Mapping[str, float]) -> float:
        return self.constant + sum(self.factors[c] * features.get(c, 0.0) for c in self.factors)

    def as_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": "affine", "factors": dict(self.factors), "constant_ms": self.constant,
            "components": {k: v for k, v in COMPONENTS.items() if k in self.factors},
            "points": [{"model": r.name, "tables_ms": t, "measured_ms": r.measured_ms,
                        "predicted_ms": self.predict(f), "noise_spread": r.spread, "runs": len(r.samples),
                        "weight": r.weight}
                       for r, f, t in zip(self.references, self.features, self.tables_ms)]}
        if self.note:
            out["note"] = self.note
        return out


def reference_configurations(spec: Spec, ratios: Sequence[float] = RATIOS) -> list[tuple[str, dict[str, int],
                                                                                          dict[str, bool]]]:
    """(name, choice, active) of the reference models: full; uniformly slimmed to each ratio; the first
    half of the dims slimmed to 0.25 and the rest full, and the other way round (early layers cost
    compute, late ones weights: the two tell the components apart); and when the spec has blocks, every
    block removed (full and half widths) and every other block removed at 0.75. Duplicates are dropped."""
    def uniform(ratio: float) -> dict[str, int]:
        return {d.name: max([i for i, c in enumerate(d.choices) if c <= ratio * d.choices[-1]], default=0)
                for d in spec.dims}

    def half(ratio: float, front: bool) -> dict[str, int]:
        slim, full, cut = uniform(ratio), uniform(1.0), len(spec.dims) // 2
        return {d.name: slim[d.name] if (i < cut) == front else full[d.name] for i, d in enumerate(spec.dims)}

    def blocks(keep: Callable[[int], bool]) -> dict[str, bool]:
        return {b: keep(i) for i, b in enumerate(spec.block_names)}

    every = blocks(lambda i: True)
    candidates = [("full", uniform(1.0), every)]
    candidates += [(f"uniform {r:g}", uniform(r), every) for r in ratios]
    candidates += [("front half 0.25", half(0.25, True), every), ("back half 0.25", half(0.25, False), every)]
    if spec.block_names:
        candidates += [("no blocks", uniform(1.0), blocks(lambda i: False)),
                       ("no blocks, uniform 0.5", uniform(0.5), blocks(lambda i: False)),
                       ("every other block, uniform 0.75", uniform(0.75), blocks(lambda i: i % 2 == 0))]
    return distinct(candidates)


def distinct(configs: Sequence[tuple[str, dict[str, int], dict[str, bool]]]
             ) -> list[tuple[str, dict[str, int], dict[str, bool]]]:
    """The configurations without repeats (the first name is kept)."""
    out, seen = [], []
    for name, choice, active in configs:
        if (choice, active) not in seen:
            seen.append((choice, active))
            out.append((name, choice, active))
    return out


def as_result(spec: Spec, choice: Mapping[str, int], active: Mapping[str, bool], name: str) -> Result:
    """A configuration of `spec` as a Result that `handle.apply` accepts."""
    ev = evaluate(spec, choice, active)
    return Result(status=Status.FEASIBLE, objective=ev.value, bound=None, gap=None,
                  kept=kept_counts(spec, choice, active), active=dict(active), costs=ev.costs, backend=name,
                  wall_time=0.0, choice=dict(choice))


def components(spec: Spec, resource: str = "latency") -> dict[str, list[Term]]:
    """The parts of the model, each with its terms: the latency tables split in two ("tables_early", "tables_late",
    see `split_tables`), the parameter count ("params") and elements written ("activations") when the spec has
    those resources, and the removable blocks kept ("blocks": one gated term of 1 per block). Empty parts are left
    out."""
    early, late = split_tables(spec.costs[resource])
    out = {"tables_early": early, "tables_late": late}
    for extra in ("params", "activations"):
        if extra in spec.costs and resource != extra:
            out[extra] = list(spec.costs[extra])
    out["blocks"] = [Term((), 1.0, block) for block in spec.block_names]
    return {name: terms for name, terms in out.items() if terms}


def split_tables(terms: Sequence[Term]) -> tuple[list[Term], list[Term]]:
    """The terms in the network's order (the order a spec builder writes them) cut in two where the full model's
    table cost reaches half: a term goes early when the midpoint of its full-width cost lies in the first half.

    Early layers of a vision network work on large feature maps with few channels, late ones on small maps with
    many; a layer timed alone misjudges the two differently inside the whole model (measured: a factor per half
    cut the worst error of the solver's answers from 6.3% to 4.9% over six architectures at 64 and 224 px, eager
    and ONNX Runtime; benchmarks/RESULTS.md). When the reference models cannot tell the halves apart, the fit
    gives them one factor."""
    full = np.array([float(t.table[(-1,) * t.table.ndim]) for t in terms])
    total = full.sum()
    if not total > 0:
        return list(terms), []
    midpoints = (np.cumsum(full) - full / 2) / total
    return ([t for t, m in zip(terms, midpoints) if m < 0.5], [t for t, m in zip(terms, midpoints) if m >= 0.5])


def _above_minimum(terms: Sequence[Term]) -> tuple[Term, ...]:
    """The terms with every ungated table shifted down by its smallest entry (what no choice removes)."""
    return tuple(Term(t.dims, t.table - (t.table.min() if t.block is None else 0.0), t.block) for t in terms)


def features(spec: Spec, choice: Mapping[str, int], active: Mapping[str, bool], resource: str = "latency"
             ) -> dict[str, float]:
    """Per component: its cost for the configuration above the smallest entries of its ungated terms."""
    out = {}
    for name, terms in components(spec, resource).items():
        sub = spec.replace(costs={"part": _above_minimum(terms)})
        out[name] = evaluate(sub, choice, active).costs["part"]
    return out


def fit_affine(spec: Spec, references: Sequence[Reference], resource: str = "latency") -> AffineFit:
    """Non-negative least squares of relative error (each reference's squared error times its weight): a factor
    per component and the constant.

    "params" gets the factor 0 when it does not vary over the references; when the tables do not vary,
    or there are no more references than unknowns, the fit is one factor through the full model (the
    first reference) and the note says so."""
    feats = [features(spec, r.choice, r.active, resource) for r in references]
    tables = [evaluate(spec, r.choice, r.active).costs[resource] for r in references]
    measured = np.array([r.measured_ms for r in references])
    if not np.all(measured > 0):
        raise ValueError(f"latency calibration: reference models measured {measured.tolist()} ms; every one must "
                         "take a positive time (or pass calibrate=False)")
    names = list(feats[0])
    scale = {n: max(abs(f[n]) for f in feats) or 1.0 for n in names}
    varying = [n for n in names if np.ptp([f[n] for f in feats]) > 1e-9 * scale[n]]
    table_parts = [n for n in names if n.startswith("tables")]
    columns = [(n,) for n in varying]           # components sharing one factor, one column each

    def design_of(columns: list[tuple[str, ...]]) -> tuple[np.ndarray, list[float]]:
        """One column per group (its components' summed features over its largest value) and the constant's; the
        largest values."""
        cols = [np.array([sum(f[n] for n in c) for f in feats]) for c in columns]
        sizes = [float(np.abs(col).max()) or 1.0 for col in cols]
        return np.column_stack([col / size for col, size in zip(cols, sizes)] + [np.ones(len(feats))]), sizes

    def deficient(design: np.ndarray) -> bool:
        return np.linalg.matrix_rank(design) < design.shape[1]

    halves = tuple(n for n in table_parts if n in varying)
    if len(halves) == 2 and deficient(design_of(columns)[0]):  # references that cannot tell the halves apart
        columns = [halves] + [c for c in columns if c[0] not in halves]
    design, sizes = design_of(columns)
    if not halves or len(references) <= len(columns) or deficient(design):
        factor = measured[0] / tables[0]
        factors = {n: factor if n in table_parts else 0.0 for n in names}
        variable = sum(feats[0][n] for n in table_parts)
        return AffineFit(factors, factor * (tables[0] - variable), tuple(references), tuple(feats),
                         tuple(tables), "too few distinct reference models for the affine fit: one factor through "
                                        "the full model")
    root = np.sqrt([r.weight for r in references])         # rows scaled by sqrt(weight): squared errors by weight
    coef = nnls(design / measured[:, None] * root[:, None], root)
    factors = {n: 0.0 for n in names}
    for column, c, size in zip(columns, coef[:-1], sizes):
        factors.update({n: float(c) / size for n in column})
    note = "" if any(coef[:-1] > 0) else "every factor fitted to 0: the reference models measure alike"
    return AffineFit(factors, float(coef[-1]), tuple(references), tuple(feats), tuple(tables), note)


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0, exactly, by trying every set of free variables (a few columns)."""
    n = a.shape[1]
    if n > 8:
        raise ValueError("nnls: at most 8 columns")
    best, best_x = np.inf, np.zeros(n)
    for size in range(n + 1):
        for free in itertools.combinations(range(n), size):
            x = np.zeros(n)
            if free:
                sol, *_ = np.linalg.lstsq(a[:, free], b, rcond=None)
                if np.any(sol < 0):
                    continue
                x[list(free)] = sol
            residual = float(np.sum((a @ x - b) ** 2))
            if residual < best - 1e-15:
                best, best_x = residual, x
    return best_x


def affine_spec(spec: Spec, fit: AffineFit, measured_with: str, resource: str = "latency") -> Spec:
    """`spec` with the fitted model as its `resource` terms: each component's terms times its factor
    (ungated ones shifted down by their smallest entry), and one constant term `fit.constant`; the fit
    is recorded in `meta[f"{resource}_calibration"]`. The other resources stay as they are."""
    terms = [Term(t.dims, fit.factors[name] * t.table, t.block)
             for name, part in components(spec, resource).items() for t in _above_minimum(part)]
    terms.append(Term((), fit.constant))
    meta = {**spec.meta, f"{resource}_calibration": {**fit.as_meta(), "measured_with": measured_with}}
    return spec.replace(costs={**spec.costs, resource: tuple(terms)}, meta=meta)
