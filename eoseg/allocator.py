"""Process-wide tuning of the C allocator for PyTorch's CPU tensors.

PyTorch allocates CPU tensors with malloc. glibc serves every block above 32 MB (a full
SegNet's activations for a batch of windows are hundreds of MB) with a fresh mmap and
unmaps it when freed, so each batch pays page faults and the kernel's zeroing of every page
again. PyTorch's CPU performance guide suggests swapping in jemalloc or tcmalloc; keeping
glibc but telling it to serve all blocks from its heap and to keep freed memory for reuse
gives the same effect without an extra library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 2**31 - 1  # free memory at the heap's top beyond this goes back to the system

_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of mapping and unmapping large blocks.

    The process keeps the memory of its peak until it exits, and that peak is higher, as
    freed blocks are not always reused exactly (see bench/RESULTS.md). A no-op, returning
    False, where the C library is not glibc.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it, and only glibc's mallopt takes these parameters
    except (OSError, AttributeError):
        return False
    _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    return _applied
