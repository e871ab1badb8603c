"""Reductions: a problem turned into another one that is easier to solve, and the way back.

A reduction is made by a function that *applies* it (`presolve.presolve`, `rounding.round_costs`)
and is an object holding the problem to solve instead (`spec`, `limits`) and a `lift` that maps
an answer of that problem back to an answer of the original one: the configuration in the
original spec's indices, and a bound only where it is valid for the original problem.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from .result import Answer
from .spec import Spec


class Reduction(Protocol):
    """The problem to solve instead of the original one, and the map of its answers back."""

    spec: Spec
    limits: Mapping[str, float]

    def lift(self, answer: Answer) -> Answer:
        """An answer of (`spec`, `limits`) as an answer of the original problem."""
        ...
