"""Paired statistics for offline comparisons: bootstrap intervals of a difference, and of a mean.

Every "A beats B" in an evaluation report is a paired bootstrap over the same shoppers: the mean
difference and its 95% interval, so a gain is claimed only when the interval is above zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOTSTRAP = 2000


def bootstrap_delta(a: Sequence[float], b: Sequence[float], n: int = N_BOOTSTRAP, seed: int = 0) -> dict:
    """Mean of b − a over users with a paired bootstrap 95% interval."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"delta": float(diff.mean()), "ci95": [float(low), float(high)]}


def mean_interval(values: Sequence[float]) -> list[float]:
    """95% bootstrap interval of the mean (``bootstrap_delta`` against zero)."""
    return bootstrap_delta(np.zeros(len(values)), values)["ci95"]
