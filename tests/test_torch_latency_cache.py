"""The on-disk latency cache (`latency_cache`): every bad entry is refused and measured again with a warning
naming the file, the key and the value; corrupt files are rewritten; devices are never mixed; old caches are
migrated; concurrent writers neither tear the file nor lose entries; long builds checkpoint."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from mdp_opt.adapters.torch import (LatencyCacheWarning, MeasuredLatency, MixedDevicesError, Workload,  # noqa: E402
                                    build_spec)
from mdp_opt.adapters.torch.latency_cache import (FORMAT, MAX_MS, TAG_ENV, VERSION, LatencyCache,  # noqa: E402
                                                  check_value, identity_id)

from torch_models import small_resnet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
X = torch.randn(2, 3, 16, 16)
CPU = torch.device("cpu")


def workloads() -> list[Workload]:
    """The distinct layer shapes of a small real ResNet (captured from build_spec)."""
    torch.manual_seed(0)
    seen: list[Workload] = []

    def capture(w: Workload) -> float:
        seen.append(w)
        return float(w.macs)

    with pytest.warns():   # one batch of importance: the adapter warns, which is not what these tests check
        build_spec(small_resnet().eval(), X, data=[(X, torch.tensor([0, 1]))], loss_fn=F.cross_entropy,
                   latency=capture, step=32, blocks=None)
    return list({w.key: w for w in seen}.values())


WORKLOADS = workloads()


def latency(tmp_path: Path, **kwargs) -> MeasuredLatency:
    return MeasuredLatency(cache_dir=tmp_path, progress=False, repeats=1, warmup=0, calibrate=False, **kwargs)


def write_v2(path: Path, entries: dict, identity: dict) -> None:
    device = identity_id(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "devices": {device: identity},
                                "entries": {k: {"ms": v, "device": device} for k, v in entries.items()}}))


def read_v2(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["version"] == VERSION
    return {k: e["ms"] for k, e in data["entries"].items()}


BAD = [("abc", "not a number"), ([1], "not a number"), (None, "not a number"), (True, "not a number"),
       (float("nan"), "not finite"), (float("inf"), "not finite"), (-1.0, "negative"), (1e6, "above"), (10 ** 400, "above")]


@pytest.mark.parametrize("form", ["v2", "old"])
@pytest.mark.parametrize("bad, reason", BAD, ids=[repr(b)[:12] for b, _ in BAD])
def test_every_bad_entry_is_measured_again_with_a_warning_naming_file_key_and_value(tmp_path, bad, reason, form):
    lat = latency(tmp_path)
    path = lat.cache_file(CPU, torch.float32, 2)
    good, victim = WORKLOADS[0].key, WORKLOADS[1].key
    entries = {good: 0.5, victim: bad}
    if form == "v2":
        write_v2(path, entries, lat.identity(CPU))
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries))        # json writes NaN / Infinity literals, as a float() cache did
    with pytest.warns(LatencyCacheWarning) as caught:
        values = lat(WORKLOADS[:2], CPU, torch.float32, 2)
    messages = [str(w.message) for w in caught]
    assert any(str(path) in m and repr(victim) in m and repr(bad)[:20] in m and reason in m for m in messages)
    assert values[0] == 0.5                                   # the valid entry is used as it is
    assert check_value(values[1]) is None and values[1] != bad  # the bad one was measured again
    assert read_v2(path) == {good: 0.5, victim: values[1]}    # and the file rewritten in the current format


def test_zero_is_a_valid_latency(tmp_path):
    """The builder stores 0.0 for a layer cheaper than the call overhead it subtracts, so 0.0 is used."""
    lat = latency(tmp_path)
    path = lat.cache_file(CPU, torch.float32, 2)
    write_v2(path, {WORKLOADS[0].key: 0.0}, lat.identity(CPU))
    assert check_value(0.0) is None and check_value(MAX_MS) is None and check_value(MAX_MS * 1.01)
    assert lat(WORKLOADS[:1], CPU, torch.float32, 2) == [0.0]


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", "\x00\xff garbage",
                                  '{"format": "mdp-opt latency cache", "version": 99, "devices": {}, "entries": {}}',
                                  '{"format": "mdp-opt latency cache", "version": 2, "devices": {}, "entries": []}'])
def test_a_corrupt_file_is_reported_measured_again_and_rewritten(tmp_path, text):
    lat = latency(tmp_path)
    path = lat.cache_file(CPU, torch.float32, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.warns(LatencyCacheWarning, match="measured again and the file rewritten") as caught:
        values = lat(WORKLOADS[:3], CPU, torch.float32, 2)
    assert any(str(path) in str(w.message) for w in caught)
    assert read_v2(path) == {w.key: v for w, v in zip(WORKLOADS[:3], values)}


def test_an_entry_of_another_entry_form_is_measured_again(tmp_path):
    lat = latency(tmp_path)
    path = lat.cache_file(CPU, torch.float32, 2)
    write_v2(path, {WORKLOADS[0].key: 0.25}, lat.identity(CPU))
    data = json.loads(path.read_text())
    data["entries"][WORKLOADS[1].key] = 0.3              # a bare number where an entry object belongs
    path.write_text(json.dumps(data))
    with pytest.warns(LatencyCacheWarning, match="is not {'ms'"):
        values = lat(WORKLOADS[:2], CPU, torch.float32, 2)
    assert values[0] == 0.25 and read_v2(path)[WORKLOADS[1].key] == values[1]


def test_entries_of_another_device_type_are_refused_naming_both_devices_and_the_file(tmp_path):
    lat = latency(tmp_path)
    path = lat.cache_file(CPU, torch.float32, 2)
    other = {**lat.identity(CPU), "name": "Other CPU 9000", "cores": 64}
    write_v2(path, {WORKLOADS[0].key: 0.5}, other)
    before = path.read_text()
    with pytest.raises(MixedDevicesError) as refused:
        lat(WORKLOADS[:2], CPU, torch.float32, 2)
    message = str(refused.value)
    assert str(path) in message and "Other CPU 9000" in message and str(lat.identity(CPU)["name"]) in message
    assert path.read_text() == before                    # nothing measured, nothing written


def test_a_device_tag_is_part_of_the_identity(tmp_path, monkeypatch):
    lat = latency(tmp_path)
    lat(WORKLOADS[:1], CPU, torch.float32, 2)
    monkeypatch.setenv(TAG_ENV, "clocks-locked-1GHz")
    assert lat.identity(CPU)["tag"] == "clocks-locked-1GHz"
    with pytest.raises(MixedDevicesError, match="clocks-locked-1GHz"):
        lat(WORKLOADS[:1], CPU, torch.float32, 2)


def test_the_identity_names_the_device_type_not_the_host(tmp_path):
    identity = latency(tmp_path).identity(CPU)
    assert set(identity) == {"type", "name", "cores", "torch", "runtime"}
    assert os.uname().nodename not in json.dumps(identity)


def test_an_old_format_cache_is_migrated_with_a_warning(tmp_path):
    lat = latency(tmp_path)
    path = lat.cache_file(CPU, torch.float32, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = {w.key: 0.1 * (i + 1) for i, w in enumerate(WORKLOADS[:3])}
    path.write_text(json.dumps(old))
    with pytest.warns(LatencyCacheWarning, match="old cache with no device identity: its 3 valid entries are adopted"):
        values = lat(WORKLOADS[:4], CPU, torch.float32, 2)
    assert values[:3] == list(old.values())               # adopted, not measured again
    data = json.loads(path.read_text())
    assert list(data["devices"].values()) == [lat.identity(CPU)]
    assert read_v2(path) == {**old, WORKLOADS[3].key: values[3]}


def test_a_measured_value_that_is_not_a_latency_is_refused(tmp_path):
    cache = LatencyCache(tmp_path / "c.json", {"type": "cpu"})
    with pytest.raises(ValueError, match="measured nan, not finite"):
        cache.add("k", math.nan)


def test_a_checkpoint_is_written_when_due_and_not_before(tmp_path):
    path = tmp_path / "c.json"
    lazy = LatencyCache(path, {"type": "cpu"}, checkpoint_s=3600)
    lazy.add("a", 1.0)
    assert not path.exists()
    eager = LatencyCache(path, {"type": "cpu"}, checkpoint_s=0)
    eager.add("b", 2.0)
    assert read_v2(path) == {"b": 2.0}
    lazy.flush()                                          # merged with what is on disk, nothing lost
    assert read_v2(path) == {"a": 1.0, "b": 2.0}


def test_a_failing_layer_keeps_the_shapes_measured_before_it(tmp_path):
    def fail(device, dtype):
        raise RuntimeError("shape mismatch")

    lat = latency(tmp_path, checkpoint_s=3600)
    broken = Workload("broken-layer", 0, 0, fail)
    with pytest.raises(RuntimeError, match="cannot run broken-layer at this width"):
        lat([*WORKLOADS[:3], broken], CPU, torch.float32, 2)
    assert set(read_v2(lat.cache_file(CPU, torch.float32, 2))) == {w.key for w in WORKLOADS[:3]}


WRITER = textwrap.dedent("""
    import sys
    from mdp_opt.adapters.torch.latency_cache import LatencyCache
    path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = LatencyCache(path, {"type": "cpu", "name": "test"}, checkpoint_s=0)
    cache.load()
    for i in range(n):
        cache.add(f"{name}-{i}", float(i))      # checkpoint_s=0: every entry is a locked merge-and-replace
        cache.add(f"shared-{i}", 1.0)           # every writer also measures the same shapes
    cache.flush()
""")


def test_concurrent_writers_never_tear_the_file_nor_lose_entries(tmp_path):
    path = tmp_path / "cache.json"
    writers, n = 3, 40
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{j}", str(n)], cwd=ROOT)
             for j in range(writers)]
    reads = 0
    try:
        while any(p.poll() is None for p in procs):
            if path.exists():
                read_v2(path)               # never empty, never half-written: it always parses whole
                reads += 1
            time.sleep(0.002)
    finally:
        codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0] * writers
    final = read_v2(path)
    expected = {f"w{j}-{i}": float(i) for j in range(writers) for i in range(n)} | {f"shared-{i}": 1.0
                                                                                    for i in range(n)}
    assert final == expected and reads > 10
    assert not list(tmp_path.glob("*.tmp"))


CRASHER = textwrap.dedent("""
    import sys, time
    from mdp_opt.adapters.torch.latency_cache import LatencyCache
    cache = LatencyCache(sys.argv[1], {"type": "cpu", "name": "test"}, checkpoint_s=0.05)
    for i in range(100000):
        cache.add(f"shape-{i}", 0.5)
        time.sleep(0.01)
""")


def test_a_killed_build_leaves_its_last_checkpoint(tmp_path):
    path = tmp_path / "cache.json"
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(path)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (path.exists() and len(read_v2(path)) >= 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entries = read_v2(path)                 # a whole file, the last checkpoint before the kill
    assert len(entries) >= 20 and entries == {f"shape-{i}": 0.5 for i in range(len(entries))}


def test_tables_timed_in_another_heap_state_live_in_another_file(tmp_path, monkeypatch):
    """Large blocks faulted in afresh on every run (an older steady heap) read up to 7x slower: never mixed."""
    import mdp_opt.adapters.torch.latency as latency_module
    lat = latency(tmp_path)
    steady = lat.cache_file(CPU, torch.float32, 2)
    monkeypatch.setattr(latency_module, "heap_tag", lambda: "heap-default")
    assert lat.cache_file(CPU, torch.float32, 2) != steady
