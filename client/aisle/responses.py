"""Turn Triton answers into SDK results — shared by the sync and asyncio clients."""
from __future__ import annotations

import numpy as np

from .types import Recommendation, Recommendations


def parse_recommendations(
    ids: np.ndarray, scores: np.ndarray, unknown: np.ndarray | None, row: int = 0
) -> Recommendations:
    """Row ``row`` of a ``recommend`` answer; empty ids (and their NaN scores) are padding and dropped.

    Rows of a batched answer are padded to the widest row, so every row is parsed this way.
    """
    items = [
        Recommendation(item_id=raw.decode("utf-8"), score=float(score))
        for raw, score in zip(ids[row], scores[row])
        if raw
    ]
    return Recommendations(items, unknown_history=int(unknown[row][0]) if unknown is not None else 0)


def split_recommendations(ids: np.ndarray, scores: np.ndarray, unknown: np.ndarray | None) -> list[Recommendations]:
    """Every row of a batched ``recommend`` answer, in request order."""
    return [parse_recommendations(ids, scores, unknown, row) for row in range(ids.shape[0])]


def copy_recommendations(recs: Recommendations) -> Recommendations:
    """A shallow copy, so a caller mutating its list never changes what the cache holds."""
    return Recommendations(list(recs), unknown_history=recs.unknown_history)
