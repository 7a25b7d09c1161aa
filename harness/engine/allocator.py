"""Batch-sized CPU tensors without page faults on every step.

glibc serves every allocation above its mmap threshold (at most 32 MB on 64-bit) with a fresh
mmap and unmaps it on free, so a training step on a CPU at 256x256, whose batch-sized float
tensors are 50 MB each (64 images), pays its page faults again at every step: 18 ms of the uint8
-> float normalisation of one batch, against 4.5 ms once the memory is reused (2-core VM). PyTorch's
CPU performance guide recommends preloading jemalloc or tcmalloc for this; `keep_freed_memory()`
gets glibc's own allocator to do the same (mallopt: no mmap for large blocks, freed memory kept in
the heap for the next step). A CPU run's resident memory then stays at its peak instead of
shrinking between steps. Set HARNESS_MALLOC=default to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h
TRIM_THRESHOLD = 1 << 30  # return heap memory to the system only above 1 GiB free at its top

_state: str | None = None


def keep_freed_memory() -> str | None:
    """Tune glibc's malloc once per process (Linux only); returns what was set (also `state()`),
    or None where it does not apply (another C library, HARNESS_MALLOC=default, mallopt refused)."""
    global _state
    if _state is not None or not sys.platform.startswith("linux") or os.environ.get("HARNESS_MALLOC") == "default":
        return _state
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
        _state = f"glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD={TRIM_THRESHOLD}"
    return _state


def state() -> str | None:
    """The allocator setting this process runs with (None: the C library's defaults)."""
    return _state


def describe() -> str:
    """run.json's provenance.cpu_allocator: the setting, or "default"."""
    return _state or "default"
