"""Removable blocks: modules that can be replaced by the identity.

`"auto"` finds residual blocks `x + f(x)` (optionally followed by one activation) whose
output has the same shape and channel dim as their input; a block whose shortcut is a
projection (`proj(x) + f(x)`) is not removable. Users may instead name the modules.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .handlers import UnsupportedModelError
from .trace import ModuleCall, Trace, is_add


def find_blocks(model: nn.Module, trace: Trace, blocks: str | Sequence[nn.Module] | None) -> list[str]:
    """Names of the removable blocks, outermost first, in forward order."""
    calls: dict[str, list[ModuleCall]] = {}
    for c in trace.calls:
        calls.setdefault(c.name, []).append(c)
    if blocks is None:
        return []
    if isinstance(blocks, str):
        if blocks != "auto":
            raise ValueError(f"blocks: expected 'auto', a list of modules or None, got {blocks!r}")
        found = [name for name, cs in calls.items() if len(cs) == 1 and _is_residual(cs[0], trace)]
        return [n for n in found if not any(n.startswith(o + ".") for o in found if o != n)]
    names = {m: n for n, m in model.named_modules()}
    chosen = []
    for i, m in enumerate(blocks):
        if m not in names:
            raise ValueError(f"blocks[{i}]: {type(m).__name__} is not a submodule of the model")
        name = names[m]
        cs = calls.get(name, [])
        if len(cs) != 1:
            raise UnsupportedModelError(f"blocks[{i}] ({name}): a block must have child modules and run exactly once "
                                        f"per forward (it ran {len(cs)} times)")
        if not _keeps_width(cs[0]):
            raise UnsupportedModelError(f"blocks[{i}] ({name}): its output {cs[0].output.shape} differs from its input "
                                        f"{cs[0].input.shape} (or its channel dim); only a shape-preserving block "
                                        "can become the identity")
        chosen.append(name)
    for name in chosen:
        for other in chosen:
            if other != name and name.startswith(other + "."):
                raise ValueError(f"blocks: {name} is inside block {other}; blocks may not nest")
    return chosen


def _keeps_width(call: ModuleCall) -> bool:
    return call.input.shape == call.output.shape and call.input.label == call.output.label is not None


def _is_residual(call: ModuleCall, trace: Trace) -> bool:
    """True when the module's output is `x + f(x)` (or `act(x + f(x))`) with `x` its own input."""
    if not _keeps_width(call):
        return False
    x = call.input.tensor_id
    own = [op for op in trace.ops if op.scope and op.scope[-1] == call.name]
    own_and_leaves = [op for op in trace.ops if call.name in op.scope]
    for op in own:
        if not is_add(op) or x not in {s.tensor_id for s in op.inputs}:
            continue
        added = op.output.tensor_id
        if added == call.output.tensor_id:
            return True
        if any([s.tensor_id for s in o.inputs] == [added] and o.output.tensor_id == call.output.tensor_id
               and (o.module is None or not any(True for _ in o.module.parameters())) for o in own_and_leaves):
            return True
    return False
