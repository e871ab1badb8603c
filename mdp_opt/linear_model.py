"""The exact linearisation of a spec (marginal, or RLT, families; small components as one-hots over
their configurations), as solver-neutral arrays.

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
  when blocked);
- except in a small component: dims and blocks that the model's terms link to each other, with at
  most `COMPONENT_CONFIGURATIONS` configurations and at most `COMPONENT_GROWTH` times as many as the
  variables of the families above that it replaces, get one family `c` instead, a one-hot over the
  configurations of the component (its dims' choices and its blocks' states) that replaces its dims'
  `z`; a block's `y` equals the sum of `c` over the configurations where it is active. Every term
  over the component's dims weights `c`. Its relaxation is the convex hull of the component's
  configurations (the marginal families are only as tight on trees), and a solver sees each
  configuration's whole cost in one variable. Measured (tenth session): hard seed 47 (twelve
  attention components of 48 configurations after the presolve, three budgets) went from no proof in
  60 s to about 1 s with cpsat; on hard seed 17 (components of 200-2,200 configurations, trees) the
  configuration families without the growth limit made cpsat 1.7x slower.

Every variable lies in [0, 1], and in every integral solution all of them are 0/1. Only `z`, `c` and
`y` must be declared integer in a MILP (`integral`); the others are integral whenever those are.
The objective and each budgeted resource's cost are `Linear` expressions; budget rows are left to
the backend, which may need to scale and round them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .deadline import Deadline
from .spec import Spec, SpecError

# the largest component (configurations of its dims and blocks) that gets one variable per configuration
COMPONENT_CONFIGURATIONS = 1024
# ... and only when that is at most this many times the variables of the marginal families it replaces
COMPONENT_GROWTH = 4


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

    kind is "z" (one-hot of `dim`), "y" (block binary), "g" (gated one-hot of `dim` in `block`),
    "w" (joint cells over `dims` in `block`, or unblocked) or "c" (the configurations of a component:
    `dims`, then `blocks` as axes of two states, removed then active). `index` holds variable indices
    shaped like the choices of `dims` (then the states of `blocks`; a 0-d array for "y").
    """

    kind: str
    index: np.ndarray
    dims: tuple[str, ...]
    block: str | None
    blocks: tuple[str, ...] = ()


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
    dim_names: tuple[str, ...]

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
            elif f.kind == "c":
                x[f.index[tuple(choice[d] for d in f.dims) + tuple(int(on[b]) for b in f.blocks)]] = 1.0
            elif f.block is None or on[f.block]:
                x[f.index[tuple(choice[d] for d in f.dims)]] = 1.0
        return x

    def decode(self, x: np.ndarray) -> tuple[dict[str, int], dict[str, bool]]:
        """The configuration of a (near-)integral solution: argmax of each one-hot (`z`, or a component's
        `c`), y > 0.5."""
        choice = {d: int(np.argmax(x[idx])) for d, idx in self.z.items()}
        for f in self.families:
            if f.kind == "c":
                cell = np.unravel_index(int(np.argmax(x[f.index.ravel()])), f.index.shape)
                choice.update(zip(f.dims, map(int, cell)))
        active = {b: bool(x[i] > 0.5) for b, i in self.y.items()}
        return {d: choice[d] for d in self.dim_names}, active


def build(spec: Spec, budgets: Mapping[str, float], deadline: Deadline | None = None,
          component_configurations: int = COMPONENT_CONFIGURATIONS,
          component_growth: float = COMPONENT_GROWTH) -> LinearModel:
    """The exact linearisation of `spec` with cost expressions for the budgeted resources. With a
    `deadline`, building checks it as it goes (raising `TimeUp`): large models take seconds to build.
    A component gets one variable per configuration when it has at most `component_configurations` of them
    (0: none does) and at most `component_growth` times the variables of the marginal families it replaces."""
    components = _small_components(spec, budgets, component_configurations, component_growth)
    return _Builder(spec, components, deadline or Deadline(None)).finish(budgets)


class _Builder:
    def __init__(self, spec: Spec, components: list[tuple[tuple[str, ...], tuple[str, ...]]],
                 deadline: Deadline) -> None:
        self.spec = spec
        self.deadline = deadline
        self.count = 0
        self.integral: list[np.ndarray] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []
        self.families: list[Family] = []
        self.order = {n: i for i, n in enumerate(spec.dim_names)}
        in_components = {d for dims, _ in components for d in dims}
        self.z = {d.name: self._new_family("z", (d.name,), None, integral=True)
                  for d in spec.dims if d.name not in in_components}
        self.y = {b: int(self._new_family("y", (), b, integral=True)) for b in spec.block_names}
        self.g: dict[tuple[str, str], np.ndarray] = {}
        self.w: dict[tuple[tuple[str, ...], str | None], np.ndarray] = {}
        self.component: dict[str, Family] = {}      # dim -> its component's "c" family, where it has one
        for d, z in self.z.items():
            self.rows.append((list(z), [1.0] * len(z), 1.0, 1.0))
        for dims, blocks in components:
            self.configurations(dims, blocks)

    def _new_family(self, kind: str, dims: tuple[str, ...], block: str | None, integral: bool,
                    blocks: tuple[str, ...] = ()) -> np.ndarray:
        shape = tuple(self.spec.dim(d).size for d in dims) + (2,) * len(blocks)
        size = int(np.prod(shape, dtype=np.int64))
        index = np.arange(self.count, self.count + size).reshape(shape)
        self.count += size
        self.integral.append(np.full(size, integral))
        self.families.append(Family(kind, index, dims, block, blocks))
        return index

    def configurations(self, dims: tuple[str, ...], blocks: tuple[str, ...]) -> None:
        """A one-hot over the configurations of a component (in place of its dims' one-hots), each block's
        binary the sum over the configurations where it is active."""
        self.deadline.check()
        c = self._new_family("c", dims, None, integral=True, blocks=blocks)
        self.rows.append((list(c.ravel()), [1.0] * c.size, 1.0, 1.0))
        for axis, b in enumerate(blocks, start=len(dims)):
            cells = list(np.moveaxis(c, axis, 0)[1].ravel())
            self.rows.append((cells + [self.y[b]], [1.0] * len(cells) + [-1.0], 0.0, 0.0))
        family = self.families[-1]
        for d in dims:
            self.component[d] = family

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
        if term.dims[0] in self.component:
            family = self.component[term.dims[0]]
            coef[family.index.ravel()] += self._on_configurations(term, family).ravel()
            return 0.0
        if len(term.dims) == 1:
            index = self.gate(term.dims[0], term.block)
        else:
            canonical = tuple(sorted(term.dims, key=self.order.__getitem__))
            family = self.joint(canonical, term.block)
            index = family.transpose([canonical.index(d) for d in term.dims])
        np.add.at(coef, index.ravel(), term.table.ravel())
        return 0.0

    @staticmethod
    def _on_configurations(term, family: Family) -> np.ndarray:
        """`term`'s value at every configuration of `family`'s component (0 where its block is removed)."""
        order = sorted(range(len(term.dims)), key=lambda i: family.dims.index(term.dims[i]))
        shape = [1] * len(family.dims)
        for i in order:
            shape[family.dims.index(term.dims[i])] = term.table.shape[i]
        table = term.table.transpose(order).reshape(shape)
        cells = np.zeros(family.index.shape)
        if term.block is None:
            cells += table.reshape(shape + [1] * len(family.blocks))
        else:
            active = np.moveaxis(cells, len(family.dims) + family.blocks.index(term.block), 0)[1]   # a view
            active += table.reshape(shape + [1] * (len(family.blocks) - 1))
        return cells

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
            objective=objective, costs=costs, families=tuple(self.families), z=self.z, y=self.y,
            dim_names=self.spec.dim_names)

    def _touch(self, term) -> None:
        if term.dims[0] in self.component:
            return
        if len(term.dims) == 1:
            self.gate(term.dims[0], term.block)
        else:
            self.joint(tuple(sorted(term.dims, key=self.order.__getitem__)), term.block)

    def _linear(self, terms) -> Linear:
        coef = np.zeros(self.count)
        constant = sum(self.add_term(coef, t) for t in terms)
        return Linear(coef, float(constant))


def _small_components(spec: Spec, budgets: Mapping[str, float], largest: int, growth: float
                      ) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(dims, blocks) of each component with at least two of them, at most `largest` configurations and at
    most `growth` times the variables of its marginal families: dims and blocks linked by the terms of the
    objective and the budgeted costs (a term links its dims and its block), in spec order."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(node: tuple[str, str]) -> tuple[str, str]:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for resource, _, term in spec.terms():
        if not term.dims or not (resource is None or resource in budgets):
            continue
        nodes = [("dim", d) for d in term.dims] + ([("block", term.block)] if term.block else [])
        for node in nodes[1:]:
            parent[root(node)] = root(nodes[0])
        root(nodes[0])
    members: dict[tuple[str, str], set[tuple[str, str]]] = {}
    marginal: dict[tuple[str, str], int] = {}      # component root -> variables of its marginal families
    for node in list(parent):
        members.setdefault(root(node), set()).add(node)
        marginal[root(node)] = marginal.get(root(node), 0) + (spec.dim(node[1]).size if node[0] == "dim" else 1)
    families = set()
    for resource, _, term in spec.terms():
        if term.dims and (resource is None or resource in budgets):
            if len(term.dims) > 1:
                families.add((tuple(sorted(term.dims)), term.block))
            if term.block is not None:
                families.update(((d,), term.block) for d in term.dims)       # gated one-hots
    for dims, block in families:
        marginal[root(("dim", dims[0]))] += math.prod(spec.dim(d).size for d in dims)
    position = {**{("dim", d): i for i, d in enumerate(spec.dim_names)},
                **{("block", b): i for i, b in enumerate(spec.block_names)}}
    out = []
    for key, nodes in members.items():
        ordered = sorted(nodes, key=position.__getitem__)
        dims = tuple(name for kind, name in ordered if kind == "dim")
        blocks = tuple(name for kind, name in ordered if kind == "block")
        size = 2 ** len(blocks) * math.prod(spec.dim(d).size for d in dims)
        if len(nodes) >= 2 and size <= min(largest, growth * marginal[key]):
            out.append((dims, blocks))
    out.sort(key=lambda c: position[("dim", c[0][0])])
    return out
