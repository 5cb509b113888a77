"""The ranking stage's score, one additive term at a time: plain numpy, pure functions, no Triton.

A candidate's score is the sum of these terms, in this order:

- ``cosine``: the item's inner product with the request's interest vector (a search's query, a
  feed's history — the user encoder's vector or the recency-weighted mean — or a mix of both).
  Why it is one term: the score only ever needs the whole cosine, and summing one float32 product
  keeps the score of the exact scan, of the ANN path and of a batched scan the same.
  Explanations split it afterwards (:func:`split_cosine`) into the query's share and the shopper's.
- ``lexical``: ``lexical_weight`` × BM25 scaled to [0, 1] per query (hybrid search), or BM25 alone
  (``search_mode=lexical``, where there is no cosine).
- ``cooccurrence``: a feed's ``cooccurrence_weight`` × co-occurrence with its history, in [0, 1].
- ``freshness``: ``freshness_weight`` × ``decay(now − created_at)``.
- ``popularity``: the popularity weight (``popularity_weight`` with a text query,
  ``feed_popularity_weight`` without) × the popularity prior in [0, 1].

The cold fallback (no query, no known history) scores the whole catalog with the popularity prior
plus ``fallback_freshness_weight`` × freshness (:func:`fallback_terms`).

Why a module of its own: ``ranking`` sums these terms to pick and order the page, and ``explain``
reports them; both read the same :class:`ScoreTerms`, so an explanation is the score's own parts and
not a second copy of the formula that could drift from it. Nothing here imports ``ranking`` or
``explain``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from aisle_contract import RankingConfig

from .index import CatalogIndex

LN2 = math.log(2.0)


def decay(age_s: np.ndarray, half_life_s: float) -> np.ndarray:
    """``exp(-ln2 · age / half_life)``; ages in the future count as 0 (weight 1)."""
    return np.exp(-LN2 * np.maximum(age_s, 0.0) / half_life_s)


def freshness(index: CatalogIndex, rows: np.ndarray | slice, now: float, half_life_s: float) -> np.ndarray:
    """``decay(now − created_at)`` per item; 0 for items without a creation time."""
    created = index.created_at[rows]
    return np.where(np.isfinite(created), decay(now - np.nan_to_num(created), half_life_s), 0.0)


def cosine(
    index: CatalogIndex,
    rows: np.ndarray,
    interest: np.ndarray,
    exact_scores: np.ndarray | None = None,
    known: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """float64 ``embeddings[rows] · interest``, computed in float32 like the catalog scan.

    ``exact_scores``: that scan (``embeddings @ interest`` over every row, batched by
    ``ranking.rank_many``) when the caller already ran it, read instead of multiplying again.
    ``known``: (rows, their float32 products with ``interest``) the caller already computed (the
    graph's re-scored candidates); only the other rows' vectors are gathered and multiplied.
    """
    if exact_scores is not None:
        return exact_scores[rows].astype(np.float64)
    if known is None or not len(known[0]):
        return np.asarray(index.vectors(rows) @ interest, dtype=np.float64)
    known_rows, known_scores = known
    order = np.argsort(known_rows)
    at = np.minimum(np.searchsorted(known_rows, rows, sorter=order), len(order) - 1)
    hit = known_rows[order[at]] == rows
    out = np.empty(len(rows), dtype=np.float64)
    out[hit] = known_scores[order[at[hit]]]
    missing = ~hit
    if missing.any():
        out[missing] = index.vectors(rows[missing]) @ interest
    return out


def lexical_term(bm25: np.ndarray, rows: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """``weight`` × the query's BM25 (scaled to [0, 1] by ``LexicalIndex.scores``) of ``rows``."""
    return weight * bm25[rows]


def cooccurrence_term(cooccurrence: np.ndarray | None, rows: np.ndarray, weight: float) -> np.ndarray | None:
    """``weight`` × a feed's co-occurrence score of ``rows``; None (no term) without signal or weight."""
    if cooccurrence is None or not weight:
        return None
    return weight * cooccurrence[rows]


def freshness_term(
    index: CatalogIndex, rows: np.ndarray | slice, now: float, weight: float, half_life_s: float
) -> np.ndarray | None:
    """``weight`` × :func:`freshness`; None (no term, nothing computed) at weight 0."""
    if not weight:
        return None
    return weight * freshness(index, rows, now, half_life_s)


def popularity_weight(config: RankingConfig, feed: bool) -> float:
    """A feed leans on popularity (``feed_popularity_weight``), a text query on relevance (``popularity_weight``)."""
    return config.feed_popularity_weight if feed else config.popularity_weight


def popularity_term(index: CatalogIndex, rows: np.ndarray | slice, weight: float) -> np.ndarray | None:
    """``weight`` × the popularity prior in [0, 1]; None (no term) at weight 0."""
    if not weight:
        return None
    return weight * index.popularity_prior[rows]


@dataclass(frozen=True)
class ScoreTerms:
    """The additive terms of the scores of catalog ``rows``, float64, each aligned with ``rows``.

    A term that does not apply to the request is None (it adds nothing and costs no array).
    :meth:`total` is the score the ranking stage orders by and returns.
    """

    rows: np.ndarray
    cosine: np.ndarray | None = None
    lexical: np.ndarray | None = None
    cooccurrence: np.ndarray | None = None
    freshness: np.ndarray | None = None
    popularity: np.ndarray | None = None

    #: The order :meth:`total` adds the terms in (float addition is not associative).
    ORDER = ("cosine", "lexical", "cooccurrence", "freshness", "popularity")

    def term(self, name: str) -> np.ndarray:
        """Term ``name`` as an array (zeros where it does not apply)."""
        values = getattr(self, name)
        return np.zeros(len(self.rows)) if values is None else np.asarray(values, dtype=np.float64)

    def total(self) -> np.ndarray:
        """float64 score per row: the terms added in :attr:`ORDER`."""
        total: np.ndarray | None = None
        for name in self.ORDER:
            values = getattr(self, name)
            if values is not None:
                total = np.asarray(values, dtype=np.float64) if total is None else total + values
        return np.zeros(len(self.rows)) if total is None else total

    def take(self, positions: np.ndarray) -> ScoreTerms:
        """These terms at ``positions`` (an order, or a subset) of ``rows``."""
        arrays = {name: getattr(self, name) for name in self.ORDER}
        return ScoreTerms(
            self.rows[positions], **{name: None if v is None else v[positions] for name, v in arrays.items()}
        )

    def extend(self, rows: np.ndarray, cosine: np.ndarray) -> ScoreTerms:
        """These terms plus new ``rows`` that only have a cosine so far (a feed's popular and
        co-occurring candidates, recalled after the embedding and lexical ones): their other terms are 0."""
        return self.concat(ScoreTerms(rows, cosine=cosine))

    def concat(self, other: ScoreTerms) -> ScoreTerms:
        """These rows' terms, then ``other``'s; a term one side lacks is 0 there (None where neither has it)."""
        if not len(other.rows):
            return self

        def joined(mine: np.ndarray | None, theirs: np.ndarray | None) -> np.ndarray | None:
            if mine is None and theirs is None:
                return None
            return np.concatenate(
                [
                    np.zeros(len(self.rows)) if mine is None else mine,
                    np.zeros(len(other.rows)) if theirs is None else theirs,
                ]
            )

        return ScoreTerms(
            np.concatenate([self.rows, other.rows]),
            **{name: joined(getattr(self, name), getattr(other, name)) for name in self.ORDER},
        )

    def with_terms(self, **terms: np.ndarray | None) -> ScoreTerms:
        """These terms with ``terms`` (aligned with ``rows``) set; None leaves a term as it is."""
        return replace(self, **{name: values for name, values in terms.items() if values is not None})


def relevance_terms(
    index: CatalogIndex,
    rows: np.ndarray,
    interest: np.ndarray | None,
    bm25: np.ndarray | None,
    config: RankingConfig,
    exact_scores: np.ndarray | None = None,
    known: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScoreTerms:
    """Relevance of candidate ``rows``: the cosine and/or the lexical term, by ``search_mode``.

    ``bm25`` is the query's BM25 over the catalog (None: no text query or no lexical index, or
    ``search_mode=dense``). ``search_mode=lexical`` with BM25 scores by it alone, unweighted.
    ``known``: products some rows already have (:func:`cosine`).
    """
    if config.search_mode == "lexical" and bm25 is not None:
        return ScoreTerms(rows, lexical=lexical_term(bm25, rows))
    assert interest is not None, "dense or hybrid relevance needs an interest vector"
    if bm25 is None:
        return ScoreTerms(rows, cosine=cosine(index, rows, interest, exact_scores, known))
    # hybrid: the cosine by product even after a batched scan, as ranking has always scored it
    lexical = lexical_term(bm25, rows, config.lexical_weight)
    return ScoreTerms(rows, cosine=cosine(index, rows, interest, known=known), lexical=lexical)


def prior_terms(
    index: CatalogIndex,
    terms: ScoreTerms,
    config: RankingConfig,
    now: float,
    feed: bool,
    cooccurrence: np.ndarray | None = None,
) -> ScoreTerms:
    """``terms`` with the item-level priors of their rows added: a feed's co-occurrence, freshness
    and popularity, each weighted by its knob."""
    rows = terms.rows
    return terms.with_terms(
        cooccurrence=cooccurrence_term(cooccurrence, rows, config.cooccurrence_weight) if feed else None,
        freshness=freshness_term(index, rows, now, config.freshness_weight, config.freshness_half_life_s),
        popularity=popularity_term(index, rows, popularity_weight(config, feed)),
    )


def fallback_terms(
    index: CatalogIndex, config: RankingConfig, now: float, rows: np.ndarray | None = None
) -> ScoreTerms:
    """The cold fallback's terms of ``rows`` (None: the whole catalog): the popularity prior in
    [0, 1] plus ``fallback_freshness_weight`` × freshness — a cold visitor still gets a sensible page."""
    at: np.ndarray | slice = slice(None) if rows is None else rows
    fresh = freshness(index, at, now, config.freshness_half_life_s)
    return ScoreTerms(
        np.arange(len(index)) if rows is None else np.asarray(rows, dtype=np.int64),
        freshness=config.fallback_freshness_weight * fresh,
        popularity=index.popularity_prior[at],
    )


def split_cosine(
    index: CatalogIndex,
    rows: np.ndarray,
    cosine: np.ndarray,
    interest: np.ndarray | None,
    query_part: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(query's share, shopper's share)`` of the ``cosine`` of ``rows`` with ``interest``, adding up to it.

    With both a query and a history the interest is ``(w·q + (1 − w)·s) / ‖w·q + (1 − w)·s‖``, so
    the cosine is linear in it: ``item · query_part`` (``query_part = w·q / ‖…‖``) is the query's
    share and the rest the shopper's. No query (``query_part`` None): all the shopper's; no history
    (the interest is the query): all the query's, exactly.
    """
    if query_part is None or not len(rows):
        return np.zeros(len(rows)), cosine
    if query_part is interest or (interest is not None and np.array_equal(query_part, interest)):
        return cosine, np.zeros(len(rows))
    dense = np.asarray(index.vectors(rows), dtype=np.float64) @ np.asarray(query_part, dtype=np.float64)
    return dense, cosine - dense
