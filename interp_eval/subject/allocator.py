"""Keep freed memory for reuse instead of handing it back to the OS (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and
unmaps it on free. The subject model's forward pass allocates and frees hundreds of MiB of such
tensors per batch (MLP hidden states, attention scores), so every batch faults them in again and the
kernel zeroes each page: a large share of the forward's time goes to the kernel. With mmap off and
heap trimming off, freed blocks are reused: no page faults after the first batch. The cost is that
the process keeps its high-water mark of heap memory instead of returning it (a few percent more
peak RSS). The measured figures are in the README ("Memory reuse"). `INTERP_EVAL_REUSE_MEMORY=0`
leaves glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4
_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Turn off glibc's mmap for large blocks and its heap trimming, once per process. True if in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("INTERP_EVAL_REUSE_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
    except (OSError, AttributeError):
        return False
    _applied = bool(ok)
    log.debug("allocator: freed memory is %s", "kept for reuse" if ok else "handled by glibc's defaults")
    return _applied
