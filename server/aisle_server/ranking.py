"""Retrieve and rank catalog items for one request: plain numpy, no Triton.

The stage turns a request (query embedding and/or a shopper's recent history) into an *interest*
vector, retrieves the best candidates by inner product over the index, drops what must not be
shown (history items, out-of-stock items) and returns the top ``k``, best first.

- Search (query, no history): interest = query embedding.
- Feed (history, no query): interest = recency-weighted mean of the history items' embeddings,
  weight ``exp(-ln2 * age / recency_half_life_s)``, so what the shopper did a minute ago counts
  more than what they did last week.
- Both: ``query_weight * query + (1 - query_weight) * session``, renormalized.
- Neither (or only unknown history ids): a popularity prior plus freshness, so a cold visitor
  still gets a sensible page instead of an error.

Ties are broken by catalog row, so the same request always gets the same answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np

from .errors import InvalidInput
from .index import CatalogIndex

LN2 = math.log(2.0)


@dataclass(frozen=True)
class RankingConfig:
    """Defaults of the ranking stage; set in the ``rerank`` model config's ``parameters``."""

    default_k: int = 10
    max_k: int = 1000
    candidates: int = 200
    max_history: int = 512
    query_weight: float = 0.5
    recency_half_life_s: float = 7 * 24 * 3600.0
    freshness_half_life_s: float = 365 * 24 * 3600.0
    fallback_freshness_weight: float = 0.2

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> "RankingConfig":
        """Build from Triton model-config parameters (all strings); unknown keys are errors."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(parameters) - set(known)
        if unknown:
            raise ValueError(f"unknown rerank parameters: {sorted(unknown)}")
        values = {}
        for name, text in parameters.items():
            caster = int if known[name] in (int, "int") else float
            values[name] = caster(text)
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError("default_k must be in [1, max_k]")
        if self.candidates < 1 or self.max_history < 1:
            raise ValueError("candidates and max_history must be >= 1")
        if not 0.0 <= self.query_weight <= 1.0:
            raise ValueError("query_weight must be in [0, 1]")
        if self.recency_half_life_s <= 0 or self.freshness_half_life_s <= 0:
            raise ValueError("half-lives must be > 0")


@dataclass(frozen=True)
class RankRequest:
    """One row of a ``rerank`` request, already validated."""

    query_embedding: np.ndarray | None  # None when the query is empty
    history_ids: Sequence[str]
    history_ts: np.ndarray
    k: int
    now: float


@dataclass(frozen=True)
class RankResult:
    item_ids: list[str]
    scores: np.ndarray  # float32, best first
    unknown_history: int


def decay(age_s: np.ndarray, half_life_s: float) -> np.ndarray:
    """``exp(-ln2 * age / half_life)``; ages in the future count as 0 (weight 1)."""
    return np.exp(-LN2 * np.maximum(age_s, 0.0) / half_life_s)


def _normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def session_interest(
    embeddings: np.ndarray, history_ts: np.ndarray, now: float, half_life_s: float
) -> np.ndarray:
    """Recency-weighted mean of history embeddings, L2-normalized."""
    weights = decay(now - history_ts, half_life_s)
    if float(weights.sum()) <= 0.0:  # every item infinitely old: fall back to a plain mean
        weights = np.ones_like(weights)
    return _normalize((weights[:, None] * embeddings).sum(axis=0) / weights.sum())


def fallback_scores(index: CatalogIndex, config: RankingConfig, now: float) -> np.ndarray:
    """Popularity prior in [0, 1] (log-scaled) plus weighted freshness, for cold requests."""
    popularity = np.log1p(np.maximum(index.popularity.astype(np.float64), 0.0))
    top = popularity.max() if len(popularity) else 0.0
    prior = popularity / top if top > 0 else popularity
    freshness = np.where(
        np.isfinite(index.created_at), decay(now - np.nan_to_num(index.created_at), config.freshness_half_life_s), 0.0
    )
    return prior + config.fallback_freshness_weight * freshness


def _top(scores: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Rows of the ``n`` best allowed scores, best first, ties broken by row (deterministic)."""
    rows = np.flatnonzero(allowed)
    if len(rows) > n:
        part = np.argpartition(-scores[rows], n - 1)[:n]
        rows = rows[part]
    order = np.lexsort((rows, -scores[rows]))
    return rows[order]


def rank(index: CatalogIndex, config: RankingConfig, request: RankRequest) -> RankResult:
    history_rows = [index.row_of.get(item_id) for item_id in request.history_ids]
    known = np.array([row is not None for row in history_rows], dtype=bool)
    rows = np.array([row for row in history_rows if row is not None], dtype=np.int64)
    unknown = int((~known).sum())

    interest = None
    if len(rows):
        interest = session_interest(
            np.asarray(index.embeddings[rows], dtype=np.float32),
            request.history_ts[known],
            request.now,
            config.recency_half_life_s,
        )
    if request.query_embedding is not None:
        query = _normalize(np.asarray(request.query_embedding, dtype=np.float32))
        interest = query if interest is None else _normalize(
            config.query_weight * query + (1.0 - config.query_weight) * interest
        )

    allowed = np.asarray(index.in_stock, dtype=bool).copy()
    allowed[rows] = False  # never recommend what the shopper just interacted with
    if interest is None:
        scores = fallback_scores(index, config, request.now)
        top = _top(scores, allowed, request.k)
    else:
        scores = np.asarray(index.embeddings @ interest, dtype=np.float32)
        candidates = _top(scores, allowed, max(config.candidates, request.k))
        top = candidates[: request.k]
    return RankResult(
        item_ids=[str(index.item_ids[r]) for r in top],
        scores=np.asarray(scores[top], dtype=np.float32),
        unknown_history=unknown,
    )


def validate_k(k: int, config: RankingConfig, catalog_size: int) -> int:
    limit = min(config.max_k, catalog_size)
    if not 1 <= k <= limit:
        raise InvalidInput("K", f"k={k} must be between 1 and {limit} (max_k={config.max_k}, catalog has {catalog_size} items)")
    return k
