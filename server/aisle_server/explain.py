"""Why this item: a result's score split into the additive parts the ranking stage summed.

``rank`` scores a candidate as relevance + freshness_weight · freshness + popularity weight · prior
(+ cooccurrence_weight · co-occurrence for feeds), where relevance is the cosine with the interest
vector plus ``lexical_weight`` · BM25 (``ranking.py``). This module recomputes each part for the
``k`` results only, and only for a request that asked (``RankRequest.explain``): with explanations
off nothing here runs. Parts, in ``aisle_contract.SCORE_COMPONENT_NAMES`` order:

- ``dense``: the query's share of the cosine. The interest is ``(w·q + (1 − w)·s) / ‖w·q + (1 − w)·s‖``,
  so the cosine is linear in it: ``item · (w·q / ‖…‖)`` is the query's share and the rest is the
  shopper's. Search: the whole cosine; feed: 0.
- ``lexical``: ``lexical_weight`` × BM25 scaled to [0, 1] per query (BM25 alone in ``search_mode=lexical``).
- ``shopper_interest``: the history's share of the cosine (a feed's whole cosine).
- ``cooccurrence``, ``freshness``, ``popularity``: each weight × its signal (the cold fallback: the
  popularity prior + ``fallback_freshness_weight`` × freshness).
- ``diversity``: 0. MMR and DPP choose and order the page from the scored candidates but return each
  item's own score, never a changed one; where diversity moved an item shows in its
  pre-diversity rank (``RankResult.pre_diversity_rank``).

The parts add up to the returned score within float32 rounding (the score is a float32 of the same
float64 sum); ``tests/integration/test_explain.py`` checks 1e-5 through a real server.
"""

from __future__ import annotations

import numpy as np

from aisle_contract import SCORE_COMPONENT_NAMES

from .index import CatalogIndex
from .ranking import RankRequest, _Prepared, freshness

DENSE, LEXICAL, SHOPPER, COOCCURRENCE, FRESHNESS, POPULARITY, DIVERSITY = range(len(SCORE_COMPONENT_NAMES))


def score_components(index: CatalogIndex, request: RankRequest, prepared: _Prepared, rows: np.ndarray) -> np.ndarray:
    """float64 [len(rows), C]: the parts of catalog ``rows``' scores for ``request``, summing to them."""
    config = request.config
    parts = np.zeros((len(rows), len(SCORE_COMPONENT_NAMES)), dtype=np.float64)
    if not len(rows):
        return parts
    interest = prepared.interest
    if interest is None:  # the cold fallback (``ranking.fallback_scores``)
        parts[:, POPULARITY] = index.popularity_prior[rows]
        fresh = freshness(index, rows, request.now, config.freshness_half_life_s)
        parts[:, FRESHNESS] = config.fallback_freshness_weight * fresh
        return parts
    lexical = None
    if request.query_text.strip() and index.lexical is not None and config.search_mode != "dense":
        lexical = index.lexical.scores(request.query_text)
    if config.search_mode == "lexical" and lexical is not None:
        parts[:, LEXICAL] = lexical[rows]
    else:
        vectors = np.asarray(index.embeddings[rows], dtype=np.float64)
        query_part = prepared.query_part
        total = vectors @ np.asarray(interest, dtype=np.float64)
        dense = np.zeros(len(rows)) if query_part is None else vectors @ np.asarray(query_part, dtype=np.float64)
        parts[:, DENSE], parts[:, SHOPPER] = dense, total - dense
        if lexical is not None:
            parts[:, LEXICAL] = config.lexical_weight * lexical[rows]
    feed = request.query_embedding is None
    if feed and prepared.cooccurrence is not None and config.cooccurrence_weight:
        parts[:, COOCCURRENCE] = config.cooccurrence_weight * prepared.cooccurrence[rows]
    if config.freshness_weight:
        parts[:, FRESHNESS] = config.freshness_weight * freshness(
            index, rows, request.now, config.freshness_half_life_s
        )
    popularity_weight = config.feed_popularity_weight if feed else config.popularity_weight
    if popularity_weight:
        parts[:, POPULARITY] = popularity_weight * index.popularity_prior[rows]
    return parts
