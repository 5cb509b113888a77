"""Which catalog rows a request may show, asked of the candidates only.

A request's filters — in stock and not hidden, not in its history (``exclude_history``), not in
``exclude_ids``, within ``allow_categories`` and outside ``deny_categories`` — used to be a boolean
mask over the whole catalog, built per request: work that grows with the catalog whatever the
page. :class:`RowFilter` answers the same question for the rows a retrieval engine returned
(``allowed[rows]``), at a cost that grows with those rows. Code that still needs the whole mask (the
exact scan, the cold fallback) gets it from ``np.asarray(allowed)``, built once and kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class RowFilter:
    """A request's filters over catalog rows, evaluated lazily (``filter[rows]`` → bool per row)."""

    def __init__(
        self,
        available: np.ndarray,
        categories: np.ndarray,
        excluded: np.ndarray,
        allow_categories: Sequence[str] = (),
        deny_categories: Sequence[str] = (),
        category_mask: Any = None,
    ):
        self.available = available  # bool per row, built once per index: in stock and not hidden
        self.categories = categories  # the category of each row
        excluded = np.asarray(excluded, dtype=np.int64)
        self.excluded = np.unique(excluded) if len(excluded) else excluded
        self.allow = np.asarray(list(allow_categories), dtype=str) if len(allow_categories) else None
        self.deny = np.asarray(list(deny_categories), dtype=str) if len(deny_categories) else None
        #: the index's ``category_mask`` (``CatalogIndex.category_mask``): the whole-catalog mask's way
        self._category_mask = category_mask
        self._mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.available)

    def __getitem__(self, rows: Any) -> Any:
        """Whether each of ``rows`` may be shown (a bool for one int row)."""
        if self._mask is not None:
            return self._mask[rows]
        if np.isscalar(rows):
            return bool(self[np.array([rows], dtype=np.int64)][0])
        rows = np.asarray(rows)
        if rows.dtype == bool:
            return np.asarray(self)[rows]
        ok = np.asarray(self.available[rows], dtype=bool).copy()
        if len(self.excluded):
            ok &= ~np.isin(rows, self.excluded)
        if self.allow is not None or self.deny is not None:
            names = np.asarray(self.categories[rows], dtype=str)
            if self.allow is not None:
                ok &= np.isin(names, self.allow)
            if self.deny is not None:
                ok &= ~np.isin(names, self.deny)
        return ok

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole-catalog mask (built on first use, then kept): for the exact paths."""
        if self._mask is None:
            mask = np.asarray(self.available, dtype=bool).copy()
            mask[self.excluded] = False
            if self.allow is not None:
                mask &= self._category_mask(self.allow.tolist())
            if self.deny is not None:
                mask &= ~self._category_mask(self.deny.tolist())
            self._mask = mask
        return self._mask if dtype is None else self._mask.astype(dtype)

    def __and__(self, other: Any) -> np.ndarray:
        return np.asarray(self) & other

    __rand__ = __and__
