"""Channel spaces and layouts: what the tracer knows about a tensor's channel axis.

A *space* is a set of channels of one width created by one layer (a convolution's or a
Linear's outputs, an attention's heads). Spaces that must keep the same channels are
merged (union-find): a residual add merges the spaces of its operands, a depthwise
convolution keeps its input's space. Each merged space becomes one dim of the spec.

A *layout* describes a tensor's channel axis as a sequence of segments, each a space
(or a fixed width nothing can prune). A plain tensor has one segment; `torch.cat` on
the channel axis concatenates layouts, so a consumer of a concatenation reads several
spaces and its cost table has one axis per space. Within a space, channel `i` of every
member is the same unit, so slicing by kept units is the same index set everywhere.

A space that cannot change width (the model's output, a grouped convolution, a tensor
the tracer cannot follow) is *pinned* with a reason; the reason ends up in the spec's meta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Segment:
    """`width` channels of `space` (None: a fixed width that is never pruned)."""

    space: int | None
    width: int


Layout = tuple[Segment, ...]


def fixed(width: int) -> Layout:
    return (Segment(None, width),)


def total(layout: Layout) -> int:
    return sum(s.width for s in layout)


class Spaces:
    """Union-find over channel spaces, with a width, an origin (the layer that made it) and pins."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.width: list[int] = []
        self.origin: list[str] = []
        self.kind: list[str] = []
        self.pins: dict[int, str] = {}

    def new(self, width: int, origin: str, kind: str = "channels") -> int:
        self.parent.append(len(self.parent))
        self.width.append(width)
        self.origin.append(origin)
        self.kind.append(kind)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        root = s
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[s] != root:
            self.parent[s], s = root, self.parent[s]
        return root

    def union(self, a: int, b: int, where: str) -> None:
        """Merge two spaces (the older one stays the root); unequal widths pin both."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.width[ra] != self.width[rb]:
            self.pin_space(ra, f"{where}: joins {self.width[ra]} channels with {self.width[rb]}")
            self.pin_space(rb, f"{where}: joins {self.width[rb]} channels with {self.width[ra]}")
            return
        keep, gone = (ra, rb) if ra < rb else (rb, ra)
        self.parent[gone] = keep
        if gone in self.pins:
            self.pins.setdefault(keep, self.pins.pop(gone))

    def pin_space(self, s: int, reason: str) -> None:
        self.pins.setdefault(self.find(s), reason)

    def pin(self, layout: Layout | None, reason: str) -> None:
        for seg in layout or ():
            if seg.space is not None:
                self.pin_space(seg.space, reason)

    def pinned(self, s: int) -> str | None:
        return self.pins.get(self.find(s))

    def unify(self, a: Layout, b: Layout, where: str) -> None:
        """Two layouts that must hold the same channels: merge segment by segment, or pin what cannot merge."""
        if len(a) == len(b) and all(x.width == y.width for x, y in zip(a, b)):
            for x, y in zip(a, b):
                if x.space is not None and y.space is not None:
                    self.union(x.space, y.space, where)
                elif x.space is not None or y.space is not None:
                    self.pin_space(x.space if x.space is not None else y.space,
                                   f"{where}: combined with channels of fixed width")
            return
        reason = (f"{where}: combines channel layouts {describe(a)} and {describe(b)} that do not line up "
                  "(a concatenation against a single layer's channels)")
        self.pin(a, reason)
        self.pin(b, reason)

    def roots(self) -> list[int]:
        return [s for s in range(len(self.parent)) if self.parent[s] == s]


def describe(layout: Layout) -> str:
    return "[" + ", ".join(f"{s.width}" if s.space is None else f"#{s.space}:{s.width}" for s in layout) + "]"


def positions(layout: Layout, spaces: Spaces, dim_of: Mapping[int, str]) -> dict[str, list[tuple[int, int]]]:
    """Dim -> (position along the axis, unit of the dim) for every position the dim sizes."""
    out: dict[str, list[tuple[int, int]]] = {}
    offset = 0
    for seg in layout:
        if seg.space is not None:
            name = dim_of.get(spaces.find(seg.space))
            if name is not None:
                out.setdefault(name, []).extend((offset + i, i) for i in range(seg.width))
        offset += seg.width
    return out

