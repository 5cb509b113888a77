"""Paired statistics for offline comparisons: bootstrap intervals of a difference, and of a mean.

Every "A beats B" in an evaluation report is a paired bootstrap over the same shoppers: the mean
difference and its 95% interval, so a gain is claimed only when the interval is above zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOTSTRAP = 2000


def bootstrap_delta(
    a: Sequence[float], b: Sequence[float], n: int = N_BOOTSTRAP, seed: int = 0, clusters: Sequence | None = None
) -> dict:
    """Mean of b − a over users with a paired bootstrap 95% interval.

    ``clusters`` (one key per pair, e.g. the shopper when one shopper is judged at several cuts):
    whole clusters are resampled, not pairs, so a shopper's correlated pairs do not narrow the
    interval as if they were independent shoppers; the mean is still over pairs."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if clusters is None:
        means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(axis=1)
    else:
        if len(clusters) != len(diff):
            raise ValueError(f"clusters: {len(clusters)} keys for {len(diff)} pairs")
        _, first, inverse = np.unique(np.asarray(clusters), return_index=True, return_inverse=True)
        appearance = np.empty(len(first), dtype=np.int64)
        appearance[np.argsort(first)] = np.arange(len(first))
        inverse = appearance[inverse.ravel()]  # clusters in order of appearance: one pair each is the plain bootstrap
        sums, counts = np.bincount(inverse, weights=diff), np.bincount(inverse).astype(np.float64)
        drawn = rng.integers(0, len(sums), size=(n, len(sums)))
        means = sums[drawn].sum(axis=1) / counts[drawn].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"delta": float(diff.mean()), "ci95": [float(low), float(high)]}


def mean_interval(values: Sequence[float]) -> list[float]:
    """95% bootstrap interval of the mean (``bootstrap_delta`` against zero)."""
    return bootstrap_delta(np.zeros(len(values)), values)["ci95"]
