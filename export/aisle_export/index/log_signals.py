"""Popularity and co-occurrence from a store's own interaction log (``aisle_server.learned.LogSignals``).

- **Popularity** is the weighted count of each item's interactions, decayed with a half-life
  (``popularity_half_life_days``, default 30) from ``now`` (the training period's end): "popular
  items of the recent period", not of all time. ``None`` counts every interaction alike.
- **Co-occurrence** is item-item cosine over shoppers (``X`` = shoppers × items, 1 where the shopper
  interacted with the item, ``C = XᵀX`` with a zero diagonal, ``C_ij / sqrt(n_i n_j)``): the
  classic item-to-item collaborative filter, computed with ``scipy.sparse``. Each item keeps its
  ``max_neighbors`` strongest neighbours, which is all the served feed reads.

- **Item statistics** (``aisle_server.learned.ITEM_STAT_NAMES``, :func:`item_stats`): windowed
  counts, buyers, and how often and how regularly each item is bought again — what the learned
  ranker's repurchase features compare a shopper's own timing with.

Nothing after ``now`` may be in ``interactions``: the callers pass a split's training period.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aisle_export.core.files import replace_directory
from aisle_export.data.interactions import read_interactions
from aisle_export.data.splits import TemporalSplit
from aisle_server.learned import LEARNED_DIRNAME, LOG_SIGNALS_DIRNAME, LogSignals
from aisle_server.ranking import decay

if TYPE_CHECKING:
    from aisle_export.data.catalog import Catalog
    from aisle_export.data.interactions import Interactions

DAY = 24 * 3600.0
DEFAULT_POPULARITY_HALF_LIFE_DAYS = 30.0
DEFAULT_MAX_NEIGHBORS = 100


def decayed_counts(
    interactions: Interactions, item_index: np.ndarray, n_items: int, now: float, half_life_days: float | None
) -> np.ndarray:
    """Σ weight · decay(now − ts) per item (plain weighted counts when ``half_life_days`` is None)."""
    weights = np.asarray(interactions.weight, dtype=np.float64)
    if half_life_days is not None:
        weights = weights * decay(now - np.asarray(interactions.timestamp, dtype=np.float64), half_life_days * DAY)
    return np.bincount(item_index, weights=weights, minlength=n_items)


def item_cosine(
    user_index: np.ndarray, item_index: np.ndarray, n_users: int, n_items: int, max_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``max_neighbors`` best neighbours by shopper-overlap cosine: (neighbors, weights)."""
    from scipy import sparse  # toolchain only; the server reads the arrays

    x = sparse.csr_matrix((np.ones(len(user_index)), (user_index, item_index)), shape=(n_users, n_items))
    x.data[:] = 1.0  # duplicates were summed: one shopper counts once per item
    counts = np.asarray(x.sum(axis=0)).ravel()
    c = (x.T @ x).tocsr()
    c.setdiag(0.0)
    c.eliminate_zeros()
    inverse = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    c.data *= inverse[np.repeat(np.arange(n_items), np.diff(c.indptr))] * inverse[c.indices]  # in place: no copies
    neighbors = np.full((n_items, max_neighbors), -1, dtype=np.int32)
    weights = np.zeros((n_items, max_neighbors), dtype=np.float32)
    for row in range(n_items):
        start, stop = c.indptr[row], c.indptr[row + 1]
        columns, values = c.indices[start:stop], c.data[start:stop]
        if len(columns) > max_neighbors:
            keep = np.argpartition(-values, max_neighbors - 1)[:max_neighbors]
            columns, values = columns[keep], values[keep]
        order = np.lexsort((columns, -values))
        neighbors[row, : len(order)] = columns[order]
        weights[row, : len(order)] = values[order]
    return neighbors, weights


def item_stats(
    user_index: np.ndarray, item_index: np.ndarray, timestamps: np.ndarray, n_items: int, now: float
) -> np.ndarray:
    """float64 (n_items, len(ITEM_STAT_NAMES)) as of ``now`` (NaN: no repurchase interval).

    A repurchase is the same shopper having the item again on another day (several rows of one
    basket are one purchase); an item's interval is the median, over the shoppers who had it on
    two days or more, of their mean days between consecutive such days.
    """
    age = now - timestamps
    events = [
        np.bincount(item_index, weights=(age < days * DAY).astype(np.float64), minlength=n_items) for days in (7, 30)
    ]
    events.append(np.bincount(item_index, minlength=n_items).astype(np.float64))
    day = np.floor(timestamps / DAY).astype(np.int64)
    triples = np.unique(np.stack([item_index.astype(np.int64), user_index.astype(np.int64), day], axis=1), axis=0)
    pair_start = np.r_[True, (triples[1:, 0] != triples[:-1, 0]) | (triples[1:, 1] != triples[:-1, 1])]
    pair = np.cumsum(pair_start) - 1
    pair_item = triples[pair_start, 0]
    days = np.bincount(pair, minlength=len(pair_item))
    first = np.full(len(pair_item), np.iinfo(np.int64).max)
    last = np.full(len(pair_item), np.iinfo(np.int64).min)
    np.minimum.at(first, pair, triples[:, 2])
    np.maximum.at(last, pair, triples[:, 2])
    buyers = np.bincount(pair_item, minlength=n_items).astype(np.float64)
    again = days >= 2
    repeaters = np.bincount(pair_item[again], minlength=n_items).astype(np.float64)
    gaps = (last[again] - first[again]) / (days[again] - 1)
    interval = np.full(n_items, np.nan)
    order = np.lexsort((gaps, pair_item[again]))
    items, gaps = pair_item[again][order], gaps[order]
    starts = np.flatnonzero(np.r_[True, items[1:] != items[:-1]]) if len(items) else np.zeros(0, dtype=np.int64)
    counts = np.diff(np.r_[starts, len(items)])
    interval[items[starts]] = (gaps[starts + (counts - 1) // 2] + gaps[starts + counts // 2]) / 2.0
    first_seen = np.full(n_items, np.inf)
    np.minimum.at(first_seen, item_index, timestamps)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(buyers > 0, repeaters / buyers, np.nan)
    seen_days = np.where(np.isfinite(first_seen), (now - first_seen) / DAY, np.nan)
    return np.stack([*events, buyers, share, interval, seen_days], axis=1)


def build_log_signals(
    interactions: Interactions,
    now: float | None = None,
    popularity_half_life_days: float | None = DEFAULT_POPULARITY_HALF_LIFE_DAYS,
    max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
    source: str | None = None,
) -> LogSignals:
    """Popularity and co-occurrence of ``interactions`` as of ``now`` (default: its last timestamp)."""
    if len(interactions) == 0:
        raise ValueError("no interactions to learn popularity and co-occurrence from")
    if max_neighbors < 1:
        raise ValueError(f"max_neighbors={max_neighbors} must be ≥ 1")
    if popularity_half_life_days is not None and not (
        popularity_half_life_days > 0 and math.isfinite(popularity_half_life_days)
    ):
        raise ValueError(f"popularity_half_life_days={popularity_half_life_days} must be a positive number or None")
    timestamps = np.asarray(interactions.timestamp, dtype=np.float64)
    now = float(timestamps.max()) if now is None else float(now)
    item_ids, item_index = np.unique(interactions.item_id, return_inverse=True)
    _, user_index = np.unique(interactions.user_id, return_inverse=True)
    popularity = decayed_counts(interactions, item_index, len(item_ids), now, popularity_half_life_days)
    neighbors, weights = item_cosine(
        user_index, item_index, int(user_index.max()) + 1, len(item_ids), min(max_neighbors, max(1, len(item_ids) - 1))
    )
    manifest = {
        "source": source,
        "interactions": len(interactions),
        "items": len(item_ids),
        "users": int(user_index.max()) + 1,
        "now": now,
        "first_timestamp": float(timestamps.min()),
        "last_timestamp": float(timestamps.max()),
        "popularity_half_life_days": popularity_half_life_days,
        "max_neighbors": int(neighbors.shape[1]),
        "built_at": time.time(),
    }
    return LogSignals(
        item_ids=item_ids.astype(str),
        popularity=popularity,
        neighbors=neighbors,
        weights=weights,
        manifest=manifest,
        item_stats=item_stats(user_index, item_index, timestamps, len(item_ids), now),
    )


def write_log_signals(
    interactions_path: Path,
    catalog: Catalog,
    repo: Path,
    skip_bad_rows: bool = False,
    event_weights: dict[str, float] | None = None,
) -> Path:
    """``aisle index --interactions``: the whole log's signals into ``<repo>/rerank/learned/log_signals``.

    Written beside and renamed into place, so a model (re)loading meanwhile sees the old signals or
    the new ones, never half of them.
    """

    interactions, report = read_interactions(
        interactions_path,
        skip_bad_rows=skip_bad_rows,
        event_weights=event_weights,
        catalog_ids=set(catalog.item_ids.tolist()),
    )
    signals = build_log_signals(interactions, source=str(interactions_path))
    learned = Path(repo) / "rerank" / LEARNED_DIRNAME
    learned.mkdir(parents=True, exist_ok=True)
    final = replace_directory(learned / LOG_SIGNALS_DIRNAME, signals.save)
    print(
        json.dumps(
            {
                "log_signals": str(final),
                "interactions": report.kept,
                "skipped": report.skipped,
                "unknown_items": report.unknown_items,
                "items": len(signals.item_ids),
            }
        )
    )
    return final


def split_signals(split: TemporalSplit, source: str | None = None, **kwargs: object) -> LogSignals:
    """Popularity and co-occurrence of the split's training period, as of its cut."""
    return build_log_signals(split.train, now=split.cutoff, source=source, **kwargs)  # type: ignore[arg-type]  # build_log_signals' own keyword arguments
