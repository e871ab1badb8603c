"""The steady heap: memory freed between timed runs is not handed back to the system and faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from mdp_opt.adapters.torch.allocator import steady_heap

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Ten 1 MiB blocks taken with malloc, written and freed, ten times. glibc's adaptive thresholds hand the freed
# blocks back to the system after every round, so each round faults them in again (2,560 pages).
ROUNDS = """
import ctypes, resource, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
if sys.argv[1] == "steady":
    from mdp_opt.adapters.torch.allocator import steady_heap
    print(steady_heap(), file=sys.stderr)
def rounds(n):
    for _ in range(n):
        blocks = [libc.malloc(2 ** 20) for _ in range(10)]
        for b in blocks:
            libc.memset(b, 1, 2 ** 20)
        for b in blocks:
            libc.free(b)
rounds(3)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(ROUNDS), mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="the steady heap sets glibc malloc's thresholds; this system has no glibc")
def test_steady_heap_stops_the_page_faults_of_memory_handed_back_between_runs():
    default, steady = _faults("default"), _faults("steady")
    assert default > 10 * 10 * 256 // 2, f"glibc's default thresholds faulted only {default} pages"
    assert steady < default / 20, f"{steady} page faults in a steady heap, {default} without"


def test_steady_heap_says_what_it_did():
    text = steady_heap()
    assert text.startswith("steady heap (glibc" if GLIBC else "allocator left alone")
    assert steady_heap() is text      # once per process
