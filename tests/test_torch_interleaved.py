"""The order in which `interleaved_samples` runs several computations, and which runs it keeps (no timings
asserted: the computations record their calls)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mdp_opt.adapters.torch.latency import MAX_SETTLE_RUNS, interleaved_samples, settle_runs  # noqa: E402
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


def test_settling_drops_runs_filling_the_time_at_the_start_of_every_turn():
    log: list[str] = []
    fast = recording(log, "A")                  # microseconds a run: settles for the most runs allowed
    samples = interleaved_samples([fast], torch.device("cpu"), 4, 1, flush_mb=0, streak=2, settle_ms=5.0)
    assert [len(s) for s in samples] == [4]
    per_turn = MAX_SETTLE_RUNS + 2
    assert len(log) == 1 + per_turn * (1 + 2)    # one run to estimate, then a warm-up turn and two turns


@pytest.mark.parametrize("run_ms, settle_ms, streak, dropped", [
    (1.0, 15.0, 1, 15), (4.0, 15.0, 1, 3), (20.0, 15.0, 1, 0), (20.0, 15.0, 3, 1), (0.01, 15.0, 1, MAX_SETTLE_RUNS),
    (0.0, 15.0, 1, MAX_SETTLE_RUNS), (1.0, 0.0, 1, 0), (1.0, 0.0, 2, 1)])
def test_settle_runs_fill_the_settling_time(run_ms, settle_ms, streak, dropped):
    assert settle_runs(run_ms, settle_ms, streak) == dropped


def test_a_negative_settling_time_is_refused():
    with pytest.raises(ValueError, match="settle_ms"):
        interleaved_samples([], torch.device("cpu"), 3, 0, flush_mb=0, settle_ms=-1.0)
