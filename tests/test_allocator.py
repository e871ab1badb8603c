"""The steady heap: memory freed between timed runs is not handed back to the system and faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from mdp_opt.adapters.torch.allocator import steady_heap

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# `count` blocks of `mib` MiB taken with malloc, written and freed, ten times. glibc's adaptive thresholds hand
# freed 1 MiB blocks back to the system after every round, so each round faults them in again (ten blocks: 2,560
# pages); blocks over 32 MiB (glibc's largest mmap threshold) are mapped afresh for every allocation.
ROUNDS = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
if sys.argv[1] == "steady":
    from mdp_opt.adapters.torch.allocator import steady_heap
    print(steady_heap(), file=sys.stderr)
size, count = int(sys.argv[2]) * 2 ** 20, int(sys.argv[3])
def rounds(n):
    for _ in range(n):
        blocks = [libc.malloc(size) for _ in range(count)]
        for b in blocks:
            libc.memset(b, 1, size)
        for b in blocks:
            libc.free(b)
rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, mib: int = 1, count: int = 10) -> int:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(ROUNDS), mode, str(mib), str(count)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="the steady heap sets glibc malloc's thresholds; this system has no glibc")
def test_steady_heap_stops_the_page_faults_of_memory_handed_back_between_runs():
    default, steady = _faults("default"), _faults("steady")
    assert default > 10 * 10 * 256 // 2, f"glibc's default thresholds faulted only {default} pages"
    assert steady < default / 20, f"{steady} page faults in a steady heap, {default} without"


@pytest.mark.skipif(not GLIBC, reason="the steady heap sets glibc malloc's thresholds; this system has no glibc")
def test_steady_heap_stops_the_page_faults_of_blocks_larger_than_any_mmap_threshold():
    """Two 80 MiB blocks a round (a MobileNet-V2 activation at 224 px, batch 32, is 154 MB)."""
    default, steady = _faults("default", 80, 2), _faults("steady", 80, 2)
    assert default > 10 * 2 * 80 * 256 // 2, f"glibc's default thresholds faulted only {default} pages"
    assert steady < default / 20, f"{steady} page faults in a steady heap, {default} without"


def test_steady_heap_says_what_it_did():
    text = steady_heap()
    assert text.startswith("steady heap (glibc" if GLIBC else "allocator left alone")
    assert steady_heap() is text      # once per process
