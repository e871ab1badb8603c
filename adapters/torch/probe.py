"""Widths the forward pass hard-codes, found before the solve by running slimmed copies of the model.

The trace sees tensors, not the Python integers a forward pass computes from them: a module that reads its
input width (`B, N, C = x.shape`) and reshapes another tensor with `C // heads` runs only at the width it was
built for, and nothing in the trace says so. Such a width used to surface after the solve, when `apply`'s
slimmed model failed on the example input. `hard_coded_widths` finds them at build time instead: it slims
every prunable dim one step (to its largest allowed count below the full width) in one copy and runs it;
when that fails, a binary search over the dims finds one dim whose slimming breaks the forward pass, which is
kept at its full width, and the rest are tried again. A model that runs slimmed costs one copy and one forward
pass; each hard-coded width costs about log2(number of dims) more.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .latency import eval_mode
from .structure import Structure


def hard_coded_widths(family: Any, structure: Structure, model: nn.Module, example_input: torch.Tensor,
                      slimmed: Mapping[str, int]) -> dict[str, str]:
    """Dim name -> why it must keep its full width, for the dims of `slimmed` (dim -> a smaller kept count)
    whose slimming makes the model fail on `example_input` (or change its output's shape)."""
    with torch.no_grad():
        expected = _output_shape(model, example_input)
    candidates = list(slimmed)
    found: dict[str, str] = {}
    while candidates:
        error = _failure(family, structure, model, example_input, {n: slimmed[n] for n in candidates}, expected)
        if error is None:
            break
        lo, hi = 0, len(candidates)      # the shortest failing prefix is candidates[:hi]; candidates[:lo] runs
        while hi - lo > 1:
            mid = (lo + hi) // 2
            e = _failure(family, structure, model, example_input, {n: slimmed[n] for n in candidates[:mid]},
                         expected)
            if e is None:
                lo = mid
            else:
                hi, error = mid, e
        culprit = candidates.pop(hi - 1)
        found[culprit] = (f"the forward pass fails when this width changes, so it is hard-coded there ({error}); "
                          "found by running a slimmed copy at build time")
    return found


def _failure(family: Any, structure: Structure, model: nn.Module, example_input: torch.Tensor,
             counts: Mapping[str, int], expected: torch.Size | None) -> str | None:
    """None when the copy slimmed to `counts` runs and gives an output of the original shape, else what broke."""
    kept = {name: torch.arange(k) for name, k in counts.items()}
    try:
        small = family.apply(model, structure, kept, [])
        with torch.no_grad():
            shape = _output_shape(small, example_input)
    except Exception as error:       # any failure of the slimmed copy is what is looked for here
        text = " ".join(str(error).split())
        return f"{type(error).__name__}: {text[:200]}"
    if shape != expected:
        return f"the output's shape changes from {tuple(expected or ())} to {tuple(shape or ())}"
    return None


def _output_shape(model: nn.Module, example_input: torch.Tensor) -> torch.Size | None:
    """The shape of the model's first tensor output, in eval mode (the model's modes are restored)."""
    with eval_mode(model):
        out = model(example_input)
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    if isinstance(out, Mapping) and out:
        out = next(iter(out.values()))
    return out.shape if isinstance(out, torch.Tensor) else None
