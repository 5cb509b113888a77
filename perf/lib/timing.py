"""Percentiles and timing loops: how the benchmarks turn calls into latencies.

- :func:`percentile`: numpy's default interpolation, written out so a report's numbers do not
  depend on a numpy default;
- :func:`timed`: one call per input, in order, each timed (retrieval and index benchmarks);
- :func:`call_times`: one call repeated for a time window after a warm-up (encoder throughput).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation between closest ranks (numpy's default).

    ``nan`` for no values. Written out so the report's numbers do not depend on a numpy default.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside [0, 100]")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timed(fn: Callable[[Any], Any], inputs: Iterable[Any]) -> tuple[list[Any], np.ndarray]:
    """``fn`` of each input in turn: (the results, each call's milliseconds)."""
    out, times = [], []
    for x in inputs:
        t = time.perf_counter()
        out.append(fn(x))
        times.append(time.perf_counter() - t)
    return out, np.array(times) * 1000


def call_times(fn: Callable[[], object], seconds: float, warmup: int = 3, min_calls: int = 10) -> list[float]:
    """Seconds of each ``fn()`` call, repeated for ``seconds`` (at least ``min_calls`` calls) after
    ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    timings: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(timings) < min_calls:
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return timings
