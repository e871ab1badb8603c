"""A warm start for the multiplier search on large specs: the same search on a thinned spec.

Keeping every `THIN_STRIDE`-th choice of each long dim (and its first and last) leaves a spec whose passes
cost a small fraction of the full ones: a factor over k long dims shrinks about THIN_STRIDE^k-fold. Its
Lagrangian search ends on configurations on either side of the limit near the best multiplier, and these
are configurations of the full spec too, so their lines are valid cutting planes of the full dual function.
The full search starts its line search from them instead of from lambda = 0 and the cheapest configuration
(measured on ViT-H at 128 choices a dim: 11 passes instead of 17, the fixing pass included). The thinned search
runs to the full search's own tolerance, since its passes are cheap and an exact thinned multiplier saves full
ones (41,920-choice ResNet at 50%: 1 full pass instead of 5 with a 1e-4 tolerance). Nothing proven
changes: every bound is still a pass over the full spec, and every incumbent is re-evaluated on it.

The thinned spec is warm-started the same way while it is still large.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..deadline import Deadline
from ..factor_graph import SpecGraph
from ..spec import Spec
from .fixing import reduce_spec
from .shared import Point, nearest

WARM_START_MIN_CHOICES = 4_000  # below this many choices in all, a full pass is cheap: no warm start
THIN_STRIDE = 4                 # keep every 4th choice of a dim
THIN_MIN_SIZE = 16              # dims with fewer choices are kept whole


def thinned(spec: Spec) -> tuple[Spec, dict[str, tuple[int, ...]]]:
    """The spec restricted to every THIN_STRIDE-th choice (counted from the last) and the first of each dim with
    at least THIN_MIN_SIZE choices, and dim -> the original indices of its kept choices."""
    keep = []
    for d in spec.dims:
        mask = np.ones(d.size, dtype=bool)
        if d.size >= THIN_MIN_SIZE:
            mask[:] = False
            mask[d.size - 1::-THIN_STRIDE] = True
            mask[0] = True      # the least choice too: the cheapest configurations stay in the thinned spec
        keep.append(mask)
    keep += [np.ones(2, dtype=bool) for _ in spec.blocks]
    first = np.array([int(np.flatnonzero(m)[0]) for m in keep[:len(spec.dims)]] + [1] * len(spec.blocks))
    reduced, kept, fixed = reduce_spec(spec, keep, first)
    assert not fixed, "no block is fixed: both states are kept"
    return reduced, kept


def warm_start(graph: SpecGraph, limits: Mapping[str, float], deadline: Deadline | None = None) -> list[Point]:
    """Configurations of `graph` (with their value and costs) to start its Lagrangian search from: the thinned
    spec's maximisers nearest the limit on either side and its incumbent. Empty for several limited resources,
    small specs, or when thinning removes nothing."""
    from .dual import LagrangianSearch
    spec = graph.spec
    if len(limits) != 1 or sum(d.size for d in spec.dims) < WARM_START_MIN_CHOICES:
        return []
    thin, kept = thinned(spec)
    if sum(d.size for d in thin.dims) == sum(d.size for d in spec.dims):
        return []
    thin_graph = SpecGraph(thin)
    search = LagrangianSearch(thin_graph, thin, limits, deadline, seeds=warm_start(thin_graph, limits, deadline),
                              polish=False)
    if search.run():
        return []                      # the thinned spec is infeasible; the full search finds out for itself
    (resource,) = limits
    found = [p[0] for p in nearest(search.points, resource, limits[resource]) if p is not None]
    if search.incumbent is not None:
        found.append(search.incumbent)
    lift = [np.asarray(kept[name]) for name in spec.dim_names] + [np.arange(2)] * len(spec.blocks)
    seeds = []
    for x in found:
        full = np.array([lift[v][s] for v, s in enumerate(x)], dtype=np.int64)
        seeds.append((full, *graph.evaluate(full)))
    return seeds
