"""Sweeps on a Ray pool: the same rows and points as the local run (`mdp_opt.pool`, `bench`/`frontier` --ray)."""

from __future__ import annotations

import pytest

import mdp_opt
from mdp_opt import bench
from mdp_opt.budgets import budget_limit
from mdp_opt.pool import run_jobs

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mdp-opt[ray]')")

TINY = ["example:chain,depth=4,choices=3", "example:resnet50,blocks=[2],choices=2"]


@pytest.fixture(scope="module")
def pool():
    """A local Ray instance with 2 CPUs (each job asks for one)."""
    mdp_opt.pool.connect("local:2")
    yield "local:2"
    ray.shutdown()


def comparable(rows):
    return [(r.spec, r.backend, r.status, r.objective, r.bound, r.agree) for r in rows]


@pytest.mark.slow
def test_bench_on_the_pool_gives_the_local_rows(pool):
    backends = mdp_opt.backends_with(mdp_opt.Feature.EXACT)
    here = bench.bench(TINY, backends=backends)
    there = bench.bench(TINY, backends=backends, ray=pool)
    assert comparable(there.rows) == comparable(here.rows) and not there.disagreements


@pytest.mark.slow
def test_frontier_on_the_pool_gives_the_local_points(pool):
    spec = mdp_opt.examples.make("chain", depth=4, choices=3)
    here = mdp_opt.frontier(spec, points=6, backend="cpsat")
    there = mdp_opt.frontier(spec, points=6, backend="cpsat", ray=pool)
    assert [(p.budget, p.objective, p.status) for p in there] == [(p.budget, p.objective, p.status) for p in here]


@pytest.mark.slow
def test_jobs_run_on_the_workers_and_come_back_in_order(pool):
    done = []
    budgets = [float(10 ** i) for i in range(8)]
    results = run_jobs(budget_limit, [(b,) for b in budgets], pool, lambda i, r: done.append(i))
    assert results == [budget_limit(b) for b in budgets] and sorted(done) == list(range(8))


@pytest.mark.slow
def test_another_address_while_connected_is_an_error_not_the_same_session(pool):
    assert mdp_opt.pool.connect(pool) is ray                 # the same address: the session it has
    with pytest.raises(mdp_opt.SpecError, match=r"connected to 'local:2', not 'local:3'.*ray.shutdown\(\)"):
        mdp_opt.pool.connect("local:3")


def test_a_bad_address_is_a_clear_error():
    with pytest.raises(mdp_opt.SpecError, match="^ray: "):
        mdp_opt.pool.connect("")
