"""Item-to-item co-occurrence, served: each item's strongest neighbours and a shopper's score.

"Shoppers who bought this also bought" is one of the strongest simple recommenders there is, and
the one content similarity cannot replace: two products that sell together rarely share words.
The neighbour lists are built offline from the store's own log (``aisle_export.index.log_signals``,
cosine-normalized counts of shoppers having both items); here they are plain arrays, so a
request's score is one gather and one ``bincount`` over its history's neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sparse_scores import SparseScores


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare as a bool
class Cooccurrence:
    """Top neighbours per catalog row: ``neighbors[r, j]`` (row, ``-1`` = none) with ``weights[r, j]``."""

    neighbors: np.ndarray  # int32 (N, M)
    weights: np.ndarray  # float32 (N, M), 0 where there is no neighbour

    def __post_init__(self) -> None:
        if self.neighbors.shape != self.weights.shape or self.neighbors.ndim != 2:
            raise ValueError(f"neighbors {self.neighbors.shape} and weights {self.weights.shape} must be equal (N, M)")

    def scores(self, rows: np.ndarray, row_weights: np.ndarray) -> np.ndarray:
        """Σ over the history rows of ``row_weight · weight`` of each of their neighbours, per catalog row."""
        n_items = len(self.neighbors)
        if len(rows) == 0:
            return np.zeros(n_items)
        neighbors = self.neighbors[rows]
        weights = self.weights[rows] * np.asarray(row_weights, dtype=np.float64)[:, None]
        real = neighbors >= 0
        return np.bincount(neighbors[real], weights=weights[real], minlength=n_items)

    def matches(self, rows: np.ndarray, row_weights: np.ndarray) -> SparseScores:
        """:meth:`scores` held for the history's neighbours only (the same float64 sums, added in
        the same order), not an array the size of the catalog."""
        n_items = len(self.neighbors)
        if len(rows) == 0:
            return SparseScores(np.zeros(0, dtype=np.int64), np.zeros(0), n_items)
        neighbors = self.neighbors[rows]
        weights = self.weights[rows] * np.asarray(row_weights, dtype=np.float64)[:, None]
        real = neighbors >= 0
        found, at = np.unique(neighbors[real], return_inverse=True)
        return SparseScores(
            found.astype(np.int64), np.bincount(at, weights=weights[real], minlength=len(found)), n_items
        )
