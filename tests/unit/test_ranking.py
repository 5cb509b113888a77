"""The ranking stage's math and rules, checked on small hand-made indexes."""
import math

import numpy as np
import pytest

from aisle_server.errors import InvalidInput
from aisle_server.index import CatalogIndex
from aisle_server.ranking import RankingConfig, RankRequest, decay, fallback_scores, rank, session_interest, validate_k


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def make_index(vectors, popularity=None, in_stock=None, created_at=None):
    n = len(vectors)
    return CatalogIndex(
        item_ids=np.array([f"i{r}" for r in range(n)]),
        embeddings=np.stack([unit(v) for v in vectors]),
        titles=np.array([f"title {r}" for r in range(n)]),
        categories=np.array(["c"] * n),
        created_at=np.asarray(created_at if created_at is not None else [np.nan] * n, dtype=np.float64),
        popularity=np.asarray(popularity if popularity is not None else [0.0] * n, dtype=np.float32),
        in_stock=np.asarray(in_stock if in_stock is not None else [True] * n, dtype=bool),
    )


def request(query=None, history=(), k=3, now=1000.0):
    ids = [h[0] for h in history]
    ts = np.array([h[1] for h in history], dtype=np.float64)
    return RankRequest(None if query is None else unit(query), ids, ts, k, now)


def test_decay_halves_every_half_life_and_ignores_future():
    ages = np.array([0.0, 10.0, 20.0, -5.0])
    np.testing.assert_allclose(decay(ages, 10.0), [1.0, 0.5, 0.25, 1.0])
    assert math.isclose(float(decay(np.array([3600.0]), 3600.0)[0]), math.exp(-math.log(2)))


def test_session_interest_weights_recent_items_more():
    embeddings = np.stack([unit([1, 0]), unit([0, 1])])
    # item 0 seen one half-life ago, item 1 just now: weights 0.5 and 1.
    interest = session_interest(embeddings, np.array([0.0, 100.0]), now=100.0, half_life_s=100.0)
    np.testing.assert_allclose(interest, unit([0.5, 1.0]), rtol=1e-6)


def test_search_ranks_by_inner_product_best_first():
    index = make_index([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]])
    result = rank(index, RankingConfig(), request(query=[1, 0, 0], k=3))
    assert result.item_ids == ["i0", "i1", "i2"] or result.item_ids[:2] == ["i0", "i1"]
    assert list(result.scores) == sorted(result.scores, reverse=True)
    np.testing.assert_allclose(result.scores[0], 1.0, rtol=1e-6)


def test_history_items_are_excluded_and_unknown_ids_counted():
    index = make_index([[1, 0], [0.95, 0.05], [0, 1], [0.5, 0.5]])
    result = rank(index, RankingConfig(), request(history=[("i0", 999.0), ("nope", 999.0)], k=3))
    assert "i0" not in result.item_ids
    assert result.item_ids[0] == "i1"
    assert result.unknown_history == 1


def test_out_of_stock_items_are_never_returned():
    index = make_index([[1, 0], [0.9, 0.1], [0, 1]], in_stock=[False, True, True])
    result = rank(index, RankingConfig(), request(query=[1, 0], k=2))
    assert result.item_ids == ["i1", "i2"]


def test_query_and_history_blend_by_query_weight():
    index = make_index([[1, 0], [0, 1], [1, 1], [1, -1]])
    history = [("i1", 1000.0)]
    only_query = rank(index, RankingConfig(query_weight=1.0), request(query=[1, 0], history=history, k=1))
    blended = rank(index, RankingConfig(query_weight=0.5), request(query=[1, 0], history=history, k=1))
    assert only_query.item_ids == ["i3"] or only_query.item_ids == ["i0"]
    assert only_query.item_ids == ["i0"]
    assert blended.item_ids == ["i2"]  # halfway between the query and the session


def test_fallback_orders_by_popularity_then_freshness():
    index = make_index([[1, 0]] * 3, popularity=[5, 50, 5], created_at=[0.0, 0.0, 990.0])
    config = RankingConfig(freshness_half_life_s=10.0, fallback_freshness_weight=0.2)
    result = rank(index, config, request(k=3, now=1000.0))
    assert result.item_ids == ["i1", "i2", "i0"]
    scores = fallback_scores(index, config, 1000.0)
    assert scores[1] == pytest.approx(1.0, abs=1e-6)  # most popular = prior 1, stale
    assert scores[2] == pytest.approx(np.log1p(5) / np.log1p(50) + 0.2 * 0.5)


def test_ties_break_by_catalog_row_so_answers_are_deterministic():
    index = make_index([[1, 0]] * 6)
    results = {tuple(rank(index, RankingConfig(), request(query=[1, 0], k=4)).item_ids) for _ in range(5)}
    assert results == {("i0", "i1", "i2", "i3")}


def test_k_larger_than_candidates_still_returns_k():
    index = make_index([[1, r / 10] for r in range(30)])
    result = rank(index, RankingConfig(candidates=5), request(query=[1, 0], k=12))
    assert len(result.item_ids) == 12


@pytest.mark.parametrize("k", [0, -1, 5, 1001])
def test_validate_k_names_the_field(k):
    with pytest.raises(InvalidInput, match="K"):
        validate_k(k, RankingConfig(max_k=1000), catalog_size=4)


def test_config_from_parameters_casts_and_rejects_unknown_keys():
    config = RankingConfig.from_parameters({"default_k": "7", "query_weight": "0.25"})
    assert config.default_k == 7 and config.query_weight == 0.25
    with pytest.raises(ValueError, match="unknown rerank parameters"):
        RankingConfig.from_parameters({"qurey_weight": "0.2"})
    with pytest.raises(ValueError, match="query_weight"):
        RankingConfig.from_parameters({"query_weight": "1.5"})
