"""``aisle_export.core.memory.release_memory``: memory freed in the middle of the heap goes back to the system."""

from __future__ import annotations

import numpy as np

from aisle_export.core.memory import release_memory


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_heap_pages_freed_between_survivors_are_returned() -> None:
    rows = [np.ones((150, 27), np.float32) for _ in range(20_000)]  # a window's per-shopper rows: 324 MB
    survivors = rows[::50]  # a few stay, scattered through the heap: free() alone cannot shrink it
    del rows
    before = _rss_mb()
    release_memory()
    after = _rss_mb()
    assert before - after > 150, (before, after)
    assert all(float(s.sum()) == 150 * 27 for s in survivors)  # what is live is untouched
