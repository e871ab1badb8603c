"""Example specs by name: the real MDP instances shipped with the package, and generated families.

    spec = mdp_opt.examples.make("mdp-rn50-step10")          # a real instance (see instances/README.md)
    spec = mdp_opt.examples.make("resnet50", choices=32)      # a generated spec shaped like ResNet-50
    spec = mdp_opt.examples.make("hard", seed=3)               # one of the harder family (every resource budgeted)

`NAMES` lists both kinds; `INSTANCES` the real ones and `PROVEN_OPTIMA` their proven optimal values.
"""

from __future__ import annotations

from typing import Any

from ..spec import Spec, SpecError
from .generated import GENERATORS
from .generated import NAMES as GENERATED
from .generated import hard
from .generated import make as _make_generated
from .real import INSTANCES, PROVEN_OPTIMA, instance

HARD = "hard"
NAMES: tuple[str, ...] = INSTANCES + GENERATED + (HARD,)


def make(name: str, seed: int = 0, **sizes: Any) -> Spec:
    """The example `name`: a real instance (no sizes or seed) or a generated family (see `generated.make`)."""
    if name in PROVEN_OPTIMA:
        if sizes or seed:
            raise SpecError(f"example {name!r}: a real instance takes no seed or sizes (got "
                            f"{sorted(sizes) + (['seed'] if seed else [])})")
        return instance(name)
    if name == HARD:
        if sizes:
            raise SpecError(f"example {name!r}: takes only a seed (got {sorted(sizes)})")
        return hard(seed=seed, name=f"hard[seed={seed}]")
    if name not in GENERATORS:
        raise SpecError(f"example {name!r}: unknown; choose one of {list(NAMES)}")
    return _make_generated(name, seed=seed, **sizes)


__all__ = ["GENERATED", "GENERATORS", "HARD", "INSTANCES", "NAMES", "PROVEN_OPTIMA", "hard", "instance", "make"]
