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
        step = max(n, 64)
        out = None
        if len(rows) > 4 * step:  # a common term's postings: sort only the head most pages read
            nth = values[np.argpartition(-values, 2 * step - 1)[2 * step - 1]]
            head = values >= nth  # every row tied with the last one too: the sorted order's first rows
            out = _allowed_prefix(rows[head], values[head], n, step, allowed)
        if out is None:
            out = _allowed_prefix(rows, values, n, step, allowed, complete=True)
        assert out is not None  # complete: whatever the filters leave
        if pad and len(out) < n:
            for start in range(0, self.size, step):
                chunk = np.arange(start, min(self.size, start + step), dtype=np.int64)
                chunk = chunk[np.asarray(allowed[chunk], dtype=bool) & ~np.isin(chunk, rows)]
                out = np.concatenate([out, chunk[: n - len(out)]])
                if len(out) >= n:
                    break
        return out.astype(np.int64)


def _allowed_prefix(
    rows: np.ndarray, values: np.ndarray, n: int, step: int, allowed: Any, complete: bool = False
) -> np.ndarray | None:
    """The first ``n`` rows that ``allowed`` lets through in the order best value first, ties by
    row; checked a chunk of ``step`` at a time (most filters let most rows through). ``rows`` may
    be the head of that order only: None when it runs out first (unless ``complete``: all rows)."""
    order = rows[np.lexsort((rows, -values))]
    picked: list[np.ndarray] = []
    found = 0
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        chunk = chunk[np.asarray(allowed[chunk], dtype=bool)]
        picked.append(chunk)
        found += len(chunk)
        if found >= n:
            return np.concatenate(picked)[:n]
    if not complete:
        return None
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
