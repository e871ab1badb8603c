"""build_spec and the solve under torch.distributed: 2 CPU processes (gloo), each with its own batches.

One spawned run (two processes, spawned once for the module) exercises the primitives of `distributed`
(errors included), then the whole pipeline on both ranks (DDP-wrapped model -> build_spec with measured
latency -> solve on rank 0 -> apply on every rank -> DDP again -> one training step), and records what
each rank saw; the tests compare the ranks with each other and with one process over all the batches.
Those tests are in the slow lane (`pytest -m slow`): the two processes, spawned once, take 15-17 s here on 2
shared cores under load (5 s of it the pipeline, the rest starting Python and importing torch).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import mdp_opt  # noqa: E402
from mdp_opt.adapters.torch import MeasuredLatency, build_spec  # noqa: E402
from mdp_opt.adapters.torch import distributed  # noqa: E402

from ddp_ranks import WORLD, run_ranks  # noqa: E402
from torch_models import small_resnet  # noqa: E402

BUDGET = "60%"


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = small_resnet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank `rank`'s own batches (3 of them, so the two halves of the check differ per rank)."""
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(3)]


def example_input() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))


class CountingLatency(MeasuredLatency):
    """MeasuredLatency that counts the layer shapes and whole models it times in this process."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workloads = 0
        self.models = 0

    def time_workload(self, *args: Any, **kwargs: Any) -> float:
        self.workloads += 1
        return super().time_workload(*args, **kwargs)

    def measure(self, *args: Any, **kwargs: Any) -> float:
        self.models += 1
        return super().measure(*args, **kwargs)


def _record(rank: int, out: Path) -> dict[str, Any]:
    """One rank: the primitives, then the pipeline."""
    return {"primitives": _primitives(rank), "pipeline": _pipeline(rank, out)}


def _pipeline(rank: int, out: Path) -> dict[str, Any]:
    model = DistributedDataParallel(make_model())
    timer = CountingLatency(repeats=1, warmup=0, flush_mb=1, progress=False, calibrate="factor",
                            cache_dir=out / f"cache{rank}")      # each rank its own empty cache: timing would show
    spec, handle = build_spec(model, example_input(), data=batches(rank), loss_fn=F.cross_entropy,
                              latency=timer, costs=("latency", "params"), step=16)
    result = distributed.solve_on_rank0(spec, BUDGET)
    small = handle.apply(result)
    record: dict[str, Any] = {
        "spec": mdp_opt.dumps(spec), "result": result.to_dict(), "workloads": timer.workloads,
        "models": timer.models, "structure": str(small),
        "pruned": {k: v.clone() for k, v in small.state_dict().items()}}
    ddp = DistributedDataParallel(small)                     # the recipe: wrap again, new optimizer
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    inputs, targets = batches(rank)[0]
    loss = F.cross_entropy(ddp(inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    record["loss"] = float(loss)
    record["trained"] = {k: p.detach().clone() for k, p in small.named_parameters()}
    return record


def _primitives(rank: int) -> dict[str, Any]:
    """Each primitive under a real process group; outcomes (values or error texts) recorded per rank."""
    seen: dict[str, Any] = {}

    def attempt(label: str, fn: Any) -> None:
        try:
            seen[label] = ("ok", fn())
        except Exception as e:
            seen[label] = (type(e).__name__, str(e))

    seen["rank"] = distributed.rank()
    seen["is_distributed"] = distributed.is_distributed()
    attempt("sum", lambda: distributed.sum_across_ranks({"a": np.full(3, rank + 1.0), "b": np.eye(2) * rank}))
    attempt("other_keys", lambda: distributed.sum_across_ranks(
        {"shared": np.ones(2), ("only_on_rank0" if rank == 0 else "only_on_rank1"): np.ones(2)}))
    attempt("other_shape", lambda: distributed.sum_across_ranks({"scores": np.ones(2 + rank)}))
    attempt("from_rank0", lambda: distributed.from_rank0({"answer": 42} if rank == 0 else {"answer": -1}))
    attempt("on_rank0", lambda: distributed.on_rank0(lambda: f"computed on rank {distributed.rank()}"))
    attempt("on_rank0_error", lambda: distributed.on_rank0(lambda: 1 / 0))

    def fails_on_rank1() -> int:
        if rank == 1:
            raise ValueError("data: rank 1 has no batches")
        return rank

    attempt("collectively_error", lambda: distributed.collectively(fails_on_rank1))
    spec = mdp_opt.examples.make("chain")
    attempt("solve", lambda: distributed.solve_on_rank0(spec, "50%").kept)
    attempt("solve_error", lambda: distributed.solve_on_rank0(spec, "fifty"))

    def broken_timer(workload: Any) -> float:
        raise ValueError(f"latency: no timer on rank {distributed.rank()}")

    attempt("build_latency_error", lambda: build_spec(make_model(), example_input(), data=batches(rank),
                                                      loss_fn=F.cross_entropy, latency=broken_timer, step=8))
    attempt("build_data_error", lambda: build_spec(make_model(), example_input(), data=batches(rank)[:3 * (1 - rank)],
                                                   loss_fn=F.cross_entropy, latency="flops", step=8))
    return seen


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_ranks(_record, tmp_path_factory.mktemp("ddp"))


@pytest.fixture
def ranks(spawned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["pipeline"] for r in spawned]


@pytest.fixture
def primitives(spawned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["primitives"] for r in spawned]


@pytest.mark.slow
def test_every_rank_builds_the_same_spec(ranks):
    assert ranks[0]["spec"] == ranks[1]["spec"]
    meta = mdp_opt.loads(ranks[0]["spec"]).meta
    assert meta["unwrapped"].startswith("DistributedDataParallel")
    assert "latency_calibration" in meta          # rank 0's calibration record reached rank 1
    assert meta["importance_check"]["batches"] == 6 and meta["importance_check"]["samples"] == 24


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mdp_opt.adapters.torch.ImportanceWarning")   # few batches, untrained model
def test_importance_is_that_of_the_union_of_the_batches(ranks):
    spec = mdp_opt.loads(ranks[0]["spec"])
    union = [b for r in range(WORLD) for b in batches(r)]
    single, _ = build_spec(make_model(), example_input(), data=union, loss_fn=F.cross_entropy, latency="flops",
                           costs=("params",), step=16)
    assert [(t.dims, t.block) for t in spec.objective] == [(t.dims, t.block) for t in single.objective]
    for ours, theirs in zip(spec.objective, single.objective):
        np.testing.assert_allclose(ours.table, theirs.table, rtol=1e-9, atol=1e-12)
    assert spec.dims == single.dims and spec.blocks == single.blocks
    assert [(t.dims, t.block, t.table.tolist()) for t in spec.costs["params"]] \
        == [(t.dims, t.block, t.table.tolist()) for t in single.costs["params"]]     # computed locally, exact
    # one rank's batches alone give another importance: the sum is what made them equal
    alone, _ = build_spec(make_model(), example_input(), data=batches(0), loss_fn=F.cross_entropy, latency="flops",
                          costs=("params",), step=16)
    assert not all(np.allclose(a.table, b.table) for a, b in zip(alone.objective, single.objective))


@pytest.mark.slow
def test_latency_is_measured_on_rank0_only(ranks):
    assert ranks[0]["workloads"] > 0 and ranks[0]["models"] > 0
    assert ranks[1]["workloads"] == 0 and ranks[1]["models"] == 0


@pytest.mark.slow
def test_solve_on_rank0_and_apply_give_identical_models(ranks):
    assert ranks[0]["result"] == ranks[1]["result"]
    assert any(not active for active in ranks[0]["result"]["active"].values()) or any(
        k < max(d.choices) for d in mdp_opt.loads(ranks[0]["spec"]).dims for k in [ranks[0]["result"]["kept"][d.name]])
    assert ranks[0]["structure"] == ranks[1]["structure"]
    first, second = ranks[0]["pruned"], ranks[1]["pruned"]
    assert list(first) == list(second)
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.slow
def test_one_ddp_training_step_after_rewrapping(ranks):
    assert all(np.isfinite(r["loss"]) for r in ranks)
    assert ranks[0]["loss"] != ranks[1]["loss"]            # each rank trained on its own batch ...
    first, second = ranks[0]["trained"], ranks[1]["trained"]
    for name in first:                                      # ... and DDP averaged the gradients
        assert torch.allclose(first[name], second[name], atol=1e-6), name
    moved = [n for n in first if not torch.equal(first[n], ranks[0]["pruned"][n])]
    assert moved


@pytest.mark.slow
def test_sum_across_ranks_and_from_rank0(primitives):
    assert [p["rank"] for p in primitives] == [0, 1] and all(p["is_distributed"] for p in primitives)
    for p in primitives:
        status, summed = p["sum"]
        assert status == "ok"
        np.testing.assert_array_equal(summed["a"], np.full(3, 3.0))
        np.testing.assert_array_equal(summed["b"], np.eye(2))
        assert p["from_rank0"] == ("ok", {"answer": 42})
        assert p["on_rank0"] == ("ok", "computed on rank 0")


@pytest.mark.slow
def test_sum_across_ranks_refuses_other_keys_or_shapes(primitives):
    for p in primitives:
        status, text = p["other_keys"]
        assert status == "RuntimeError" and "only_on_rank0" in text and "only_on_rank1" in text
        status, text = p["other_shape"]
        assert status == "RuntimeError" and "scores" in text


@pytest.mark.slow
def test_errors_reach_every_rank(primitives):
    assert primitives[0]["on_rank0_error"][0] == "ZeroDivisionError"
    assert primitives[1]["on_rank0_error"][0] == "RuntimeError" and "ZeroDivisionError" in \
        primitives[1]["on_rank0_error"][1]
    assert primitives[1]["collectively_error"] == ("ValueError", "data: rank 1 has no batches")
    status, text = primitives[0]["collectively_error"]
    assert status == "RuntimeError" and "rank 1" in text and "no batches" in text


@pytest.mark.slow
def test_build_spec_errors_reach_every_rank(primitives):
    """A failure of rank 0's latency, or of one rank's batches, stops every rank (none waits forever)."""
    assert primitives[0]["build_latency_error"] == ("ValueError", "latency: no timer on rank 0")
    status, text = primitives[1]["build_latency_error"]
    assert status == "RuntimeError" and "rank 0" in text and "no timer" in text
    status, text = primitives[1]["build_data_error"]
    assert status == "ValueError" and "data: no batches" in text
    status, text = primitives[0]["build_data_error"]
    assert status == "RuntimeError" and "rank 1" in text and "no batches" in text


@pytest.mark.slow
def test_solve_on_rank0(primitives):
    spec = mdp_opt.examples.make("chain")
    assert primitives[0]["solve"] == primitives[1]["solve"] == ("ok", mdp_opt.solve(spec, "50%").kept)
    assert primitives[0]["solve_error"][0] != "ok"
    assert primitives[1]["solve_error"][0] == "RuntimeError" and "rank 0" in primitives[1]["solve_error"][1]


def test_outside_a_process_group_the_primitives_are_the_identity():
    assert not distributed.is_distributed() and distributed.rank() == 0
    assert distributed.from_rank0({"x": 1}) == {"x": 1}
    assert distributed.on_rank0(lambda: 5) == 5
    summed = distributed.sum_across_ranks({"a": np.arange(3)})
    assert summed["a"].dtype == np.float64 and list(summed["a"]) == [0, 1, 2]
    model = nn.Linear(2, 2)
    assert distributed.unwrap_ddp(model) is model


@pytest.mark.filterwarnings("ignore::mdp_opt.adapters.torch.ImportanceWarning")
def test_build_spec_leaves_batchnorm_statistics_of_a_training_model_alone():
    """Each rank scores its own batches in training mode; the replicas must keep the same statistics."""
    model = make_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_spec(model, example_input(), data=batches(1), loss_fn=F.cross_entropy, latency="flops", step=8)
    assert model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def _abort_once(marker: str, rank: int, out: Path) -> dict[str, Any]:
    """Rank 1 aborts (as gloo's C++ layer does) the first time only; a rank's record otherwise."""
    if rank == 1 and not Path(marker).exists():
        Path(marker).touch()
        os.abort()
    return {"rank": rank}


def _abort_always(rank: int, out: Path) -> dict[str, Any]:
    if rank == 1:
        os.abort()
    return {"rank": rank}


@pytest.mark.slow
def test_a_rank_aborting_once_is_run_again_with_a_warning_and_twice_fails(tmp_path):
    """The gloo abort seen on CI (a rank dies by SIGABRT, no Python traceback) is retried once, never more."""
    (tmp_path / "once").mkdir()
    (tmp_path / "always").mkdir()
    with pytest.warns(UserWarning, match="aborted in gloo"):
        ranks = run_ranks(functools.partial(_abort_once, str(tmp_path / "aborted")), tmp_path / "once")
    assert [r["rank"] for r in ranks] == [0, 1]
    with pytest.warns(UserWarning, match="aborted in gloo"):
        with pytest.raises(torch.multiprocessing.ProcessExitedException):
            run_ranks(_abort_always, tmp_path / "always")
