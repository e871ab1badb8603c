"""The problem spec: dims, blocks, objective and cost terms, budgets.

`Spec` is immutable and validated on construction; `load`/`save` and
`Spec.from_dict`/`Spec.to_dict` give the JSON form of SPEC_FORMAT.md (version 1).
Every rule violation raises `SpecError` whose message starts with the field path.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

FORMAT = "mdp-opt.spec"
VERSION = 1
_TOP_LEVEL_KEYS = {"format", "version", "name", "dims", "blocks", "objective", "costs", "budgets", "meta"}

# What the math needs, checked once on every spec: with entries and budgets of magnitude at most
# MAX_MAGNITUDE (and zero or at least MIN_MAGNITUDE), no sum, product with a multiplier or scaled
# integer any solver forms can overflow or vanish.
MAX_MAGNITUDE = 1e100
MIN_MAGNITUDE = 1e-100
MAX_CHOICE = 2**31 - 1           # a kept count is a channel or head count
MAX_NAME_LENGTH = 1000
# What a file may hold by default; `load(..., max_bytes=, max_entries=)` (or the CLI's --max-spec-bytes)
# raises them for larger problems.
DEFAULT_MAX_BYTES = 64 * 1024**2
DEFAULT_MAX_ENTRIES = 10**7


class SpecError(ValueError):
    """A spec (or a budget) breaks a rule; the message names the field and the fix."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _finite_float(x: Any, path: str) -> float:
    """`x` as a float within the magnitudes the math needs (see MAX_MAGNITUDE)."""
    if not _is_number(x):
        raise SpecError(f"{path}: expected a finite number, got {type(x).__name__} {x!r:.40}")
    try:
        value = float(x)
    except OverflowError:
        raise SpecError(f"{path}: number {x!r:.40} is too large for a float") from None
    if not math.isfinite(value):
        raise SpecError(f"{path}: expected a finite number, got {value}")
    check_magnitude(np.array(value), path)
    return value


def check_magnitude(values: np.ndarray, path: str) -> None:
    """Raise SpecError unless every entry is 0 or has a magnitude in [MIN_MAGNITUDE, MAX_MAGNITUDE]."""
    magnitude = np.abs(values)
    if magnitude.size and magnitude.max() > MAX_MAGNITUDE:
        raise SpecError(f"{path}: {float(values.flat[int(np.argmax(magnitude))])!r} is too large; entries must be at most "
                        f"{MAX_MAGNITUDE:g} in magnitude (rescale the resource or objective: only ratios matter)")
    tiny = (magnitude > 0) & (magnitude < MIN_MAGNITUDE)
    if tiny.any():
        raise SpecError(f"{path}: {float(values.flat[int(np.argmax(tiny))])!r} is too small; nonzero entries must be at "
                        f"least {MIN_MAGNITUDE:g} in magnitude (write 0, or rescale)")


def check_name(name: Any, path: str) -> None:
    """A name every backend can carry: a non-empty string of valid Unicode (no lone surrogates), not too long."""
    if not isinstance(name, str) or not name:
        raise SpecError(f"{path}: expected a non-empty string, got {name!r:.40}")
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(f"{path}: name of {len(name)} characters; at most {MAX_NAME_LENGTH} are allowed")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(f"{path}: {name!r:.60} is not valid Unicode (a lone surrogate); use valid characters") from None


@dataclass(frozen=True)
class Dim:
    """One prunable width: an ordered list of allowed kept counts."""

    name: str
    choices: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices) if not isinstance(self.choices, tuple) else self.choices)

    @property
    def size(self) -> int:
        return len(self.choices)


@dataclass(frozen=True)
class Block:
    """A removable unit; terms naming it count only while it is active."""

    name: str


@dataclass(frozen=True, eq=False)
class Term:
    """A lookup table over the choice indices of `dims` (in that order), optionally gated by `block`."""

    dims: tuple[str, ...]
    table: np.ndarray
    block: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(self.dims))
        table = self.table
        if not isinstance(table, np.ndarray) or table.dtype != np.float64 or table.flags.writeable:
            table = np.array(table, dtype=np.float64)
            table.setflags(write=False)
        object.__setattr__(self, "table", table)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Term):
            return NotImplemented
        return (self.dims == other.dims and self.block == other.block
                and self.table.shape == other.table.shape and bool(np.array_equal(self.table, other.table)))

    def __hash__(self) -> int:
        return hash((self.dims, self.block, self.table.shape, self.table.tobytes()))


@dataclass(frozen=True)
class Spec:
    """A pruning problem. Construct it directly or with `Spec.from_dict` / `load`.

    Args:
        dims: the prunable widths.
        objective: terms whose active entries sum to the value to maximise.
        costs: resource name -> terms whose active entries sum to that resource's cost.
        blocks: removable units (names or `Block`s).
        budgets: resource name -> default budget (a `solve()` budget overrides it).
        name, meta: free-form; ignored by solvers.
    """

    dims: tuple[Dim, ...]
    objective: tuple[Term, ...]
    costs: Mapping[str, tuple[Term, ...]]
    blocks: tuple[Block, ...] = ()
    budgets: Mapping[str, float] = field(default_factory=dict)
    name: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        dims = tuple(self.dims)
        for i, d in enumerate(dims):
            if not isinstance(d, Dim):
                raise SpecError(f"dims[{i}]: expected a Dim, got {type(d).__name__}")
        blocks = tuple(b if isinstance(b, Block) else Block(b) for b in self.blocks)
        costs = {r: tuple(ts) for r, ts in dict(self.costs).items()}
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "objective", tuple(self.objective))
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "costs", MappingProxyType(costs))
        object.__setattr__(self, "budgets", MappingProxyType(
            {r: _finite_float(b, f"budgets.{r}") for r, b in dict(self.budgets).items()}))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta or {})))
        _validate(self)

    # ---- lookups -------------------------------------------------------------
    @functools.cached_property
    def dim_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    @functools.cached_property
    def block_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    @functools.cached_property
    def _dim_index(self) -> dict[str, int]:
        return {d.name: i for i, d in enumerate(self.dims)}

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(self.costs)

    def dim(self, name: str) -> Dim:
        """The dim called `name` (KeyError when there is none)."""
        return self.dims[self._dim_index[name]]

    def terms(self) -> Iterable[tuple[str | None, int, Term]]:
        """Every term as (resource or None for the objective, index, term)."""
        for i, t in enumerate(self.objective):
            yield None, i, t
        for r, ts in self.costs.items():
            for i, t in enumerate(ts):
                yield r, i, t

    def full_configuration(self) -> tuple[dict[str, int], dict[str, bool]]:
        """The unpruned configuration: every dim at its largest choice, every block active."""
        return ({d.name: d.size - 1 for d in self.dims}, {b.name: True for b in self.blocks})

    def full_costs(self) -> dict[str, float]:
        """Cost of each resource for the unpruned model (largest choices, all blocks active)."""
        full = tuple(d.size - 1 for d in self.dims)
        index = {n: i for i, n in enumerate(self.dim_names)}
        return {r: float(sum(t.table[tuple(full[index[n]] for n in t.dims)] for t in ts))
                for r, ts in self.costs.items()}

    def full_cost(self, resource: str) -> float:
        if resource not in self.costs:
            raise SpecError(f"resource {resource!r}: not in the spec's costs (it has {list(self.costs)})")
        return self.full_costs()[resource]

    def replace(self, **changes: Any) -> "Spec":
        """A copy with some fields changed (validated again)."""
        fields = dict(dims=self.dims, objective=self.objective, costs=self.costs, blocks=self.blocks,
                      budgets=self.budgets, name=self.name, meta=self.meta)
        fields.update(changes)
        return Spec(**fields)

    def __reduce__(self):
        """Pickle (for worker processes) through the constructor: the mappings are read-only views."""
        return (Spec, (self.dims, self.objective, dict(self.costs), self.blocks, dict(self.budgets), self.name,
                       dict(self.meta)))

    # ---- JSON ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, max_entries: int = DEFAULT_MAX_ENTRIES) -> "Spec":
        """Build a spec from the JSON object of SPEC_FORMAT.md; any violation raises SpecError."""
        return _from_dict(data, max_entries)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of SPEC_FORMAT.md (integral floats written as integers)."""
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self.name:
            out["name"] = self.name
        out["dims"] = [{"name": d.name, "choices": list(d.choices)} for d in self.dims]
        out["blocks"] = list(self.block_names)
        out["objective"] = [_term_to_dict(t) for t in self.objective]
        out["costs"] = {r: [_term_to_dict(t) for t in ts] for r, ts in self.costs.items()}
        if self.budgets:
            out["budgets"] = {r: _json_number(b) for r, b in self.budgets.items()}
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    def __repr__(self) -> str:
        return (f"Spec({self.name!r}: {len(self.dims)} dims, {len(self.blocks)} blocks, "
                f"{len(self.objective)} objective terms, costs {{"
                + ", ".join(f"{r}: {len(ts)} terms" for r, ts in self.costs.items()) + "}"
                + (f", budgets {dict(self.budgets)}" if self.budgets else "") + ")")


def importance_table(scores: Sequence[float], choices: Sequence[int]) -> np.ndarray:
    """Arity-1 importance table: for each allowed kept count k, the sum of the k largest scores."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise SpecError("scores: expected a 1-D sequence of finite numbers")
    ks = list(choices)
    if not ks or any(not isinstance(k, (int, np.integer)) or k <= 0 for k in ks):
        raise SpecError(f"choices: expected positive integer kept counts, got {ks}")
    if max(ks) > len(s):
        raise SpecError(f"choices: largest kept count {max(ks)} exceeds the {len(s)} scores given")
    cum = np.concatenate([[0.0], np.cumsum(s)])
    return cum[np.asarray(ks)]


def load(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, max_entries: int = DEFAULT_MAX_ENTRIES) -> Spec:
    """Load a spec from a JSON file; a malformed file raises SpecError. Files over `max_bytes` or tables over
    `max_entries` entries in all are refused before they are parsed or built (raise the limits for larger
    problems)."""
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        raise SpecError(f"{path}: cannot read the file ({e.strerror})") from None
    if size > max_bytes:
        raise SpecError(f"{path}: the file has {size:,} bytes, over the limit of {max_bytes:,}; pass "
                        "max_bytes= to mdp_opt.load (--max-spec-bytes on the command line) to load it anyway")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{path}: cannot read the file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    return loads(text, source=str(path), max_entries=max_entries)


def loads(text: str, source: str = "<string>", max_entries: int = DEFAULT_MAX_ENTRIES) -> Spec:
    """Parse a spec from JSON text (duplicate keys in an object are an error: one would be ignored)."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError) as e:
        raise SpecError(f"{source}: not valid JSON ({e})") from None
    return _from_dict(data, max_entries)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SpecError(f"{key}: the key appears twice in one JSON object; keep one (JSON readers silently "
                            "keep the last)")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise SpecError(f"{name}: not a JSON number; every entry must be a finite number")


def save(spec: Spec, path: str | Path) -> None:
    """Write a spec as JSON, atomically (a reader never sees a half-written file); `load` gives back an
    equal spec."""
    from .files import atomic_write_text
    atomic_write_text(path, dumps(spec))


def dumps(spec: Spec, indent: int | None = None) -> str:
    return json.dumps(spec.to_dict(), indent=indent, allow_nan=False)


# ---- internals ---------------------------------------------------------------------------

def _json_number(x: float) -> int | float:
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def _term_to_dict(t: Term) -> dict[str, Any]:
    table = t.table
    as_list = _json_number(float(table)) if table.ndim == 0 else np.vectorize(_json_number, otypes=[object])(table).tolist()
    out: dict[str, Any] = {"dims": list(t.dims), "table": as_list}
    if t.block is not None:
        out["block"] = t.block
    return out


def _validate(spec: Spec) -> None:
    if not isinstance(spec.name, str):
        raise SpecError(f"name: expected a string, got {type(spec.name).__name__}")
    sizes: dict[str, int] = {}
    for i, d in enumerate(spec.dims):
        path = f"dims[{i}]"
        check_name(d.name, f"{path}.name")
        if d.name in sizes:
            raise SpecError(f"{path}.name: dim name {d.name!r} is used twice; dim names must be unique")
        _validate_choices(d.choices, f"{path}.choices")
        sizes[d.name] = len(d.choices)
    seen: set[str] = set()
    for i, b in enumerate(spec.blocks):
        check_name(b.name, f"blocks[{i}]")
        if b.name in seen:
            raise SpecError(f"blocks[{i}]: block name {b.name!r} is used twice; block names must be unique")
        seen.add(b.name)
    for r in spec.costs:
        check_name(r, "costs: a resource name")
    for resource, i, term in spec.terms():
        path = f"objective[{i}]" if resource is None else f"costs.{resource}[{i}]"
        _validate_term(term, path, sizes, seen, is_cost=resource is not None)
    for r in spec.budgets:
        if r not in spec.costs:
            raise SpecError(f"budgets.{r}: resource {r!r} has no cost terms; "
                            f"budgets may only name resources in costs ({sorted(spec.costs)})")


def _validate_choices(choices: Any, path: str) -> None:
    if not isinstance(choices, (tuple, list)) or not choices:
        raise SpecError(f"{path}: expected a non-empty list of positive integers")
    prev = 0
    for j, c in enumerate(choices):
        if not isinstance(c, (int, np.integer)) or isinstance(c, (bool, np.bool_)):
            raise SpecError(f"{path}[{j}]: expected a positive integer kept count, got {c!r:.40}")
        if c <= 0:
            raise SpecError(f"{path}[{j}]: kept counts must be positive (>= 1), got {c}; "
                            "removing a width entirely is done with a block")
        if c > MAX_CHOICE:
            raise SpecError(f"{path}[{j}]: kept count {str(c)[:12]}... ({len(str(c))} digits) is larger than any "
                            f"width; at most {MAX_CHOICE}")
        if c <= prev:
            raise SpecError(f"{path}[{j}]: choices must be strictly increasing, got {c} after {prev}")
        prev = c


def _validate_term(term: Term, path: str, sizes: Mapping[str, int], blocks: set[str], is_cost: bool) -> None:
    if not isinstance(term, Term):
        raise SpecError(f"{path}: expected a Term, got {type(term).__name__}")
    for j, n in enumerate(term.dims):
        if not isinstance(n, str) or n not in sizes:
            raise SpecError(f"{path}.dims[{j}]: unknown dim {n!r}; declare it in dims first")
    if len(set(term.dims)) != len(term.dims):
        raise SpecError(f"{path}.dims: a dim is named twice in {list(term.dims)}; each dim may appear once")
    if term.block is not None and not isinstance(term.block, str):
        raise SpecError(f"{path}.block: expected a block name or None, got {type(term.block).__name__}")
    expected = tuple(sizes[n] for n in term.dims)
    if term.table.shape != expected:
        raise SpecError(f"{path}.table: shape {term.table.shape} does not match dims {term.dims} "
                        f"with choices {' x '.join(map(str, expected)) or '() (a bare number)'}")
    if not np.all(np.isfinite(term.table)):
        raise SpecError(f"{path}.table: every entry must be a finite number (found NaN or infinity)")
    check_magnitude(term.table, f"{path}.table")
    if is_cost and np.any(term.table < 0):
        raise SpecError(f"{path}.table: cost entries must be >= 0 (found {term.table.min()})")
    if term.block is not None and term.block not in blocks:
        raise SpecError(f"{path}.block: unknown block {term.block!r}; declare it in blocks first")


MAX_ARITY = 32   # numpy's limit on array dimensions: a term may name at most this many dims


def _nesting_depth(node: Any) -> int:
    """How deep lists nest along first elements (stops counting past MAX_ARITY)."""
    depth = 0
    while isinstance(node, list) and depth <= MAX_ARITY:
        depth += 1
        node = node[0] if node else None
    return depth


def _nested_shape(node: Any, depth: int = 0) -> tuple[int, ...] | None:
    """Shape of a regular nested list, () for a scalar, None when ragged or nested deeper than MAX_ARITY."""
    if not isinstance(node, list):
        return ()
    if depth > MAX_ARITY:
        return None
    if not node:
        return (0,)
    inner = [_nested_shape(x, depth + 1) for x in node]
    if any(s is None or s != inner[0] for s in inner):
        return None
    return (len(node),) + inner[0]


def _parse_table(node: Any, path: str, room: int) -> np.ndarray:
    """A nested list of finite numbers (or one number) as an array; its shape is checked by `_validate`.
    `room`: how many entries the spec may still hold (see DEFAULT_MAX_ENTRIES)."""
    if _nesting_depth(node) > MAX_ARITY:
        raise SpecError(f"{path}: lists nested more than {MAX_ARITY} deep; a term may name at most {MAX_ARITY} dims")
    shape = _nested_shape(node)
    if shape is None:
        raise SpecError(f"{path}: a ragged nested list (or one nested over {MAX_ARITY} deep); every row of a "
                        "table must have the same length")
    if math.prod(shape) > room:
        raise SpecError(f"{path}: the spec's tables hold more entries in all than max_entries allows (default "
                        f"{DEFAULT_MAX_ENTRIES:,}); pass max_entries= to mdp_opt.load / loads to load it anyway")
    flat: list[Any] = [node]
    for _ in shape:
        flat = [x for sub in flat for x in sub]
    values = [_finite_float(x, path + " entry") for x in flat]
    return np.array(values, dtype=np.float64).reshape(shape)


def _object(value: Any, path: str, keys: set[str], required: tuple[str, ...]) -> dict:
    """`value` as a JSON object with only `keys` and every key of `required`."""
    if not isinstance(value, dict):
        raise SpecError(f"{path}: expected an object with {', '.join(map(repr, required))}")
    extra = sorted(set(value) - keys, key=str)
    if extra:
        raise SpecError(f"{path}.{extra[0]}: unknown key; allowed: {sorted(keys)}")
    for key in required:
        if key not in value:
            raise SpecError(f"{path}.{key}: missing; it is required")
    return value


def _list(value: Any, path: str, what: str) -> list:
    if not isinstance(value, list):
        raise SpecError(f"{path}: expected a list of {what}, got {type(value).__name__}")
    return value


def _from_dict(data: Any, max_entries: int = DEFAULT_MAX_ENTRIES) -> Spec:
    """Build a Spec from its JSON object. Only the JSON form is checked here (objects, lists, keys, numbers);
    every rule on the meaning (names, choices, shapes, references) is checked once, by `_validate`."""
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a JSON object at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS, key=str)
    if unknown:
        raise SpecError(f"{unknown[0]}: unknown top-level key (allowed: {sorted(_TOP_LEVEL_KEYS)}); "
                        "put free-form data under 'meta'")
    if data.get("format") != FORMAT or isinstance(data.get("format"), bool):
        raise SpecError(f"format: must be {FORMAT!r}, got {data.get('format')!r:.40}")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
        raise SpecError(f"version: must be {VERSION}, got {version!r:.40}")
    for key in ("dims", "objective", "costs"):
        if key not in data:
            raise SpecError(f"{key}: missing; it is required")

    dims = []
    for i, d in enumerate(_list(data["dims"], "dims", "dims")):
        d = _object(d, f"dims[{i}]", {"name", "choices"}, ("name", "choices"))
        dims.append(Dim(d["name"], tuple(_list(d["choices"], f"dims[{i}].choices", "kept counts"))))
    blocks = _list(data.get("blocks") or [], "blocks", "block names")

    entries = 0

    def term(t: Any, path: str) -> Term:
        nonlocal entries
        t = _object(t, path, {"dims", "table", "block"}, ("dims", "table"))
        block = t.get("block")
        if block is not None and not isinstance(block, str):
            raise SpecError(f"{path}.block: expected a block name or null, got {type(block).__name__}")
        table = _parse_table(t["table"], f"{path}.table", max_entries - entries)
        entries += table.size
        return Term(tuple(_list(t["dims"], f"{path}.dims", "dim names")), table, block)

    objective = [term(t, f"objective[{i}]") for i, t in enumerate(_list(data["objective"], "objective", "terms"))]
    if not isinstance(data["costs"], dict):
        raise SpecError(f"costs: expected an object mapping resource names to lists of terms, "
                        f"got {type(data['costs']).__name__}")
    costs = {r: [term(t, f"costs.{r}[{i}]") for i, t in enumerate(_list(ts, f"costs.{r}", "terms"))]
             for r, ts in data["costs"].items()}
    budgets = data.get("budgets") or {}
    if not isinstance(budgets, dict):
        raise SpecError(f"budgets: expected an object mapping resource names to numbers, got {type(budgets).__name__}")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise SpecError(f"meta: expected an object, got {type(meta).__name__}")
    return Spec(dims=tuple(dims), objective=tuple(objective), costs=costs, blocks=tuple(blocks),
                budgets=budgets, name=data.get("name", ""), meta=meta)
