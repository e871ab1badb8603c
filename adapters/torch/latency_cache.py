"""The on-disk latency cache: one JSON file per table setting, every entry checked when it is read.

Format (version 2):

    {"format": "mdp-opt latency cache", "version": 2,
     "devices": {"<id>": {"type": "cpu", "name": "Intel(R) Xeon(R) ...", "cores": 2, "torch": "2.13.0",
                          "runtime": "eager2.13.0"}},
     "entries": {"<workload key>": {"ms": 0.123, "device": "<id>"}}}

Each entry records the milliseconds measured and the identity of the device type that measured them
(`device_identity`: what must match for two measurements to be comparable; never the host name, a
device index or anything else that differs between identical devices). Guarantees:

- A value that is not a number (a string, a list, null, a boolean), NaN, infinite, negative, or above
  `MAX_MS` is never used: a `LatencyCacheWarning` names the file, the key and the value, and the shape
  is measured again. 0.0 is a valid value: the builder itself stores it for a layer that costs less than
  the runtime's call overhead it subtracts (a reshape, a view).
- A file that cannot be parsed, or is not this format, is reported the same way (file named), all of its
  shapes are measured again and the file is rewritten.
- Entries measured on another device type raise `MixedDevicesError` (naming both devices and the file):
  tables from two device types are never mixed.
- Version-1 files (a plain `{key: ms}` object, no device) are migrated: their valid entries are adopted as
  measured by the device reading them (the file's name already fixed the device model, dtype, batch,
  threads, flush size, torch version and runtime), with a warning naming the file; delete it to re-measure.
- Several writers (processes, Ray workers, hosts sharing a directory) never lose each other's entries or
  leave a torn file: every write takes a file lock (`<file>.lock`), merges with what is on disk at that
  moment, writes a temporary file and renames it into place. A long build writes a checkpoint at least
  every `CHECKPOINT_S` seconds, so a crash loses little.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from filelock import FileLock, Timeout

from mdp_opt.files import atomic_write_text

FORMAT = "mdp-opt latency cache"
VERSION = 2
MAX_MS = 60_000.0          # one minute for one layer shape: beyond it a value is a unit or typing error
CHECKPOINT_S = 30.0
LOCK_TIMEOUT_S = 120.0
TAG_ENV = "MDP_OPT_DEVICE_TAG"


class LatencyCacheWarning(UserWarning):
    """A latency cache file or entry was unusable (named with its value) and is measured again, or migrated."""


class MixedDevicesError(ValueError):
    """Latency measured on two device types would have been mixed in one table."""


def device_identity(device: Any, runtime_key: str) -> dict[str, Any]:
    """What must match for two latency measurements to be comparable: the device type (CPU model and
    logical core count; GPU name, compute capability and memory), the torch (and CUDA) version, the
    runtime with its version and settings, and `$MDP_OPT_DEVICE_TAG` when set (a label for what the probes
    cannot see, e.g. locked clocks or a power mode). Not the host name, a device index or a process id:
    identical devices on different hosts have the same identity."""
    import torch
    device = torch.device(device)
    identity: dict[str, Any] = {"type": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        identity.update(name=props.name, capability=f"{props.major}.{props.minor}",
                        memory_gb=round(props.total_memory / 2 ** 30), cuda=torch.version.cuda)
    else:
        identity.update(name=cpu_model_name(), cores=os.cpu_count())
    identity.update(torch=torch.__version__, runtime=runtime_key)
    tag = os.environ.get(TAG_ENV)
    if tag:
        identity["tag"] = tag
    return identity


def identity_id(identity: Mapping[str, Any]) -> str:
    """A short stable id of a device identity (used to refer to it from entries)."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def describe_identity(identity: Mapping[str, Any]) -> str:
    """One line naming a device identity, for messages."""
    return ", ".join(f"{k}={v}" for k, v in identity.items())


def cpu_model_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), or the platform's processor string."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return model


def check_value(value: Any) -> str | None:
    """Why `value` cannot be a latency in milliseconds, or None when it can."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "not a number"
    if isinstance(value, float) and not math.isfinite(value):     # (an int is finite, however long)
        return "not finite"
    if value < 0:
        return "negative"
    if value > MAX_MS:
        return f"above {MAX_MS:g} ms (implausible for one layer)"
    return None


class LatencyCache:
    """The entries of one cache file measured by one device identity.

    `load()` reads and checks the file; `add(key, ms)` records a measurement and writes a checkpoint when
    `checkpoint_s` seconds have passed since the last write; `flush()` merges what was added into the file.
    """

    def __init__(self, path: str | Path, identity: Mapping[str, Any], checkpoint_s: float = CHECKPOINT_S) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.device = identity_id(self.identity)
        self.checkpoint_s = checkpoint_s
        self.entries: dict[str, float] = {}
        self._unsaved: dict[str, float] = {}
        self._rewrite = False
        self._last_write = time.monotonic()

    @property
    def lock(self) -> FileLock:
        return FileLock(str(self.path) + ".lock", timeout=LOCK_TIMEOUT_S)

    def load(self) -> dict[str, float]:
        """The valid entries on disk (see the module docstring for what is refused and what is migrated)."""
        entries, needs_rewrite = self._read(warn=True)
        self.entries = {**entries, **self._unsaved}
        self._rewrite = needs_rewrite
        return self.entries

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __getitem__(self, key: str) -> float:
        return self.entries[key]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The distinct keys not in the cache, in their first order."""
        return [k for k in dict.fromkeys(keys) if k not in self.entries]

    def add(self, key: str, ms: float) -> None:
        """Record a measurement of this device; a checkpoint is written when one is due."""
        problem = check_value(ms)
        if problem:
            raise ValueError(f"latency of {key}: measured {ms!r}, {problem}")
        self.entries[key] = self._unsaved[key] = float(ms)
        if time.monotonic() - self._last_write >= self.checkpoint_s:
            self.flush()

    def flush(self) -> None:
        """Merge the entries added since the last write with the file as it is now, under the lock; entries
        already on disk are kept (the first measurement of a shape stands)."""
        if not self._unsaved and not self._rewrite:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.lock:
                on_disk, _ = self._read(warn=False)
                merged = {**self._unsaved, **on_disk}
                atomic_write_text(self.path, self._dumps(merged))
        except Timeout:
            raise TimeoutError(f"latency cache {self.path}: its lock {self.path}.lock was held for over "
                               f"{LOCK_TIMEOUT_S:g} s; if no other process is writing, delete the lock file") from None
        self.entries.update(on_disk)
        self._unsaved.clear()
        self._rewrite = False
        self._last_write = time.monotonic()

    def _dumps(self, entries: Mapping[str, float]) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "devices": {self.device: self.identity},
                           "entries": {k: {"ms": v, "device": self.device} for k, v in sorted(entries.items())}},
                          indent=None, separators=(",", ":"))

    def _read(self, warn: bool) -> tuple[dict[str, float], bool]:
        """(valid entries, whether the file must be rewritten)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}, False
        except (OSError, UnicodeDecodeError) as e:
            self._warn(warn, f"cannot be read ({e}); its shapes are measured again and the file rewritten")
            return {}, True
        try:
            data = json.loads(text)
        except ValueError as e:
            self._warn(warn, f"is not valid JSON ({e}); its shapes are measured again and the file rewritten")
            return {}, True
        if not isinstance(data, dict):
            self._warn(warn, f"holds a {type(data).__name__}, not a cache object; its shapes are measured again "
                             "and the file rewritten")
            return {}, True
        if "format" not in data:
            return self._read_version1(data, warn), True
        if data.get("format") != FORMAT or data.get("version") != VERSION or not isinstance(
                data.get("devices"), dict) or not isinstance(data.get("entries"), dict):
            self._warn(warn, f"is not a version-{VERSION} latency cache (format {data.get('format')!r:.60}, "
                             f"version {data.get('version')!r:.20}); its shapes are measured again and the file "
                             "rewritten")
            return {}, True
        devices, entries, bad = data["devices"], {}, False
        for key, entry in data["entries"].items():
            if not isinstance(entry, dict) or set(entry) != {"ms", "device"}:
                self._warn(warn, f"entry {key!r}: {entry!r:.80} is not {{'ms': ..., 'device': ...}}; measured again")
                bad = True
                continue
            device = entry["device"]
            if device != self.device:
                other = devices.get(device) if isinstance(device, str) else None
                raise MixedDevicesError(
                    f"latency cache {self.path}: entry {key!r} was measured on "
                    f"{describe_identity(other) if isinstance(other, dict) else f'an unknown device {device!r:.40}'}"
                    f", not on this device ({describe_identity(self.identity)}); tables of two device types are "
                    "never mixed: use another cache_dir for this device, or delete the file")
            problem = check_value(entry["ms"])
            if problem:
                self._warn(warn, f"entry {key!r}: {entry['ms']!r:.40} is {problem}; measured again")
                bad = True
                continue
            entries[key] = float(entry["ms"])
        return entries, bad

    def _read_version1(self, data: dict, warn: bool) -> dict[str, float]:
        entries = {}
        for key, value in data.items():
            problem = check_value(value)
            if problem:
                self._warn(warn, f"entry {key!r}: {value!r:.40} is {problem}; measured again")
            else:
                entries[key] = float(value)
        self._warn(warn, f"is an old cache with no device identity: its {len(entries)} valid entries are adopted "
                         f"as measured on this device ({describe_identity(self.identity)}) and the file is "
                         "rewritten in the current format; delete it to measure them again")
        return entries

    def _warn(self, enabled: bool, message: str) -> None:
        if enabled:
            warnings.warn(LatencyCacheWarning(f"latency cache {self.path}: {message}"), stacklevel=4)
