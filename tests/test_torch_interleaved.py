"""The order in which `interleaved_samples` runs several computations, and which runs it keeps (no timings
asserted: the computations record their calls)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mdp_opt.adapters.torch.latency import interleaved_samples  # noqa: E402
from mdp_opt.adapters.torch.runtimes import Compiled  # noqa: E402


def recording(log: list[str], name: str) -> Compiled:
    return Compiled(run=lambda: log.append(name), touch=lambda: None)


@pytest.mark.parametrize("runs, warmup, streak", [(5, 2, 1), (6, 1, 3), (7, 0, 3), (4, 1, 4)])
def test_runs_in_turn_or_in_streaks_and_keeps_runs_samples_each(runs, warmup, streak):
    log: list[str] = []
    samples = interleaved_samples([recording(log, "A"), recording(log, "B")], torch.device("cpu"), runs, warmup,
                                  flush_mb=0, streak=streak)
    assert [len(s) for s in samples] == [runs, runs]
    in_a_row = 1 if streak == 1 else streak + 1          # a streak's first run is dropped
    turns = warmup + -(-runs // streak)
    assert log == (["A"] * in_a_row + ["B"] * in_a_row) * turns


def test_a_streak_below_one_is_refused():
    with pytest.raises(ValueError, match="streak"):
        interleaved_samples([], torch.device("cpu"), 3, 0, flush_mb=0, streak=0)
