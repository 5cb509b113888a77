"""Why this item: a result's score split into the additive parts the ranking stage summed.

``rank`` scores a candidate as the sum of the terms ``aisle_server.scoring`` computes (relevance —
the cosine with the interest vector plus ``lexical_weight`` · BM25 — + a feed's
``cooccurrence_weight`` · co-occurrence + ``freshness_weight`` · freshness + popularity weight ·
prior). This module reads those very arrays for the ``k`` results (``scoring.ScoreTerms``), only for
a request that asked (``RankRequest.explain``): with explanations off nothing here runs. It
recomputes nothing but the split of the cosine into its query and shopper shares, so an explanation
cannot drift from the score. Parts, in ``aisle_contract.SCORE_COMPONENT_NAMES`` order:

- ``dense``: the query's share of the cosine (``scoring.split_cosine``). Search: the whole cosine;
  feed: 0.
- ``lexical``: ``lexical_weight`` × BM25 scaled to [0, 1] per query (BM25 alone in ``search_mode=lexical``).
- ``shopper_interest``: the history's share of the cosine (a feed's whole cosine: the user
  encoder's vector or the recency-weighted mean of the history).
- ``cooccurrence``, ``freshness``, ``popularity``: each weight × its signal (the cold fallback: the
  popularity prior + ``fallback_freshness_weight`` × freshness).
- ``rules``: what the merchandising rules' boosts and buries added (``aisle_server.rules``); which
  rule did what, and which placed an item (pins, slots), is in ``RankResult.rule_effects``.
- ``diversity``: 0. MMR and DPP choose and order the page from the scored candidates but return each
  item's own score, never a changed one; where diversity moved an item shows in its
  pre-diversity rank (``RankResult.pre_diversity_rank``).

The parts add up to the returned score within float32 rounding (the score is a float32 of the
float64 sum of the same terms); ``tests/integration/test_explain.py`` checks 1e-5 through a real server.
"""

from __future__ import annotations

import numpy as np

from aisle_contract import SCORE_COMPONENT_NAMES

from .index import CatalogIndex
from .scoring import ScoreTerms, split_cosine

DENSE, LEXICAL, SHOPPER, COOCCURRENCE, FRESHNESS, POPULARITY, DIVERSITY, RULES = range(len(SCORE_COMPONENT_NAMES))


def score_components(
    index: CatalogIndex,
    terms: ScoreTerms,
    interest: np.ndarray | None,
    query_part: np.ndarray | None,
    rules: np.ndarray | None = None,
) -> np.ndarray:
    """float64 [len(terms.rows), C]: the parts of the scores of ``terms.rows``, summing to them.

    ``terms`` are the results' own score terms, as ranking summed them; ``interest`` the vector they
    were ranked with and ``query_part`` the query's share of it (``ranking.interest_parts``; None:
    no query); ``rules`` what the merchandising rules added to each (``aisle_server.merchandising``).
    """
    parts = np.zeros((len(terms.rows), len(SCORE_COMPONENT_NAMES)), dtype=np.float64)
    if not len(terms.rows):
        return parts
    if terms.cosine is not None:  # no cosine: lexical-only search, or the cold fallback
        parts[:, DENSE], parts[:, SHOPPER] = split_cosine(index, terms.rows, terms.cosine, interest, query_part)
    parts[:, LEXICAL] = terms.term("lexical")
    parts[:, COOCCURRENCE] = terms.term("cooccurrence")
    parts[:, FRESHNESS] = terms.term("freshness")
    parts[:, POPULARITY] = terms.term("popularity")
    if rules is not None:
        parts[:, RULES] = rules
    return parts
