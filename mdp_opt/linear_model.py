"""The marginal (RLT) linearisation of a spec, as solver-neutral arrays.

Every exact solver backend (CP-SAT, HiGHS) translates the same `LinearModel`:

- one-hot `z[d, k]` per dim with `sum_k z[d, k] = 1`;
- a binary `y[b]` per block;
- for each (dim, block) pair used by a blocked term, gated one-hots `g[d, b, k] = y[b] AND z[d, k]`:
  `g <= z`, `g >= y + z - 1`, and `sum_k g[d, b, k] = y[b]` (valid for integral points and
  tighter than `g <= y` in the relaxation); one family per pair, shared by all its terms;
- for each (set of dims, block) used by an arity >= 2 term, joint variables `w >= 0` over the
  table cells, with one marginal equality per named dim and choice: summing `w` over the other
  dims gives that dim's gate (`g`, or `z` when unblocked). Terms over the same dims in the same
  block share one family. For integral `z, y` this forces `w` onto the single hot cell (all zero
  when the block is removed, since then every `g` is 0);
- arity 1 terms weight `g` (or `z`) directly, arity 0 terms are constants (`constant * y[b]`
  when blocked).

Every variable lies in [0, 1], and in every integral solution all of them are 0/1. Only `z` and
`y` must be declared integer in a MILP (`integral`); the others are integral whenever those are.
The objective and each budgeted resource's cost are `Linear` expressions; budget rows are left to
the backend, which may need to scale and round them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .deadline import Deadline
from .spec import Spec, SpecError


@dataclass(frozen=True)
class Linear:
    """`coef @ x + constant` over the model's variables (dense coefficients)."""

    coef: np.ndarray
    constant: float

    def value(self, x: np.ndarray) -> float:
        return float(self.coef @ x + self.constant)


@dataclass(frozen=True)
class Family:
    """A group of variables of which at most one is 1 in any integral solution.

    kind is "z" (one-hot of `dim`), "y" (block binary), "g" (gated one-hot of `dim` in `block`)
    or "w" (joint cells over `dims` in `block`, or unblocked). `index` holds variable indices
    shaped like the choices of `dims` (a 0-d array for "y").
    """

    kind: str
    index: np.ndarray
    dims: tuple[str, ...]
    block: str | None


@dataclass(frozen=True)
class LinearModel:
    """Variables, structural rows (coefficients +-1, integral bounds), objective and budgeted costs.

    Rows are stored in CSR form: row `i` has entries `row_index[row_start[i]:row_start[i+1]]`
    with coefficients `row_coef[...]` and `row_lower[i] <= a_i x <= row_upper[i]`.
    """

    num_vars: int
    integral: np.ndarray
    row_start: np.ndarray
    row_index: np.ndarray
    row_coef: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    objective: Linear
    costs: Mapping[str, Linear]
    families: tuple[Family, ...]
    z: Mapping[str, np.ndarray]
    y: Mapping[str, int]

    def label(self, var: int) -> str:
        """A readable name of variable `var` (for debugging; solvers get no names, which may not be valid
        identifiers for them)."""
        for f in self.families:
            cells = f.index.ravel() if f.index.ndim else f.index.reshape(1)
            if cells[0] <= var <= cells[-1]:
                cell = np.unravel_index(var - int(cells[0]), f.index.shape) if f.index.ndim else ()
                return f"{f.kind}[{','.join(f.dims)}{'|' + f.block if f.block else ''}]{list(map(int, cell)) or ''}"
        raise IndexError(f"variable {var} is not in the model (it has {self.num_vars})")

    @property
    def num_rows(self) -> int:
        return len(self.row_lower)

    def rows(self):
        """Each row as (variable indices, coefficients, lower, upper)."""
        for i in range(self.num_rows):
            a, b = self.row_start[i], self.row_start[i + 1]
            yield self.row_index[a:b], self.row_coef[a:b], self.row_lower[i], self.row_upper[i]

    def values(self, choice: Mapping[str, int], active: Mapping[str, bool]) -> np.ndarray:
        """Every variable's value (0/1) for a configuration: the full solution a hint needs."""
        x = np.zeros(self.num_vars)
        on = {b: bool(a) for b, a in active.items()}
        for f in self.families:
            if f.kind == "y":
                x[f.index] = on[f.block]
            elif f.block is None or on[f.block]:
                x[f.index[tuple(choice[d] for d in f.dims)]] = 1.0
        return x

    def decode(self, x: np.ndarray) -> tuple[dict[str, int], dict[str, bool]]:
        """The configuration of a (near-)integral solution: argmax of each one-hot, y > 0.5."""
        choice = {d: int(np.argmax(x[idx])) for d, idx in self.z.items()}
        active = {b: bool(x[i] > 0.5) for b, i in self.y.items()}
        return choice, active


def build(spec: Spec, budgets: Mapping[str, float], deadline: Deadline | None = None) -> LinearModel:
    """The marginal linearisation of `spec` with cost expressions for the budgeted resources. With a
    `deadline`, building checks it as it goes (raising `TimeUp`): large models take seconds to build."""
    return _Builder(spec, deadline or Deadline(None)).finish(budgets)


class _Builder:
    def __init__(self, spec: Spec, deadline: Deadline) -> None:
        self.spec = spec
        self.deadline = deadline
        self.count = 0
        self.integral: list[np.ndarray] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []
        self.families: list[Family] = []
        self.order = {n: i for i, n in enumerate(spec.dim_names)}
        self.z = {d.name: self._new_family("z", (d.name,), None, integral=True) for d in spec.dims}
        self.y = {b: int(self._new_family("y", (), b, integral=True)) for b in spec.block_names}
        self.g: dict[tuple[str, str], np.ndarray] = {}
        self.w: dict[tuple[tuple[str, ...], str | None], np.ndarray] = {}
        for d in spec.dims:
            self.rows.append((list(self.z[d.name]), [1.0] * d.size, 1.0, 1.0))

    def _new_family(self, kind: str, dims: tuple[str, ...], block: str | None, integral: bool) -> np.ndarray:
        shape = tuple(self.spec.dim(d).size for d in dims)
        size = int(np.prod(shape, dtype=np.int64))
        index = np.arange(self.count, self.count + size).reshape(shape)
        self.count += size
        self.integral.append(np.full(size, integral))
        self.families.append(Family(kind, index, dims, block))
        return index

    def gate(self, dim: str, block: str | None) -> np.ndarray:
        """One-hot of `dim` that is all zero while `block` is removed (z itself when unblocked)."""
        if block is None:
            return self.z[dim]
        key = (dim, block)
        if key not in self.g:
            g = self._new_family("g", (dim,), block, integral=False)
            z, y = self.z[dim], self.y[block]
            for gk, zk in zip(g, z):
                self.rows.append(([gk, zk], [1.0, -1.0], -np.inf, 0.0))        # g <= z
                self.rows.append(([gk, y, zk], [1.0, -1.0, -1.0], -1.0, np.inf))  # g >= y + z - 1
            self.rows.append((list(g) + [y], [1.0] * len(g) + [-1.0], 0.0, 0.0))  # sum g = y
            self.g[key] = g
        return self.g[key]

    def joint(self, dims: tuple[str, ...], block: str | None) -> np.ndarray:
        """Joint cells over `dims` (in spec order) whose marginals are the dims' gates."""
        key = (dims, block)
        if key not in self.w:
            self.deadline.check()
            w = self._new_family("w", dims, block, integral=False)
            for axis, d in enumerate(dims):
                moved = np.moveaxis(w, axis, 0)
                for k, gk in enumerate(self.gate(d, block)):
                    cells = list(moved[k].ravel())
                    self.rows.append((cells + [int(gk)], [1.0] * len(cells) + [-1.0], 0.0, 0.0))
            self.w[key] = w
        return self.w[key]

    def add_term(self, coef: np.ndarray, term) -> float:
        """Add a term's table to `coef`; return its constant part (unblocked arity 0)."""
        if not term.dims:
            if term.block is None:
                return float(term.table)
            coef[self.y[term.block]] += float(term.table)
            return 0.0
        if len(term.dims) == 1:
            index = self.gate(term.dims[0], term.block)
        else:
            canonical = tuple(sorted(term.dims, key=self.order.__getitem__))
            family = self.joint(canonical, term.block)
            index = family.transpose([canonical.index(d) for d in term.dims])
        np.add.at(coef, index.ravel(), term.table.ravel())
        return 0.0

    def finish(self, budgets: Mapping[str, float]) -> LinearModel:
        for r in budgets:
            if r not in self.spec.costs:
                raise SpecError(f"budget.{r}: resource {r!r} is not in the spec's costs ({sorted(self.spec.costs)})")
        # Create every family first so that coefficient vectors have their final length.
        for resource, _, term in self.spec.terms():
            if term.dims and (resource is None or resource in budgets):
                self._touch(term)
        objective = self._linear(self.spec.objective)
        costs = {r: self._linear(self.spec.costs[r]) for r in budgets}
        starts = np.cumsum([0] + [len(r[0]) for r in self.rows])
        return LinearModel(
            num_vars=self.count,
            integral=np.concatenate(self.integral) if self.integral else np.zeros(0, dtype=bool),
            row_start=starts.astype(np.int64),
            row_index=np.array([i for r in self.rows for i in r[0]], dtype=np.int64),
            row_coef=np.array([c for r in self.rows for c in r[1]], dtype=np.float64),
            row_lower=np.array([r[2] for r in self.rows], dtype=np.float64),
            row_upper=np.array([r[3] for r in self.rows], dtype=np.float64),
            objective=objective, costs=costs, families=tuple(self.families), z=self.z, y=self.y)

    def _touch(self, term) -> None:
        if len(term.dims) == 1:
            self.gate(term.dims[0], term.block)
        else:
            self.joint(tuple(sorted(term.dims, key=self.order.__getitem__)), term.block)

    def _linear(self, terms) -> Linear:
        coef = np.zeros(self.count)
        constant = sum(self.add_term(coef, t) for t in terms)
        return Linear(coef, float(constant))
