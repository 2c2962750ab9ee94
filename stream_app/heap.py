"""Process-level tuning of the worker: the allocator and the garbage collector.

:func:`freeze_startup_objects`: the worker imports torch, scipy, faust and
the models: ~250,000 objects that live as long as the process. Every
full (generation-2) collection of CPython's cycle collector walks them all:
~125 ms on the machine this was measured on, during which the event loop
stands still and every message in flight waits (it was the p99 of the
tick -> snapshot latency, ``python bench/bench_latency.py``). Collecting once
after start-up and moving the survivors to the permanent generation
(``gc.freeze()``, Python >= 3.7) makes later collections walk only objects
created since.

:func:`keep_heap`: keep freed buffers in the process heap: fewer page faults
per tick batch and Monte Carlo.

glibc returns every freed block above its mmap threshold (128 KiB at first,
raised dynamically up to 32 MiB) to the kernel, so a Monte Carlo day that
allocates a dozen temporary arrays of 0.8-16 MB maps and faults in fresh pages
for each of them, every day. Where page faults are dear (virtual machines,
sandboxes: ~0.9 ms to fault in 800 KB on the machine this was measured on,
against 0.02 ms to write it) that costs more than the arithmetic.
:func:`keep_heap` raises the mmap and trim thresholds once at start-up, so
those blocks are reused from the heap instead. The worker and the ``riskmon``
command call it; ``RISKMON_KEEP_HEAP=0`` turns it off.

Measured with ``python bench/bench_lstm_copula.py`` (see its ``--no-keep-heap``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (above it: mmap, returned on free).
MMAP_THRESHOLD = 64 << 20
#: Free memory at the top of the heap kept rather than returned to the kernel.
TRIM_THRESHOLD = 256 << 20


def keep_heap(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Raise glibc's mmap/trim thresholds; True if applied.

    A no-op returning False off Linux, on a libc without ``mallopt`` (musl),
    or when ``RISKMON_KEEP_HEAP`` is ``0``. Memory cost: up to
    ``trim_threshold`` bytes of freed memory stay mapped in the process.
    """
    if os.environ.get("RISKMON_KEEP_HEAP", "1").strip() in ("0", "false", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok_trim = mallopt(M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    return ok_mmap and ok_trim


def freeze_startup_objects() -> int:
    """Collect garbage once, then exempt every surviving object from later collections.

    Call it when start-up is done (imports, app and models built). Returns the
    number of objects frozen. Objects that die later are still freed by
    reference counting; only cycles among frozen objects are never collected.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
