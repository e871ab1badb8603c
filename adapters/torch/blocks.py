"""Removable units: residual blocks and their branches.

A module is a *residual block* when its output is its input plus one or more branches,
`x + f1(x) + f2(...)` (a chain of adds from the input to the output, optionally followed by
one activation), with the same shape and channels in and out. Removing the block makes it
the identity. Each branch of a block with several (the attention and MLP halves of a
transformer block) is removable on its own when one module computes it: that module is
replaced by zeros (`RemovedBranch`), and a norm that feeds only it becomes the identity.
Adds inside a nested residual block belong to that block, not to the one around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

from .handlers import NormHandler, UnsupportedModelError
from .layout import Spaces
from .trace import ModuleCall, OpRecord, TensorInfo, Trace, _Hole

ADDS = {"add", "add_", "__add__", "__iadd__", "__radd__"}
RESHAPES = {"reshape", "view", "flatten", "contiguous", "view_as", "reshape_as"}
ACTIVATIONS = {"relu", "relu_", "relu6", "gelu", "silu", "silu_", "hardswish", "leaky_relu", "elu", "hardtanh",
               "hardtanh_", "sigmoid", "tanh", "mish"}


@dataclass
class Branch:
    """One branch of a residual block; `module` computes it (None: no single module does), `norm` feeds only it."""

    module: str | None
    norm: str | None
    returns: Any = "tensor"
    ops: frozenset[int] = frozenset()      # indices of the ops removed with it


@dataclass
class ResidualBlock:
    name: str
    branches: list[Branch]
    ops: frozenset[int] = field(default_factory=frozenset)
    returns: Any = "tensor"       # the structure the block returned: "tensor", or a tuple of "out" / None


@dataclass(frozen=True)
class Gate:
    """A spec block: a whole residual block or one branch of one."""

    name: str
    block: str
    branch: Branch | None
    ops: frozenset[int]
    returns: Any = "tensor"       # what the whole block returned (for a whole block)


def _same_channels(a: TensorInfo, b: TensorInfo, spaces: Spaces) -> bool:
    if a.shape != b.shape or a.layout is None or b.layout is None or a.axis != b.axis or len(a.layout) != len(b.layout):
        return False
    return all(x.width == y.width and (x.space is None) == (y.space is None)
               and (x.space is None or spaces.find(x.space) == spaces.find(y.space))
               for x, y in zip(a.layout, b.layout))


def find_residual_blocks(trace: Trace) -> list[ResidualBlock]:
    """Every residual block, outermost only, in forward order."""
    producer = {id(t): op for op in trace.ops for t in op.outputs}
    counts: dict[str, int] = {}
    for c in trace.calls:
        counts[c.name] = counts.get(c.name, 0) + 1
    calls = sorted((c for c in trace.calls if counts[c.name] == 1), key=lambda c: (c.stop - c.start, c.start))
    found: list[tuple[ModuleCall, list[TensorInfo]]] = []
    for call in calls:
        x, y = call.input, call.output
        if x is None or y is None or not _same_channels(x, y, trace.spaces):
            continue
        inner = [range(c.start, c.stop) for c, _ in found if call.start <= c.start and c.stop <= call.stop]
        branches = _chain(y, x, producer, call, inner, top=True)
        if branches:
            found.append((call, branches))
    outer = [(c, b) for c, b in found if not any(o.start <= c.start and c.stop <= o.stop and o is not c
                                                 for o, _ in found)]
    outer.sort(key=lambda cb: cb[0].start)
    return [ResidualBlock(c.name, [_branch(t, c, trace, producer) for t in b], frozenset(range(c.start, c.stop)),
                          _returns(c)) for c, b in outer]


def _chain(t: TensorInfo, x: TensorInfo, producer: dict[int, OpRecord], call: ModuleCall,
           inner: list[range], top: bool) -> list[TensorInfo] | None:
    """The branches added to `x` to make `t` (None when `t` is not such a chain)."""
    if t is x:
        return []
    op = producer.get(id(t))
    if op is None or not call.start <= op.index < call.stop or any(op.index in r for r in inner):
        return None
    if op.module is None and op.func_name in ADDS and len(op.inputs) == 2:
        a, b = op.inputs
        for stream, branch in ((a, b), (b, a)):
            rest = _chain(stream, x, producer, call, inner, top=False)
            if rest is not None:
                return rest + [branch]
        return None
    if op.module is None and len(op.inputs) == 1 and (op.func_name in RESHAPES or top and op.func_name in ACTIVATIONS):
        return _chain(op.inputs[0], x, producer, call, inner, top=top and op.func_name in RESHAPES)
    return None


def _branch(t: TensorInfo, block: ModuleCall, trace: Trace, producer: dict[int, OpRecord]) -> Branch:
    """The module computing a branch (through parameter-free ops and per-channel scales), and its pre-norm."""
    outputs: dict[int, list[tuple[str, ModuleCall | OpRecord]]] = {}
    with_params = {op.name for op in trace.ops if op.module is not None and any(True for _ in op.module.parameters())}
    for c in trace.calls:
        if c.output is not None and block.start <= c.start and c.stop <= block.stop and c.name != block.name and \
                any(n == c.name or n.startswith(c.name + ".") for n in with_params):
            outputs.setdefault(id(c.output), []).append((c.name, c))
    for op in trace.ops:
        if op.module is not None and block.start <= op.index < block.stop:
            outputs.setdefault(id(op.output), []).append((op.name, op))
    for _ in range(32):
        if id(t) in outputs:
            name, unit = min(outputs[id(t)], key=lambda nu: nu[0].count("."))
            inputs = unit.inputs
            if not inputs or inputs[0].shape != t.shape:
                return Branch(None, None)
            ops = (frozenset(range(unit.start, unit.stop)) if isinstance(unit, ModuleCall)
                   else frozenset({unit.index}))
            norm = _pre_norm(inputs[0], block, trace, producer)
            if norm is not None:
                ops |= {norm.index}
            return Branch(name, norm.name if norm is not None else None, _returns(unit), ops)
        op = producer.get(id(t))
        if op is None or op.module is not None or not block.start <= op.index < block.stop:
            return Branch(None, None)
        moving = [i for i in op.inputs if i.kind in ("op", "data")]
        if len(moving) != 1:
            return Branch(None, None)
        t = moving[0]
    return Branch(None, None)


def _pre_norm(t: TensorInfo, block: ModuleCall, trace: Trace, producer: dict[int, OpRecord]) -> OpRecord | None:
    """A norm layer whose output reaches `t` only through parameter-free single-input ops and is used nowhere else."""
    users: dict[int, int] = {}
    for op in trace.ops:
        for i in op.inputs:
            users[id(i)] = users.get(id(i), 0) + 1
    for _ in range(16):
        op = producer.get(id(t))
        if op is None or not block.start <= op.index < block.stop or users.get(id(t), 0) != 1:
            return None
        if op.module is not None:
            return op if isinstance(op.handler, NormHandler) else None
        moving = [i for i in op.inputs if i.kind in ("op", "data")]
        if len(moving) != 1 or any(i.kind == "param" for i in op.inputs):
            return None
        t = moving[0]
    return None


def _returns(unit: ModuleCall | OpRecord) -> Any:
    structure = unit.returned
    if structure is None or isinstance(structure, _Hole):
        return "tensor"
    if isinstance(structure, (tuple, list)):
        return tuple("out" if isinstance(s, _Hole) and s.index == 0 else None for s in structure)
    return "tensor"


def choose_gates(model: nn.Module, blocks: list[ResidualBlock], option: str | Sequence[nn.Module] | None
                 ) -> list[Gate]:
    """The spec's blocks for `blocks=`: "auto" (branches of blocks with several removable branches, else whole
    blocks), "whole", a list of modules (blocks or branch modules), or None."""
    if option is None:
        return []
    if isinstance(option, str):
        if option not in ("auto", "whole"):
            raise ValueError(f"blocks: expected 'auto', 'whole', a list of modules or None, got {option!r}")
        gates = []
        for b in blocks:
            split = option == "auto" and len(b.branches) > 1 and all(br.module for br in b.branches)
            gates += ([Gate(br.module, b.name, br, br.ops) for br in b.branches] if split
                      else [Gate(b.name, b.name, None, b.ops, b.returns)])
        return gates
    if not isinstance(option, Sequence):
        raise ValueError(f"blocks: expected 'auto', 'whole', a list of modules or None, got {option!r}")
    names = {m: n for n, m in model.named_modules()}
    gates = []
    for i, m in enumerate(option):
        if m not in names:
            raise ValueError(f"blocks[{i}]: {type(m).__name__} is not a submodule of the model")
        name = names[m]
        whole = next((b for b in blocks if b.name == name), None)
        half = next(((b, br) for b in blocks for br in b.branches if br.module == name), None)
        if whole is not None:
            gates.append(Gate(name, name, None, whole.ops, whole.returns))
        elif half is not None:
            gates.append(Gate(name, half[0].name, half[1], half[1].ops))
        else:
            raise UnsupportedModelError(
                f"blocks[{i}] ({name}): not a removable block; a block's output must be its input plus branches "
                "(x + f(x)) with the same shape, run once per forward, and a branch must be computed by one module")
    for g in gates:
        for other in gates:
            if other is not g and (g.name == other.name or g.name.startswith(other.name + ".")):
                raise ValueError(f"blocks: {g.name} is {other.name} or inside it; blocks may not repeat or nest")
    return gates
