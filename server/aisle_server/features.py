"""The learned ranker's features of a feed's candidates: one function, offline and online alike.

``rerank`` calls :func:`feature_rows` on a feed's candidate union (``aisle_server.ranking``) before
the learned ranker scores it; ``aisle finetune`` builds its training rows by running that very
ranking path over the log at past cuts (``ranking.candidate_features``), so a model never sees a
feature computed one way in training and another at serving. Plain numpy, float64, NaN where a
value is unknown (LightGBM routes missing values itself).

Columns, in ``aisle_contract.RANKER_FEATURE_NAMES`` order:

- each source's score and rank among the candidates: ``cosine`` (the item with the interest vector:
  the user encoder's when served, else the recency-weighted history mean), ``cooccurrence`` (scaled
  to [0, 1] per request, as the hand-weighted stack adds it) and ``cooccurrence_raw`` (the
  recency-weighted sum of neighbour weights before that scaling), ``popularity_prior`` and the
  item's catalog-wide ``popularity_rank``, and ``hand_score``/``hand_rank``: the hand-weighted sum
  the stack orders by without a ranker (so a model can only add to it);
- which sources recalled it: ``from_dense``, ``from_popular``, ``from_cooccurrence``, ``from_history``
  (the buy-again source: the shopper's own items, when history may show);
- the log's item statistics (:data:`ITEM_STAT_NAMES`): interactions in 7 and 30
  days and in all, buyers, the share of buyers who bought it again, its typical repurchase
  interval in days, days since the log first saw it;
- repurchase features of this shopper: ``history_count`` (times in the history),
  ``history_recency_weight`` (its share of the history's recency weights), ``days_since_last`` and
  ``interval_ratio`` (days since last ÷ the item's typical repurchase interval: near 1, it is due);
- ``item_age_days`` (from the catalog's ``created_at``), ``category_affinity`` (share of the
  history in the item's category), ``history_length`` and ``history_repeat_share`` (the share of
  the shopper's history events that repeat an item already in it: how much this shopper buys again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from aisle_contract import ITEM_STAT_NAMES, RANKER_FEATURE_NAMES

from .index import CatalogIndex

FEATURE_NAMES = RANKER_FEATURE_NAMES
#: ``ITEM_STAT_NAMES`` are the columns of the log signals' ``item_stats`` (``aisle_server.learned``;
#: float64 (V, S), NaN = unknown), as of the signals' ``now``: interactions in the last 7 and 30 days
#: and in all, distinct shoppers, the share of them who had the item on two days or more, the median
#: over those shoppers of their mean days between two such days (the item's typical repurchase
#: interval), and days since the log first saw the item.
DAY = 86400.0
SOURCES = ("dense", "popular", "cooccurrence", "history")
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
HAND_RANK = _COLUMN["hand_rank"]  # the candidate's place in the hand-weighted order (ties by row)
FROM_HISTORY = _COLUMN["from_history"]
#: (score column, its rank column) of the sources ranked over the whole union
_RANKED = tuple(
    (_COLUMN[value], _COLUMN[rank])
    for value, rank in (
        ("cosine", "cosine_rank"),
        ("cooccurrence_raw", "cooccurrence_rank"),
        ("hand_score", "hand_rank"),
    )
)


def _columns(names: tuple[str, ...]) -> slice:
    """The contiguous columns of ``names``, in that order (the contract lists them so)."""
    start = _COLUMN[names[0]]
    assert FEATURE_NAMES[start : start + len(names)] == names, f"{names} are not adjacent in FEATURE_NAMES"
    return slice(start, start + len(names))


_SOURCE_COLUMNS = _columns(tuple(f"from_{source}" for source in SOURCES))
_STAT_COLUMNS = _columns(ITEM_STAT_NAMES)
_HISTORY = _columns(("history_count", "history_recency_weight", "days_since_last"))


@dataclass(frozen=True)
class FeedContext:
    """What a feed request knows about its shopper, as ranking prepared it."""

    history_rows: np.ndarray  # int64: the known history's catalog rows, oldest → newest
    history_ts: np.ndarray  # float64: their timestamps
    recency: np.ndarray  # float64: their recency weights (summing to 1), as the interest used them
    now: float
    cooccurrence_raw: np.ndarray | None = None  # per catalog row, before scaling; None: no co-occurrence


def descending_rank(values: np.ndarray, rows: np.ndarray, by_row: np.ndarray | None = None) -> np.ndarray:
    """0-based position of each value when sorted best first, ties by catalog row.

    ``by_row`` (``np.argsort(rows)``, shared by a request's columns): a stable sort of the values
    taken in row order is the same order as ``np.lexsort((rows, -values))``, at a third of its cost.
    """
    if by_row is None:
        by_row = np.argsort(rows, kind="stable")
    order = by_row[np.argsort(-values[by_row], kind="stable")]
    rank = np.empty(len(values), dtype=np.float64)
    rank[order] = np.arange(len(values))
    return rank


def _history_features(context: FeedContext, rows: np.ndarray, out: np.ndarray) -> float:
    """Per candidate, into ``out`` (its three :data:`_HISTORY` columns): times in the history, its
    recency weight and days since the shopper last had it (0, 0 and NaN for an item not had).
    Returns the share of the history's events that repeat an item had before in it (0: none)."""
    out[:, 0:2] = 0.0
    history = context.history_rows
    if not len(history):
        return 0.0
    distinct, inverse = np.unique(history, return_inverse=True)
    latest = np.full(len(distinct), -np.inf)
    np.maximum.at(latest, inverse, context.history_ts)
    at = np.minimum(np.searchsorted(distinct, rows), len(distinct) - 1)
    seen = np.flatnonzero(distinct[at] == rows)
    at = at[seen]
    out[seen, 0] = np.bincount(inverse, minlength=len(distinct))[at]
    out[seen, 1] = np.bincount(inverse, weights=context.recency, minlength=len(distinct))[at]
    out[seen, 2] = np.maximum(context.now - latest[at], 0.0) / DAY
    return 1.0 - len(distinct) / len(history)


def _source_flags(rows: np.ndarray, sources: Mapping[str, np.ndarray], order: np.ndarray) -> np.ndarray:
    """float64 [len(rows), len(SOURCES)]: 1.0 where the source recalled the candidate (``order``
    sorts ``rows``; one search for every source's rows)."""
    recalled = [np.asarray(sources.get(source, ()), dtype=np.int64) for source in SOURCES]
    wanted = np.concatenate(recalled)
    flags = np.zeros((len(rows), len(SOURCES)))
    if len(wanted):
        ordered = rows[order]
        source = np.repeat(np.arange(len(SOURCES)), [len(r) for r in recalled])
        at = np.minimum(np.searchsorted(ordered, wanted), len(rows) - 1)
        hit = ordered[at] == wanted
        flags[order[at[hit]], source[hit]] = 1.0
    return flags


def _category_affinity(index: CatalogIndex, context: FeedContext, rows: np.ndarray) -> np.ndarray:
    if not len(context.history_rows) or not len(rows):
        return np.zeros(len(rows))
    codes = getattr(index.lookups, "category_codes", None)  # ints where the index has them (not an overlay)
    column = codes if codes is not None and len(codes) == len(index) else index.categories
    had = np.sort(np.asarray(column[context.history_rows]))
    wanted = np.asarray(column[rows])
    times = np.searchsorted(had, wanted, side="right") - np.searchsorted(had, wanted, side="left")
    return times / len(had)


def scored_rows(hand_rank: np.ndarray, from_history: np.ndarray, depth: int) -> np.ndarray:
    """bool per candidate: whether the learned ranker scores it — the hand-weighted top ``depth``
    and every buy-again candidate (``aisle_server.ranker.DEPTH`` says why not all of them)."""
    return (hand_rank < depth) | (from_history > 0)


def feature_rows(
    index: CatalogIndex,
    context: FeedContext,
    rows: np.ndarray,
    cosine: np.ndarray,
    cooccurrence: np.ndarray | None,
    hand_score: np.ndarray,
    sources: Mapping[str, np.ndarray],
    depth: int | None = None,
) -> np.ndarray:
    """float64 [len(rows), len(FEATURE_NAMES)]: the features of candidate ``rows``.

    ``cosine`` and ``hand_score`` are aligned with ``rows``; ``cooccurrence`` is the request's
    scaled co-occurrence per catalog row (None: none); ``sources`` maps each of :data:`SOURCES` to
    the rows it recalled. ``depth``: only the rows the ranker scores (:func:`scored_rows`) get
    every column; the others get the columns that choose them and order them after the scored ones
    (the ranks, the scores ranked and the source flags) and NaN elsewhere — all ``rerank`` needs, as
    the ranker scores only the head of a feed's union. A row's values do not depend on ``depth``:
    the ranks are over the whole union either way.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full((len(rows), len(FEATURE_NAMES)), np.nan)
    if not len(rows):
        return out
    # the union's columns, written in place (each is float64 once in ``out``, as the model reads it)
    by_row = np.argsort(rows, kind="stable")
    out[:, _COLUMN["cosine"]] = cosine
    if context.cooccurrence_raw is None:
        out[:, _COLUMN["cooccurrence_raw"]] = 0.0
    else:  # read in row order: a sparse score's search walks its rows once
        out[by_row, _COLUMN["cooccurrence_raw"]] = context.cooccurrence_raw[rows[by_row]]
    out[:, _COLUMN["hand_score"]] = hand_score
    for value, rank in _RANKED:
        out[:, rank] = descending_rank(out[:, value], rows, by_row)
    out[:, _SOURCE_COLUMNS] = _source_flags(rows, sources, by_row)
    head = slice(None) if depth is None else np.flatnonzero(scored_rows(out[:, HAND_RANK], out[:, FROM_HISTORY], depth))
    rows, at = rows[head], out[head]  # ``at``: a copy of the head's rows (an index array) or a view (all)
    at[:, _COLUMN["cooccurrence"]] = 0.0 if cooccurrence is None else cooccurrence[rows]
    at[:, _COLUMN["popularity_prior"]] = index.popularity_prior[rows]
    at[:, _COLUMN["popularity_rank"]] = index.popularity_rank[rows]
    at[:, _COLUMN["history_length"]] = len(context.history_rows)
    at[:, _COLUMN["category_affinity"]] = _category_affinity(index, context, rows)
    at[:, _COLUMN["history_repeat_share"]] = _history_features(context, rows, at[:, _HISTORY])
    if index.item_stats is not None:
        at[:, _STAT_COLUMNS] = index.item_stats[rows]
        interval = at[:, _COLUMN["repurchase_interval_days"]]
        with np.errstate(divide="ignore", invalid="ignore"):
            at[:, _COLUMN["interval_ratio"]] = np.where(
                interval > 0, at[:, _COLUMN["days_since_last"]] / interval, np.nan
            )
    age = (context.now - np.asarray(index.created_at[rows], dtype=np.float64)) / DAY
    age[~np.isfinite(age)] = np.nan
    at[:, _COLUMN["item_age_days"]] = age
    if depth is not None:
        out[head] = at
    return out
