"""The score's additive terms (``aisle_server.scoring``): each term alone, and their sum is ``rank``'s score."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from tiny_catalog import tiny_index, unit

from aisle_contract import SCORE_COMPONENT_NAMES
from aisle_server import scoring
from aisle_server.ranking import RankingConfig, RankRequest, cooccurrence_scores, fallback_scores, rank, rank_many
from aisle_server.scoring import ScoreTerms

N = 30
NOW = 1000.0
COLUMN = {name: i for i, name in enumerate(SCORE_COMPONENT_NAMES)}


def make_index():
    created_at = np.where(np.arange(N) % 4 == 0, np.nan, NOW - 25.0 * np.arange(N))
    return tiny_index(N, 6, 3, created_at, 50, 3, {1: ([7, 11], [1.0, 0.5]), 2: ([11, 19], [0.8, 0.4])})


INDEX = make_index()
ROWS = np.array([3, 0, 8, 1, 29])


def test_freshness_halves_every_half_life_and_is_zero_without_a_creation_time():
    # created_at = NOW - 25·row; row 0 has none (NaN)
    values = scoring.freshness(INDEX, np.array([0, 1, 2, 5]), NOW, half_life_s=25.0)
    np.testing.assert_allclose(values, [0.0, 0.5, 0.25, 2.0**-5])
    np.testing.assert_allclose(scoring.decay(np.array([-10.0, 0.0, 50.0]), 50.0), [1.0, 1.0, 0.5])


def test_freshness_term_is_the_weight_times_freshness_and_absent_at_weight_zero():
    term = scoring.freshness_term(INDEX, ROWS, NOW, 0.3, 100.0)
    np.testing.assert_allclose(term, 0.3 * scoring.freshness(INDEX, ROWS, NOW, 100.0))
    assert scoring.freshness_term(INDEX, ROWS, NOW, 0.0, 100.0) is None


def test_cosine_is_the_float32_inner_product_or_the_batch_scan_entry():
    interest = unit(np.arange(6.0))
    values = scoring.cosine(INDEX, ROWS, interest)
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, (INDEX.embeddings[ROWS] @ interest).astype(np.float64))
    scan = np.arange(N, dtype=np.float32)  # whatever the caller's scan said: read, not recomputed
    np.testing.assert_array_equal(scoring.cosine(INDEX, ROWS, interest, scan), ROWS.astype(np.float64))


def test_lexical_term_weights_bm25_scaled_to_one():
    bm25 = INDEX.lexical.scores("red shoe")
    assert bm25.max() == pytest.approx(1.0)
    np.testing.assert_allclose(scoring.lexical_term(bm25, ROWS, 0.5), 0.5 * bm25[ROWS])
    np.testing.assert_allclose(scoring.lexical_term(bm25, ROWS), bm25[ROWS])


def test_cooccurrence_term_needs_both_a_signal_and_a_weight():
    signal = np.linspace(0.0, 1.0, N)
    np.testing.assert_allclose(scoring.cooccurrence_term(signal, ROWS, 0.7), 0.7 * signal[ROWS])
    assert scoring.cooccurrence_term(signal, ROWS, 0.0) is None
    assert scoring.cooccurrence_term(None, ROWS, 0.7) is None


def test_popularity_term_weights_the_prior_feed_and_search_apart():
    config = RankingConfig(popularity_weight=0.2, feed_popularity_weight=0.9)
    assert scoring.popularity_weight(config, feed=True) == 0.9
    assert scoring.popularity_weight(config, feed=False) == 0.2
    np.testing.assert_allclose(scoring.popularity_term(INDEX, ROWS, 0.2), 0.2 * INDEX.popularity_prior[ROWS])
    assert scoring.popularity_term(INDEX, ROWS, 0.0) is None


def test_score_terms_add_in_order_and_absent_terms_count_zero():
    terms = ScoreTerms(np.array([4, 2]), cosine=np.array([0.5, 0.25]), freshness=np.array([0.125, 1.0]))
    np.testing.assert_array_equal(terms.total(), [0.625, 1.25])
    np.testing.assert_array_equal(terms.term("lexical"), [0.0, 0.0])
    np.testing.assert_array_equal(ScoreTerms(np.array([1, 2, 3])).total(), [0.0, 0.0, 0.0])
    taken = terms.take(np.array([1]))
    assert taken.rows.tolist() == [2] and taken.cosine.tolist() == [0.25] and taken.lexical is None
    grown = terms.extend(np.array([9]), np.array([0.75]))
    assert grown.rows.tolist() == [4, 2, 9]
    np.testing.assert_array_equal(grown.total(), [0.625, 1.25, 0.75])  # the new row: its cosine only


def test_relevance_terms_follow_the_search_mode():
    interest = unit(np.arange(6.0))
    bm25 = INDEX.lexical.scores("red shoe")
    hybrid = scoring.relevance_terms(INDEX, ROWS, interest, bm25, RankingConfig(lexical_weight=0.5))
    np.testing.assert_allclose(hybrid.cosine, INDEX.embeddings[ROWS] @ interest, rtol=1e-6)
    np.testing.assert_allclose(hybrid.lexical, 0.5 * bm25[ROWS])
    dense = scoring.relevance_terms(INDEX, ROWS, interest, None, RankingConfig(search_mode="dense"))
    assert dense.lexical is None and dense.cosine is not None
    lexical = scoring.relevance_terms(INDEX, ROWS, interest, bm25, RankingConfig(search_mode="lexical"))
    assert lexical.cosine is None
    np.testing.assert_allclose(lexical.lexical, bm25[ROWS])  # BM25 alone, unweighted


def test_prior_terms_add_cooccurrence_to_feeds_only():
    config = RankingConfig(cooccurrence_weight=0.7, freshness_weight=0.3, popularity_weight=0.2)
    signal = np.linspace(0.0, 1.0, N)
    base = ScoreTerms(ROWS, cosine=np.zeros(len(ROWS)))
    feed = scoring.prior_terms(INDEX, base, config, NOW, feed=True, cooccurrence=signal)
    search = scoring.prior_terms(INDEX, base, config, NOW, feed=False, cooccurrence=signal)
    np.testing.assert_allclose(feed.cooccurrence, 0.7 * signal[ROWS])
    assert search.cooccurrence is None
    assert search.popularity is not None and feed.popularity is not None  # feed_popularity_weight (default 1)
    np.testing.assert_allclose(feed.popularity, config.feed_popularity_weight * INDEX.popularity_prior[ROWS])
    np.testing.assert_allclose(
        search.freshness, 0.3 * scoring.freshness(INDEX, ROWS, NOW, config.freshness_half_life_s)
    )


def test_fallback_terms_are_the_prior_plus_weighted_freshness_over_the_catalog():
    config = RankingConfig(fallback_freshness_weight=0.2, freshness_half_life_s=50.0)
    terms = scoring.fallback_terms(INDEX, config, NOW)
    assert terms.rows.tolist() == list(range(N)) and terms.cosine is None
    expected = INDEX.popularity_prior + 0.2 * scoring.freshness(INDEX, slice(None), NOW, 50.0)
    np.testing.assert_array_equal(terms.total(), expected)
    np.testing.assert_array_equal(fallback_scores(INDEX, config, NOW), expected)


def test_split_cosine_gives_the_query_and_the_shopper_their_shares():
    cosine = np.array([0.5, -0.25, 0.75])
    rows = np.array([1, 2, 3])
    query_part = 0.4 * unit(np.arange(6.0))
    dense, shopper = scoring.split_cosine(INDEX, rows, cosine, unit(np.ones(6)), query_part)
    np.testing.assert_allclose(dense, INDEX.embeddings[rows].astype(np.float64) @ query_part.astype(np.float64))
    np.testing.assert_allclose(dense + shopper, cosine, rtol=0, atol=1e-15)
    feed = scoring.split_cosine(INDEX, rows, cosine, unit(np.ones(6)), None)
    assert feed[0].tolist() == [0, 0, 0] and feed[1] is cosine
    query = unit(np.arange(6.0))
    search = scoring.split_cosine(INDEX, rows, cosine, query, query)
    assert search[0] is cosine and search[1].tolist() == [0, 0, 0]


CASES = {
    "search hybrid": {"query": np.arange(6.0), "text": "red shoe"},
    "search lexical": {"query": np.arange(6.0), "text": "red shoe", "search_mode": "lexical"},
    "search + history": {"query": np.arange(6.0), "text": "blue hat", "history": ["i1", "i5"]},
    "feed": {"history": ["i1", "i2"]},
    "cold fallback": {},
}
KNOBS = {
    "freshness_weight": 0.3,
    "freshness_half_life_s": 200.0,
    "popularity_weight": 0.2,
    "feed_popularity_weight": 0.6,
    "cooccurrence_weight": 0.7,
    "lexical_weight": 0.5,
    "query_weight": 0.6,
}


def _request(query=None, text="", history=(), search_mode="hybrid", explain=True):
    config = RankingConfig(**KNOBS, search_mode=search_mode)
    ts = np.full(len(history), NOW - 10.0)
    return RankRequest(None if query is None else unit(query), list(history), ts, 8, NOW, config, text, explain=explain)


def _terms_by_hand(request, result):
    """Each term of the results' scores from the scoring functions alone, for the rows ``rank`` returned."""
    config = request.config
    rows = INDEX.rows_of(result.item_ids)
    if result.interest is None:
        return ScoreTerms(
            rows,
            freshness=config.fallback_freshness_weight
            * scoring.freshness(INDEX, rows, NOW, config.freshness_half_life_s),
            popularity=INDEX.popularity_prior[rows],
        )
    bm25 = INDEX.lexical.scores(request.query_text) if request.query_text else None
    terms = scoring.relevance_terms(INDEX, rows, result.interest, bm25, config)
    feed = request.query_embedding is None
    history = INDEX.rows_of(request.history_ids)
    signal = cooccurrence_scores(INDEX, request, history[history >= 0], history >= 0) if feed else None
    return scoring.prior_terms(INDEX, terms, config, NOW, feed, signal)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_terms_sum_to_ranks_score(case):
    request = _request(**CASES[case])
    result = rank(INDEX, request)
    assert len(result.item_ids) == 8
    by_hand = _terms_by_hand(request, result)
    np.testing.assert_allclose(by_hand.total(), result.scores, rtol=0, atol=1e-6)
    # and the explanation is those same terms, column by column
    parts = result.components
    for name in ("lexical", "cooccurrence", "freshness", "popularity"):
        np.testing.assert_allclose(parts[:, COLUMN[name]], by_hand.term(name), rtol=0, atol=1e-7, err_msg=name)
    cosine = parts[:, COLUMN["dense"]] + parts[:, COLUMN["shopper_interest"]]
    np.testing.assert_allclose(cosine, by_hand.term("cosine"), rtol=0, atol=1e-7)
    np.testing.assert_allclose(parts.sum(axis=1), result.scores, rtol=0, atol=1e-6)


def test_rank_many_sums_the_same_terms_as_rank():
    requests = [_request(**CASES[case]) for case in sorted(CASES)]
    for single, batched in zip([rank(INDEX, r) for r in requests], rank_many(INDEX, requests)):
        assert single.item_ids == batched.item_ids
        np.testing.assert_allclose(single.scores, batched.scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(single.components, batched.components, rtol=0, atol=1e-6)


def test_a_cold_feed_scores_by_popularity_and_freshness_alone():
    result = rank(INDEX, _request())
    assert result.interest is None
    config = RankingConfig(**KNOBS)
    expected = fallback_scores(INDEX, config, NOW)[INDEX.rows_of(result.item_ids)]
    np.testing.assert_array_equal(result.scores, expected.astype(np.float32))
    assert math.isclose(float(result.components.sum()), float(expected.sum()), abs_tol=1e-5)


def _imports(module: Path) -> set[str]:
    """Every ``aisle_server`` module ``module`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.update([node.module] if node.module else [alias.name for alias in node.names])
            elif node.module and node.module.startswith("aisle_server"):
                found.add(node.module.removeprefix("aisle_server").lstrip(".") or node.names[0].name)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("aisle_server.") for a in node.names if a.name.startswith("aisle_server"))
    return found


def test_explanations_and_the_score_formula_never_import_ranking():
    package = Path(scoring.__file__).parent
    assert "ranking" not in _imports(package / "explain.py")
    assert not {"ranking", "explain"} & _imports(package / "scoring.py")
    assert {"explain", "scoring"} <= _imports(package / "ranking.py")  # ranking uses both, at module level
