"""A per-row score held only for the rows that have one: what a request's candidates read.

BM25 gives a score to the items containing a query term, co-occurrence to the neighbours of a
shopper's history; every other catalog row scores 0. Held as sorted rows and their values, the
score costs what the matches cost, not an array the size of the catalog per request, and reads
like that array (``scores[rows]``), so the scoring and feature code take either.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseScores:
    """Scores over ``size`` catalog rows, held for the rows that have one (sorted ``rows``, their
    ``values``); every other row scores 0. Indexed like the dense array (``scores[rows]``)."""

    def __init__(self, rows: np.ndarray, values: np.ndarray, size: int):
        self.rows = rows
        self.values = values
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(self.rows):
            return np.zeros(rows.shape, dtype=np.float32)
        at = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
        return np.where(self.rows[at] == rows, self.values[at], np.float32(0.0))

    def dense(self) -> np.ndarray:
        out = np.zeros(self.size, dtype=self.values.dtype)
        out[self.rows] = self.values
        return out

    def max(self) -> float:
        """The largest score of any row (0 when none matches, as the dense array's)."""
        return max(0.0, float(self.values.max())) if len(self.values) else 0.0

    def positive(self) -> np.ndarray:
        """The rows scoring above 0, ascending (``np.flatnonzero(dense > 0)``)."""
        return self.rows[self.values > 0]

    def __truediv__(self, divisor: float) -> SparseScores:
        return SparseScores(self.rows, self.values / divisor, self.size)

    def best(self, n: int, allowed: Any, pad: bool = False) -> np.ndarray:
        """The ``n`` best rows with a positive score that ``allowed[rows]`` lets through, best
        first, ties by row (what ``ranking._top`` over the dense scores gives); with ``pad``, topped
        up with allowed zero-score rows in row order (``search_mode=lexical`` ranks those too)."""
        positive = self.values > 0
        rows, values = self.rows[positive], self.values[positive]
        order = rows[np.lexsort((rows, -values))]
        picked: list[np.ndarray] = []
        found = 0
        step = max(n, 64)
        for start in range(0, len(order), step):  # most filters let most rows through: check a chunk at a time
            chunk = order[start : start + step]
            chunk = chunk[np.asarray(allowed[chunk], dtype=bool)]
            picked.append(chunk)
            found += len(chunk)
            if found >= n:
                break
        out = np.concatenate(picked)[:n] if picked else np.zeros(0, dtype=np.int64)
        if pad and len(out) < n:
            for start in range(0, self.size, step):
                chunk = np.arange(start, min(self.size, start + step), dtype=np.int64)
                chunk = chunk[np.asarray(allowed[chunk], dtype=bool) & ~np.isin(chunk, rows)]
                out = np.concatenate([out, chunk[: n - len(out)]])
                if len(out) >= n:
                    break
        return out.astype(np.int64)
