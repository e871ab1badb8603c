"""Example specs by name: the real MDP instances shipped with the package, and generated families.

    spec = mdp_opt.examples.make("mdp-rn50-step10")          # a real instance (see instances/README.md)
    spec = mdp_opt.examples.make("resnet50", choices=32)      # a generated spec shaped like ResNet-50

`NAMES` lists both kinds; `INSTANCES` the real ones and `PROVEN_OPTIMA` their proven optimal values.
"""

from __future__ import annotations

from typing import Any

from ..spec import Spec, SpecError
from .generated import GENERATORS
from .generated import NAMES as GENERATED
from .generated import make as _make_generated
from .real import INSTANCES, PROVEN_OPTIMA, instance

NAMES: tuple[str, ...] = INSTANCES + GENERATED


def make(name: str, seed: int = 0, **sizes: Any) -> Spec:
    """The example `name`: a real instance (no sizes or seed) or a generated family (see `generated.make`)."""
    if name in PROVEN_OPTIMA:
        if sizes or seed:
            raise SpecError(f"example {name!r}: a real instance takes no seed or sizes (got "
                            f"{sorted(sizes) + (['seed'] if seed else [])})")
        return instance(name)
    if name not in GENERATORS:
        raise SpecError(f"example {name!r}: unknown; choose one of {list(NAMES)}")
    return _make_generated(name, seed=seed, **sizes)


__all__ = ["GENERATED", "GENERATORS", "INSTANCES", "NAMES", "PROVEN_OPTIMA", "instance", "make"]
