"""One clock and one stop signal for one call: `Deadline`.

`solve()` starts a deadline when it is called; the presolve, the model building, the backend and
the verification all read the same one, so `time_limit` bounds the whole call. The deadline also
carries the *stop* signal: `solve()` stops it when the time is up or when the user presses Ctrl-C.
Code that loops checks `expired` (or calls `check()`); code that waits in a solver registers a stop
hook (`with deadline.hook(solver.stop_search): ...`), called from the thread that stops it, and called
again every WAKE_EVERY seconds until the worker returns: a solver that had not yet started its search
when the first call came (CP-SAT and HiGHS then forget the stop and run on) is stopped by the next one.
Hooks must therefore be safe to call more than once.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Callable, Iterator, TypeVar

TIME_LIMIT = "time_limit"
INTERRUPTED = "interrupted"
INTERRUPT_GRACE = 2.0        # seconds a stopped worker gets to return after Ctrl-C
TIME_LIMIT_GRACE = 0.4       # ... after the time limit, plus 10% of the limit (the promise: 10% + 0.5 s in all)
WAKE_EVERY = 0.1             # seconds between the watching thread's looks at pending signals
T = TypeVar("T")


class TimeUp(Exception):
    """Raised by `Deadline.check` once the deadline has passed or the call was stopped."""


class StillRunning(Exception):
    """`Deadline.run`'s worker did not return within its grace after the stop signal."""


class Deadline:
    """A point in time (`time.monotonic`, or none: `seconds=None`) and a stop signal."""

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.monotonic() + float(seconds)
        self.reason: str | None = None        # why it was stopped: TIME_LIMIT or INTERRUPTED
        self._stopped = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.at is not None

    def remaining(self) -> float:
        """Seconds left (math.inf without a limit; 0 once stopped; never negative)."""
        if self._stopped.is_set():
            return 0.0
        return math.inf if self.at is None else max(0.0, self.at - time.monotonic())

    def seconds(self) -> float | None:
        """Seconds left, or None without a limit (the form backends take as `time_limit`)."""
        return None if self.at is None and not self._stopped.is_set() else self.remaining()

    @property
    def passed(self) -> bool:
        """The time limit has passed (whether or not the stop signal was sent yet)."""
        return self.at is not None and time.monotonic() >= self.at

    @property
    def expired(self) -> bool:
        """Stop now: the time is up or the call was stopped."""
        return self._stopped.is_set() or self.passed

    @property
    def interrupted(self) -> bool:
        return self.reason == INTERRUPTED

    def check(self) -> None:
        """Raise `TimeUp` once expired."""
        if self.expired:
            raise TimeUp

    def stop(self, reason: str = INTERRUPTED) -> None:
        """Send the stop signal (once): every registered hook is called, from the calling thread."""
        with self._lock:
            if self._stopped.is_set():
                return
            self.reason = reason
            self._stopped.set()
        self._call_hooks()

    def _call_hooks(self) -> None:
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    @contextlib.contextmanager
    def hook(self, stop: Callable[[], None]) -> Iterator[None]:
        """Within the block, `stop()` is called when the deadline is stopped (at once if it already was)."""
        with self._lock:
            self._hooks.append(stop)
            already = self._stopped.is_set()
        if already:
            stop()
        try:
            yield
        finally:
            with self._lock:
                self._hooks.remove(stop)

    def run(self, work: Callable[[], T]) -> T:
        """`work()` in a worker thread, this thread watching: when the time limit passes, or when Ctrl-C
        reaches this thread (KeyboardInterrupt), the deadline is stopped and the worker gets a grace
        (10% of the limit + 0.4 s, or 2 s after Ctrl-C) to return its best answer. Returns what `work`
        returned and re-raises what it raised; `StillRunning` when the grace runs out (the worker then
        finishes in the background, as a daemon thread)."""
        box: dict[str, object] = {}
        done = threading.Event()     # waited on instead of Thread.join: an interrupted join marks a running
                                     # thread as stopped on Python 3.11 (bpo-45274's fix releases its lock)

        def target() -> None:
            try:
                box["value"] = work()
            except BaseException as e:  # handed to the watching thread as it is
                box["error"] = e
            finally:
                done.set()
        def wait(until: float | None) -> bool:
            # in slices, so that this thread runs Python often enough to see a signal delivered to another
            # thread, and repeats the stop hooks once stopped
            while not done.is_set():
                left = WAKE_EVERY if until is None else min(WAKE_EVERY, until - time.monotonic())
                if left <= 0:
                    return False
                done.wait(left)
                if self._stopped.is_set() and not done.is_set():
                    self._call_hooks()
            return True

        worker = threading.Thread(target=target, name="mdp-opt solve", daemon=True)
        started = time.monotonic()
        worker.start()
        try:
            if not wait(self.at):
                self.stop(TIME_LIMIT)
                wait(time.monotonic() + TIME_LIMIT_GRACE + 0.1 * (self.at - started))
        except KeyboardInterrupt:
            self.stop(INTERRUPTED)
            wait(time.monotonic() + INTERRUPT_GRACE)
        if not done.is_set():
            raise StillRunning(f"the solve did not stop within its grace after the {self.reason} stop")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[return-value]
