"""A steady heap for timing on CPU: no memory handed back to the system between runs.

glibc's malloc returns freed memory at the top of its heap to the system once it exceeds a
threshold that it adapts as the process runs. Whether a model's activations are then handed
back after a run, and page-faulted in again (zeroed by the kernel) on the next, depends on
what the process allocated before: on the development machine MobileNet-V2 at 64 px, batch 32,
measured 62 ms in an interleaved calibration (9,000 page faults per run) and 43 ms a minute later
in the same process (none) (benchmarks/RESULTS.md). A serving process running one model reaches the
steady state without faults; timing in that state is what the tables and the whole models
have to agree on.

`steady_heap()` fixes this for the rest of the process: freed memory stays in the heap (trim threshold
2 GiB) and no block is ever mapped afresh (mmap off: `M_MMAP_MAX` 0), so every allocation, however large,
is served from the heap, and after the first run nothing is faulted in, in the tables and in whole models
alike. An earlier version only raised the mmap threshold to 32 MiB, glibc's largest; larger blocks were
still mapped afresh on every run. At 224 px and batch 32 MobileNet-V2's activations reach 154 MB: one
1x1 convolution writing one timed 140 ms alone with 75,000 page faults, and 19 ms without, while the whole
model, run in a process whose heap had already grown, had none. Its tables summed to 2.3-2.5x the whole
model (benchmarks/RESULTS.md). The process then keeps its peak heap until it exits. Elsewhere (other C
libraries, other systems) it does nothing and says so; `heap_tag()` names the state, and the latency cache
keeps tables measured in different states apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2 ** 31 - 1


@functools.lru_cache(maxsize=1)
def steady_heap() -> str:
    """Fix glibc malloc's trim and mmap thresholds for the rest of the process (once); what was done, in words."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "allocator left alone (not glibc)"
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return "allocator left alone (mallopt not found)"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1 or mallopt(M_MMAP_MAX, 0) != 1:
        return "allocator left alone (mallopt refused)"
    return f"steady heap (glibc trim threshold {TRIM_THRESHOLD >> 20} MiB, no mmap)"


def heap_tag() -> str:
    """A short name of the heap CPU timings run in (applying `steady_heap` first): part of the latency
    cache's file name, so that tables timed in another state (an older steady heap that still mapped large
    blocks afresh, or none) are never mixed with these."""
    return "heap-steady2" if steady_heap().startswith("steady heap") else "heap-default"
