"""Keep a loader worker's freed buffers mapped: glibc's defaults fault every sample's buffers in afresh.

A worker allocates and frees the same few MB-sized buffers for every sample (decoded frames, label maps, warped and
float clips). glibc serves blocks above its mmap threshold with fresh ``mmap`` calls and trims freed heap above
``M_TRIM_THRESHOLD``, so each sample page-faults its buffers in again: ~1,200 minor faults per 4x256² clip, ~25% of
``make_example``'s CPU time here (benchmarks/loader.py; the same work at 4 faults per clip with the settings below).
Raising both thresholds keeps those pages in the process for reuse, the usual fix short of swapping in jemalloc or
tcmalloc (PyTorch's CPU tuning guide). Called in DataLoader workers only (processes the loader owns); a no-op off
glibc. Costs at most ``TRIM`` bytes of freed memory held per worker.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP = 64 << 20  # blocks up to 64 MiB come from the heap, whose freed pages are reused
TRIM = 256 << 20  # up to 256 MiB of freed heap stays mapped

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where there is no glibc mallopt."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): their allocators do not behave this way
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM))
    if not _done:
        log.debug("mallopt refused the loader's thresholds; keeping glibc's defaults")
    return _done
