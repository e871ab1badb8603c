"""IterativePruner under torch.distributed: 2 CPU processes (gloo), a DistributedDataParallel small ResNet, each
rank training on its own batches and pruning in steps.

One spawned run (two processes, spawned once for the module) trains the DDP-wrapped model with an
`IterativePruner` (given the DDP wrapper; exact MACs as the latency), rebuilds the wrapper in `on_pruned` after
each of the 2 pruning steps, trains on, and records what each rank saw. The tests compare the ranks with each
other and with one process that runs the same training on the union of the batches: at every iteration it
backwards rank 0's and rank 1's batch separately (each is one scored batch, with the gradient of its own loss, as
each rank's hooks see it before DDP averages) and steps with the average of the two gradients (DDP's update).
Slow lane: the spawn costs 10-20 s here (mostly starting Python and importing torch in two processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from mdp_opt.adapters.torch import IterativePruner  # noqa: E402

from ddp_ranks import WORLD, run_ranks  # noqa: E402
from torch_models import small_resnet  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::mdp_opt.adapters.torch.ImportanceWarning")

ITERATIONS = 8                      # prunes after iterations 3 and 6, then trains 2 more
OPTIONS: dict[str, Any] = dict(steps=2, every=3, latency="flops", step=8)
BUDGET = {"latency": "25%"}
LR = 0.05


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return small_resnet()


def batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank `rank`'s own batches, one per iteration."""
    g = torch.Generator().manual_seed(200 + rank)
    return [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(ITERATIONS)]


def example_input() -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=LR, momentum=0.9)


def _record(rank: int, out: Path) -> dict[str, Any]:
    record = _train(rank)
    record["latency_calls"] = _latency_calls()
    record["infeasible"] = _infeasible(rank)
    return record


def _train(rank: int) -> dict[str, Any]:
    """The recipe of the README: the pruner given the DDP model, the wrapper rebuilt in `on_pruned`."""
    record: dict[str, Any] = {"scores_before": [], "wrappers": []}
    ddp = DistributedDataParallel(make_model())
    optimizer = make_optimizer(ddp.parameters())

    def rewrap(pruner: IterativePruner, step: Any) -> None:
        nonlocal ddp
        ddp = DistributedDataParallel(pruner.model)       # the reducer holds the old parameters: a new wrapper
        record["wrappers"].append(step.step)

    pruner = IterativePruner(ddp, example_input(), BUDGET, optimizer=optimizer, on_pruned=rewrap, **OPTIONS)
    record["pruner_model_is_inner"] = pruner.model is ddp.module
    ddp.train()
    for it, (x, y) in enumerate(batches(rank)):
        optimizer.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()
        if pruner.iteration + 1 in pruner.schedule:
            record["scores_before"].append(pruner.scores())        # this rank's own, before the sum
        pruner.step()
    ddp.eval()
    with torch.no_grad():
        ddp(example_input())               # DDP sends rank 0's buffers (BatchNorm statistics) at each forward
    record["history"] = [h.to_dict() for h in pruner.history]
    record["configurations"] = [c.to_dict() for c in pruner.configurations]
    record["structure"] = str(pruner.model)
    record["state"] = {k: v.detach().clone() for k, v in pruner.model.state_dict().items()}
    record["optimizer_params"] = sum(len(g["params"]) for g in optimizer.param_groups)
    record["model_params"] = len(list(pruner.model.parameters()))
    record["wrapped_same_model"] = ddp.module is pruner.model
    pruner.close()
    return record


def _latency_calls() -> int:
    """A latency callable (exact MACs) is called on rank 0 only: the others get rank 0's tables."""
    calls = []

    def latency(workload: Any) -> float:
        calls.append(workload.key)
        return float(workload.macs)

    model = make_model()
    pruner = IterativePruner(DistributedDataParallel(model), example_input(), BUDGET, latency=latency,
                             **{k: v for k, v in OPTIONS.items() if k != "latency"})
    pruner.close()
    return len(calls)


def _infeasible(rank: int) -> tuple[str, str]:
    """A budget no configuration meets: every rank raises (none waits for an answer that will not come)."""
    ddp = DistributedDataParallel(make_model())
    pruner = IterativePruner(ddp, example_input(), {"latency": "1%"}, steps=1, every=1, latency="flops", step=8)
    x, y = batches(rank)[0]
    F.cross_entropy(ddp(x), y).backward()
    try:
        pruner.step()
        return ("ok", "")
    except Exception as e:
        return (type(e).__name__, str(e))
    finally:
        pruner.close()


def single_process() -> dict[str, Any]:
    """The same run in one process over the union of the batches (see the module docstring)."""
    model = make_model()
    optimizer = make_optimizer(model.parameters())
    pruner = IterativePruner(model, example_input(), BUDGET, optimizer=optimizer, **OPTIONS)
    scores_before = []
    model.train()
    data = [batches(r) for r in range(WORLD)]
    for it in range(ITERATIONS):
        optimizer.zero_grad()
        for r in range(WORLD):
            x, y = data[r][it]
            F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.grad /= WORLD
        optimizer.step()
        if pruner.iteration + 1 in pruner.schedule:
            scores_before.append(pruner.scores())
        pruner.step()
    out = {"scores_before": scores_before, "history": [h.to_dict() for h in pruner.history],
           "configurations": [c.to_dict() for c in pruner.configurations],
           "params": {k: p.detach().clone() for k, p in model.named_parameters()}}
    pruner.close()
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ddp_iterative")
    return run_ranks(_record, tmp)


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return single_process()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_pruner_unwraps_ddp_and_the_wrapper_is_rebuilt_after_each_step(ranks):
    for r in ranks:
        assert r["pruner_model_is_inner"] and r["wrapped_same_model"]
        assert r["wrappers"] == [1, 2]
        assert r["optimizer_params"] == r["model_params"]      # removed parameters left the optimizer


@pytest.mark.slow
def test_every_rank_ends_with_the_same_structure_and_weights(ranks):
    first, second = ranks
    assert first["configurations"] == second["configurations"]
    assert first["structure"] == second["structure"]
    assert first["configurations"][-1]["removed"], "the budget should remove a block"
    assert list(first["state"]) == list(second["state"])
    for name in first["state"]:
        assert torch.equal(first["state"][name], second["state"][name]), name


@pytest.mark.slow
def test_every_rank_reports_the_same_steps(ranks):
    assert len(ranks[0]["history"]) == 2
    assert ranks[0]["history"] == ranks[1]["history"]
    assert [h["batches"] for h in ranks[0]["history"]] == [WORLD * 3, WORLD * 3]   # every rank's batches counted


@pytest.mark.slow
def test_importance_is_the_sum_over_the_ranks_batches(ranks, single):
    """Each rank scores its own batches with its own loss's gradient (not DDP's average); their sum is the
    importance one process computes over the union of the batches, scoring each batch on its own."""
    for step in range(2):
        mine = [r["scores_before"][step] for r in ranks]
        assert set(mine[0]) == set(mine[1]) == set(single["scores_before"][step])
        for key, theirs in single["scores_before"][step].items():
            np.testing.assert_allclose(mine[0][key] + mine[1][key], theirs, rtol=1e-5, atol=1e-12, err_msg=key)
    # the ranks' own scores differ (each its batches), so the sum is what made them equal
    first = ranks[0]["scores_before"][0]
    assert not all(np.allclose(first[k], ranks[1]["scores_before"][0][k]) for k in first)


@pytest.mark.slow
def test_every_step_decides_as_one_process_over_the_union(ranks, single):
    assert ranks[0]["configurations"] == single["configurations"]
    for ours, theirs in zip(ranks[0]["history"], single["history"]):
        assert ours["objective"] == pytest.approx(theirs["objective"], rel=1e-6)
        assert {k: v for k, v in ours.items() if k != "objective"} == \
            {k: v for k, v in theirs.items() if k != "objective"}
    params = {k: v for k, v in ranks[0]["state"].items() if k in single["params"]}
    assert list(params) == list(single["params"])
    for name, value in single["params"].items():
        torch.testing.assert_close(params[name], value, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_latency_is_computed_on_rank0_only(ranks):
    assert ranks[0]["latency_calls"] > 0
    assert ranks[1]["latency_calls"] == 0


@pytest.mark.slow
def test_an_infeasible_step_raises_on_every_rank(ranks):
    for r in ranks:
        status, text = r["infeasible"]
        assert status == "RuntimeError" and "no configuration within budget" in text
