"""glibc malloc settings for steady streams of large tensors.

By default glibc returns freed memory to the OS eagerly (trims the heap top and
serves blocks above an adaptive threshold with fresh mmaps), so every frame
faults the same hundreds of megabytes back in, page by page. With a fixed 32 MB
mmap threshold and no trimming, the per-frame tensors below 32 MB are reused
from the heap instead; the few larger ones (the correlation volume, the
attention matrix) are still mapped and returned. Measured at 436x1024, 2
threads: MemFlow-P step 1.06 -> 0.96 s, estimator 5.4 -> 5.1 s per frame, peak
RSS unchanged (1.19 vs 1.21 GB).

Applied once per process by the streaming engines, only on glibc, and never
over a user's own MALLOC_* environment settings.

The price of never trimming is a heap that keeps its high-water mark: between
pairs ~0.45 GB of it was free but resident at 436x1024, and the pair's large
buffers (correlation volume, attention; kept from pair to pair in a
``flowcli.model.workspace.Workspace``) came on top of it. So the estimator
releases the heap's free pages (:func:`release_free_heap`, glibc
``malloc_trim``, ~10 ms) twice per pair: before the encoders and before the
iterations. Measured at 436x1024, 2 threads: peak RSS 1.08-1.12 -> 1.03-1.04 GB
with one trim and fresh buffers at unchanged speed; with the workspace and two
trims 1.04-1.06 GB and ~3% faster.

Each trim has a price: every released page that the next frame reuses is faulted
in again (~17,000 minor faults per frame at 224x320, ~2% of its time on 1
thread). Small frames keep little free heap (27-48 MB at 224x320, against
170-360 MB at 436x1024), so nothing is released while 64 MB or less is free:
small frames skip the faults, large frames are trimmed as before.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20   # glibc's maximum for this setting on 64-bit
TRIM_THRESHOLD_BYTES = 2**31 - 1     # (the largest int mallopt takes) never trim the heap top
KEEP_FREE_BYTES = 64 * 2**20        # release_free_heap leaves a heap with at most this much free alone

_state = {"done": False, "applied": False, "libc": None, "mallinfo2": None}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def tune_malloc() -> bool:
    """Set the thresholds once; True if they are in effect (glibc, not overridden by the user)."""
    if _state["done"]:
        return _state["applied"]
    _state["done"] = True
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    _state["applied"] = ok
    _state["libc"] = libc if ok else None
    mallinfo2 = getattr(libc, "mallinfo2", None) if ok else None  # glibc >= 2.33
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
    _state["mallinfo2"] = mallinfo2
    return ok


def free_heap_bytes() -> int | None:
    """Bytes the heap holds free (glibc >= 2.33 ``mallinfo2().fordblks``); None where unknown."""
    mallinfo2 = _state["mallinfo2"] if _state["libc"] is not None else None
    return None if mallinfo2 is None else int(mallinfo2().fordblks)


def release_free_heap(keep_bytes: int = KEEP_FREE_BYTES) -> bool:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim(0)``), if :func:`tune_malloc`
    is in effect and more than ``keep_bytes`` are free; the heap's live blocks stay where they are.
    True if it ran."""
    libc = _state["libc"]
    if libc is None:
        return False
    free = free_heap_bytes()
    if free is not None and free <= keep_bytes:
        return False
    libc.malloc_trim(0)
    return True
