"""Latency tables built on a pool of devices through Ray (`latency_pool`): a local Ray cluster of 2 one-CPU
workers builds the same tables as the single-process builder, each shape timed once, merged into the same
on-disk cache; workers of another device identity are refused."""

from __future__ import annotations

import json
import statistics
import sys

import pytest

torch = pytest.importorskip("torch")

from mdp_opt.adapters.torch import LatencyPool, MeasuredLatency, MixedDevicesError, Workload  # noqa: E402
from mdp_opt.adapters.torch.latency_cache import TAG_ENV  # noqa: E402

from test_torch_latency_cache import CPU, WORKLOADS, read_v2  # noqa: E402

SETTINGS = dict(progress=False, repeats=5, warmup=1, calibrate=False)


def test_without_ray_a_pool_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)            # as if Ray were not installed
    with pytest.raises(ImportError, match=r"pool='local:2': Ray is not installed; pip install 'mdp-opt\[ray\]'"):
        MeasuredLatency(pool="local:2")
    with pytest.raises(ValueError, match="pool: expected None, 'local:N'"):
        MeasuredLatency(pool=2)


def test_without_a_pool_nothing_of_ray_is_imported(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    values = MeasuredLatency(cache_dir=tmp_path, **SETTINGS)(WORKLOADS[:2], CPU, torch.float32, 2)
    assert len(values) == 2


@pytest.fixture(scope="module")
def ray_pool():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mdp-opt[ray]')")
    ray.shutdown()
    pool = LatencyPool("local:2")           # a local Ray instance with 2 CPUs: 2 one-thread workers
    yield pool
    pool.close()
    ray.shutdown()


@pytest.mark.slow
def test_a_pool_of_two_builds_the_single_process_tables_each_shape_timed_once(tmp_path, ray_pool):
    here = MeasuredLatency(cache_dir=tmp_path / "here", **SETTINGS)
    local = dict(zip((w.key for w in WORKLOADS), here(WORKLOADS, CPU, torch.float32, 2)))
    pooled = MeasuredLatency(cache_dir=tmp_path / "pool", pool=ray_pool, **SETTINGS)
    values = pooled(WORKLOADS, CPU, torch.float32, 2)

    timed = [k for worker in ray_pool.timed for k in worker]
    assert len(ray_pool.timed) == 2 and all(ray_pool.timed)  # both workers took part
    assert sorted(timed) == sorted(local)                    # every distinct shape timed exactly once
    on_disk = read_v2(pooled.cache_file(CPU, torch.float32, 2))
    assert on_disk == dict(zip((w.key for w in WORKLOADS), values)) and set(on_disk) == set(local)
    data = json.loads(pooled.cache_file(CPU, torch.float32, 2).read_text())
    assert list(data["devices"].values()) == [here.identity(CPU)]

    # Measurement noise: each value is the median of 5 runs of a layer of a few microseconds to a fraction
    # of a millisecond, taken in two processes that share 2 busy cores (and their L2/L3) with each other and
    # other users. Per entry the two builders can differ by tens of percent; the typical ratio and the
    # whole table's sum must agree within a factor of 2, which a wrong mapping of keys to values, a
    # different workload or a missing flush (2-5x faster at this size) would break.
    ratios = [values[i] / local[w.key] for i, w in enumerate(WORKLOADS) if local[w.key] > 0.01]
    assert 0.5 < statistics.median(ratios) < 2
    assert 0.5 < sum(values) / sum(local.values()) < 2


@pytest.mark.slow
def test_the_pool_times_only_what_the_cache_lacks_and_merges_into_it(tmp_path, ray_pool):
    pooled = MeasuredLatency(cache_dir=tmp_path, pool=ray_pool, **SETTINGS)
    half = WORKLOADS[: len(WORKLOADS) // 2]
    before = dict(zip((w.key for w in half), MeasuredLatency(cache_dir=tmp_path, **SETTINGS)(
        half, CPU, torch.float32, 2)))
    pooled(WORKLOADS, CPU, torch.float32, 2)
    timed = [k for worker in ray_pool.timed for k in worker]
    assert sorted(timed) == sorted(w.key for w in WORKLOADS[len(half):])
    on_disk = read_v2(pooled.cache_file(CPU, torch.float32, 2))
    assert set(on_disk) == {w.key for w in WORKLOADS} and all(on_disk[k] == v for k, v in before.items())


@pytest.mark.slow
def test_workers_of_another_device_identity_are_refused_before_anything_is_timed(tmp_path, ray_pool):
    """The workers carry a device tag this process lacks: their identity differs from the caller's, as a pool
    mixing two CPU models or clock settings would."""
    ray_pool.close()                          # free the cluster's 2 CPUs for this pool's workers
    tagged = LatencyPool("local:2", runtime_env={"env_vars": {TAG_ENV: "overclocked"}}, start_timeout_s=120)
    pooled = MeasuredLatency(cache_dir=tmp_path, pool=tagged, **SETTINGS)
    try:
        with pytest.raises(MixedDevicesError, match=r"worker 0 times on .*overclocked.* but the tables in .* "
                                                    r"are for type=cpu"):
            pooled(WORKLOADS, CPU, torch.float32, 2)
    finally:
        tagged.close()
    assert tagged.timed == [] and not pooled.cache_file(CPU, torch.float32, 2).exists()


@pytest.mark.slow
def test_a_layer_that_fails_on_a_worker_raises_its_own_error_and_keeps_the_rest(tmp_path, ray_pool):
    def fail(device, dtype):
        raise RuntimeError("shape mismatch")

    pooled = MeasuredLatency(cache_dir=tmp_path, pool=ray_pool, **SETTINGS)
    with pytest.raises(RuntimeError, match="cannot run broken-layer at this width"):
        pooled([*WORKLOADS[:6], Workload("broken-layer", 0, 0, fail)], CPU, torch.float32, 2)
    saved = read_v2(pooled.cache_file(CPU, torch.float32, 2))
    assert "broken-layer" not in saved and set(saved) <= {w.key for w in WORKLOADS[:6]} and saved
