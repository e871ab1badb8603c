"""One clock for one call: `Deadline` says how much of a time limit is left.

`solve()` starts a deadline when it is called; the presolve, the backend and the
verification all read the same one, so `time_limit` bounds the whole call.
"""

from __future__ import annotations

import math
import time


class TimeUp(Exception):
    """Raised by `Deadline.check` once the time limit has passed."""


class Deadline:
    """A point in time (`time.monotonic`), or none (`seconds=None`: never expires)."""

    __slots__ = ("at",)

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + float(seconds)

    @property
    def limited(self) -> bool:
        return self.at is not None

    def remaining(self) -> float:
        """Seconds left (math.inf without a limit; never negative)."""
        return math.inf if self.at is None else max(0.0, self.at - time.monotonic())

    def seconds(self) -> float | None:
        """Seconds left, or None without a limit (the form backends take as `time_limit`)."""
        return None if self.at is None else self.remaining()

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def check(self) -> None:
        """Raise `TimeUp` once the limit has passed."""
        if self.expired:
            raise TimeUp
