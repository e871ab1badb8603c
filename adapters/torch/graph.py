"""`ChannelDim`, the shape `importance.scored_layers` / `dim_importance` / `user_scores` take.

The adapter no longer builds these (one traced forward pass gives every dim, see `trace`);
the type stays for those functions of `importance`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChannelDim:
    """One coupled channel group: `producers` maps each layer whose output channels belong to the group to
    the group index of each of its channels; `consumers` lists the layers that read them."""

    name: str
    width: int
    producers: dict[str, np.ndarray]
    consumers: tuple[str, ...]
