"""The four real MDP solver instances shipped inside the package (see instances/README.md)."""

from __future__ import annotations

from importlib import resources

from ..spec import Spec, SpecError, loads

# Proven with an independent exact MILP (relative gap 1e-9), cross-checked against the authors' model.
PROVEN_OPTIMA: dict[str, float] = {
    "mdp-mbv1-2nd-step00": 4189641,
    "mdp-rn101-step00": 3350920,
    "mdp-rn50-step10": 6908411,
    "mdp-rn50-step20": 6516229,
}
INSTANCES: tuple[str, ...] = tuple(sorted(PROVEN_OPTIMA))


def instance(name: str) -> Spec:
    """The real instance `name` (one of `INSTANCES`), loaded from the package's data."""
    if name not in PROVEN_OPTIMA:
        raise SpecError(f"instance {name!r}: unknown; the shipped real instances are {list(INSTANCES)}")
    path = resources.files(__package__) / "instances" / f"{name}.json"
    return loads(path.read_text(encoding="utf-8"), source=f"mdp_opt/examples/instances/{name}.json")
