"""Hand memory a long job no longer uses back to the system between its stages.

CPython frees small objects into glibc's heap, which keeps the pages: a stage that built and
dropped millions of small objects (a log's strings, per-shopper feature rows) leaves the process
that much larger for every later stage. ``aisle finetune`` calls :func:`release_memory` where a
stage's data is dropped, so its peak is what the next stage holds, not the sum of the stages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_memory() -> None:
    """Collect cycles, then return the heap's free pages to the system (glibc's ``malloc_trim``;
    elsewhere only the collection)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
