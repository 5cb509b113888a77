"""The ranking stage's math and rules, checked on small hand-made indexes."""

import math
from dataclasses import replace

import numpy as np
import pytest

from aisle_server.errors import InvalidInput
from aisle_server.index import CatalogIndex
from aisle_server.ranking import (
    RankingConfig,
    RankRequest,
    decay,
    fallback_scores,
    rank,
    rank_many,
    session_interest,
    validate_k,
    with_overrides,
)


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


def request(query=None, history=(), k=3, now=1000.0, config=None, **filters):
    ids = [h[0] for h in history]
    ts = np.array([h[1] for h in history], dtype=np.float64)
    return RankRequest(None if query is None else unit(query), ids, ts, k, now, config or RankingConfig(), **filters)


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
    result = rank(index, request(query=[1, 0, 0], k=3))
    assert result.item_ids[:2] == ["i0", "i1"]
    assert list(result.scores) == sorted(result.scores, reverse=True)
    np.testing.assert_allclose(result.scores[0], 1.0, rtol=1e-6)


def test_history_items_are_excluded_and_unknown_ids_counted():
    index = make_index([[1, 0], [0.95, 0.05], [0, 1], [0.5, 0.5]])
    result = rank(index, request(history=[("i0", 999.0), ("nope", 999.0)], k=3))
    assert "i0" not in result.item_ids
    assert result.item_ids[0] == "i1"
    assert result.unknown_history == 1


def test_out_of_stock_items_are_never_returned():
    index = make_index([[1, 0], [0.9, 0.1], [0, 1]], in_stock=[False, True, True])
    result = rank(index, request(query=[1, 0], k=2))
    assert result.item_ids == ["i1", "i2"]


def test_query_and_history_blend_by_query_weight():
    index = make_index([[1, 0], [0, 1], [1, 1], [1, -1]])
    history = [("i1", 1000.0)]
    only_query = rank(index, request(query=[1, 0], history=history, k=1, config=RankingConfig(query_weight=1.0)))
    blended = rank(index, request(query=[1, 0], history=history, k=1, config=RankingConfig(query_weight=0.5)))
    assert only_query.item_ids == ["i0"]
    assert blended.item_ids == ["i2"]  # halfway between the query and the session


def test_fallback_orders_by_popularity_then_freshness():
    index = make_index([[1, 0]] * 3, popularity=[5, 50, 5], created_at=[0.0, 0.0, 990.0])
    config = RankingConfig(freshness_half_life_s=10.0, fallback_freshness_weight=0.2)
    result = rank(index, request(k=3, now=1000.0, config=config))
    assert result.item_ids == ["i1", "i2", "i0"]
    scores = fallback_scores(index, config, 1000.0)
    assert scores[1] == pytest.approx(1.0, abs=1e-6)  # most popular = prior 1, stale
    assert scores[2] == pytest.approx(np.log1p(5) / np.log1p(50) + 0.2 * 0.5)


def test_ties_break_by_catalog_row_so_answers_are_deterministic():
    index = make_index([[1, 0]] * 6)
    results = {tuple(rank(index, request(query=[1, 0], k=4)).item_ids) for _ in range(5)}
    assert results == {("i0", "i1", "i2", "i3")}


def test_k_larger_than_candidates_still_returns_k():
    index = make_index([[1, r / 10] for r in range(30)])
    result = rank(index, request(query=[1, 0], k=12, config=RankingConfig(candidates=5)))
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


def test_filters_exclude_ids_and_categories():
    index = make_index([[1, 0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    index = CatalogIndex(
        **{
            **{
                f: getattr(index, f)
                for f in ("item_ids", "embeddings", "titles", "created_at", "popularity", "in_stock")
            },
            "categories": np.array(["shoes", "shoes", "bags", "hats"]),
        }
    )
    assert rank(index, request(query=[1, 0], k=2, exclude_ids=["i0", "zz"])).item_ids == ["i1", "i2"]
    assert rank(index, request(query=[1, 0], k=2, allow_categories=["bags", "hats"])).item_ids == ["i2", "i3"]
    assert rank(index, request(query=[1, 0], k=2, deny_categories=["shoes"])).item_ids == ["i2", "i3"]


def test_history_can_be_included_on_request():
    index = make_index([[1, 0], [0.9, 0.1], [0, 1]])
    config = RankingConfig(exclude_history=False)
    assert rank(index, request(history=[("i0", 1000.0)], k=1, config=config)).item_ids == ["i0"]


def test_freshness_and_popularity_weights_reorder_close_candidates():
    index = make_index([[1, 0.00], [1, 0.01], [1, 0.02]], popularity=[0, 0, 100], created_at=[0.0, 1000.0, 0.0])
    plain = rank(index, request(query=[1, 0], k=3))
    fresh = rank(
        index, request(query=[1, 0], k=3, config=RankingConfig(freshness_weight=0.1, freshness_half_life_s=10))
    )
    popular = rank(index, request(query=[1, 0], k=3, config=RankingConfig(popularity_weight=0.1)))
    assert plain.item_ids[0] == "i0"
    assert fresh.item_ids[0] == "i1"  # created "now"
    assert popular.item_ids[0] == "i2"
    assert fresh.scores[0] == pytest.approx(float(unit([1, 0.01]) @ unit([1, 0])) + 0.1, abs=1e-5)


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_diversity_spreads_results_and_category_cap_holds(method):
    # two tight clusters: three near-duplicates of [1, 0] and three of [0.6, 0.8]
    vectors = [[1, 0.00], [1, 0.01], [1, 0.02], [0.6, 0.8], [0.6, 0.81], [0.6, 0.82]]
    index = make_index(vectors)
    plain = rank(index, request(query=[1, 0], k=2))
    assert plain.item_ids == ["i0", "i1"]
    diverse = rank(index, request(query=[1, 0], k=2, config=RankingConfig(diversity=0.8, diversity_method=method)))
    assert diverse.item_ids[0] == "i0" and diverse.item_ids[1] in {"i3", "i4", "i5"}
    index.categories[:] = ["a", "a", "a", "b", "b", "b"]
    capped = rank(index, request(query=[1, 0], k=4, config=RankingConfig(category_cap=2, diversity_method=method)))
    assert sorted(index.categories[[int(i[1:]) for i in capped.item_ids]].tolist()) == ["a", "a", "b", "b"]


def test_overrides_are_validated_and_name_the_knob():
    config = with_overrides(RankingConfig(), {"diversity": 0.3, "diversity_method": "mmr"})
    assert config.diversity == 0.3 and config.diversity_method == "mmr"
    with pytest.raises(InvalidInput, match="DIVERSITY"):
        with_overrides(RankingConfig(), {"diversity": 1.5})
    with pytest.raises(InvalidInput, match="DIVERSITY_METHOD"):
        with_overrides(RankingConfig(), {"diversity_method": "random"})
    with pytest.raises(InvalidInput, match="RECENCY_HALF_LIFE_S"):
        with_overrides(RankingConfig(), {"recency_half_life_s": 0.0})


def test_config_parameters_parse_bools_and_strings():
    config = RankingConfig.from_parameters({"exclude_history": "false", "diversity_method": "mmr", "category_cap": "3"})
    assert config.exclude_history is False and config.diversity_method == "mmr" and config.category_cap == 3


@pytest.mark.parametrize("method", ["mmr", "dpp"])
def test_everything_filtered_out_gives_an_empty_answer_not_an_error(method):
    index = make_index([[1, 0], [0, 1]], in_stock=[False, False])
    config = RankingConfig(diversity=0.5, diversity_method=method)
    for query in ([1, 0], None):
        result = rank(index, request(query=query, k=2, config=config))
        assert result.item_ids == [] and len(result.scores) == 0


def test_rank_many_answers_each_request_as_rank_does(monkeypatch):
    """One matrix product for the batch's catalog scans; every other rule runs per request."""
    from dataclasses import replace

    from aisle_server import ranking
    from aisle_server.lexical import LexicalIndex

    rng = np.random.default_rng(0)
    base = make_index(rng.standard_normal((60, 8)), popularity=rng.random(60), created_at=rng.random(60) * 1000)
    base.categories[:] = [f"c{r % 3}" for r in range(60)]
    index = replace(
        base, lexical=LexicalIndex.build([f"red shoe {r}" if r % 4 == 0 else f"blue hat {r}" for r in range(60)])
    )
    diverse = RankingConfig(diversity=0.5, diversity_method="dpp", freshness_weight=0.3)
    requests = [
        request(query=rng.standard_normal(8), k=5),  # search
        request(history=[("i3", 900.0), ("i7", 990.0), ("nope", 950.0)], k=4),  # feed
        request(k=3),  # fallback
        request(
            query=rng.standard_normal(8),
            history=[("i1", 500.0)],
            k=6,
            config=diverse,
            exclude_ids=["i2"],
            deny_categories=["c1"],
        ),
        replace(request(query=rng.standard_normal(8), k=5), query_text="red shoe"),  # hybrid
        replace(
            request(query=rng.standard_normal(8), k=5, config=RankingConfig(search_mode="lexical")),
            query_text="blue hat",
        ),
        request(history=[("i9", 999.0)], k=7, config=RankingConfig(popularity_weight=0.2)),
    ]
    batched = rank_many(index, requests)
    assert len(batched) == len(requests)
    monkeypatch.setattr(ranking, "SCAN_BLOCK_SCORES", 2 * len(index))  # scans in blocks of 2 rows
    blocked = rank_many(index, requests)
    assert [r.item_ids for r in blocked] == [r.item_ids for r in batched]
    for got, one in zip(batched, requests):
        want = rank(index, one)
        assert got.item_ids == want.item_ids and got.unknown_history == want.unknown_history
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
    assert batched[1].unknown_history == 1 and "i3" not in batched[1].item_ids
    assert rank_many(index, []) == []


# --------------------------------------------------------------------------- multi-source feeds


def learned_index():
    """Items 0–1 near the history's direction, 2 far but popular, 3 far but bought with the history."""
    from aisle_server.cooccurrence import Cooccurrence

    index = make_index([[1, 0.1, 0], [1, 0.2, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]], popularity=[1, 1, 50, 1, 1])
    neighbors = np.full((5, 2), -1, dtype=np.int32)
    weights = np.zeros((5, 2), dtype=np.float32)
    neighbors[4, 0], weights[4, 0] = 3, 1.0  # whoever had i4 also had i3
    return replace(index, cooccurrence=Cooccurrence(neighbors, weights))


def test_feed_candidates_come_from_popularity_and_cooccurrence_too():
    index = learned_index()
    history = [("i4", 999.0)]
    narrow = {"candidates": 1, "exclude_history": True}
    content = RankingConfig(**narrow, feed_popularity_weight=0.0, popular_candidates=0, cooccurrence_candidates=0)
    assert rank(index, request(history=history, k=2, config=content)).item_ids == ["i0", "i1"]  # embeddings only
    multi = RankingConfig(
        **narrow, feed_popularity_weight=1.0, popular_candidates=1, cooccurrence_candidates=1, cooccurrence_weight=2.0
    )
    result = rank(index, request(history=history, k=4, config=multi))
    assert set(result.item_ids) == {"i0", "i1", "i2", "i3"}  # embedding, popular and co-occurrence neighbours
    assert rank(index, request(history=history, k=2, config=multi)).item_ids == [
        "i3",
        "i0",
    ]  # 0 cosine + 2 × co-occurrence
    popular = rank(
        index, request(history=history, k=2, config=replace(multi, cooccurrence_weight=0.0, feed_popularity_weight=5.0))
    )
    assert popular.item_ids == ["i2", "i0"]  # 0 cosine + 5 × the top popularity prior


def test_feed_popularity_weight_is_for_feeds_and_popularity_weight_for_search():
    index = learned_index()
    feed_only = RankingConfig(feed_popularity_weight=10.0, popularity_weight=0.0)
    assert rank(index, request(query=[1, 0.1, 0], k=1, config=feed_only)).item_ids == ["i0"]
    assert rank(index, request(history=[("i4", 999.0)], k=1, config=feed_only)).item_ids == ["i2"]
    search_only = RankingConfig(feed_popularity_weight=0.0, popularity_weight=10.0)
    assert rank(index, request(query=[1, 0.1, 0], k=1, config=search_only)).item_ids == ["i2"]


class FixedEncoder:
    """Stands in for the ONNX user encoder: answers one fixed vector and records what it was given."""

    max_len, dim = 2, 3

    def __init__(self, vector):
        self.vector = unit(vector)
        self.calls = []

    def event_ids(self, events):
        return np.array([{"view": 1, "purchase": 2}.get(e, 0) for e in events], dtype=np.int64)

    def encode(self, histories, timestamps, events, now):
        self.calls.append((histories, timestamps, events, now))
        return np.stack([self.vector] * len(histories))


def test_user_encoder_replaces_the_recency_mean_when_attached():
    encoder = FixedEncoder([0, 1, 0])
    index = replace(learned_index(), user_encoder=encoder)
    history = [("i0", 10.0), ("nope", 20.0), ("i1", 30.0), ("i2", 40.0)]
    events = ["view", "view", "purchase", "click"]
    config = RankingConfig(feed_popularity_weight=0.0)
    encoded = rank(index, replace(request(history=history, k=1, config=config), history_events=events))
    assert encoded.item_ids == ["i3"] and encoded.interest.tolist() == pytest.approx(encoder.vector.tolist())
    ((histories, timestamps, event_ids, now),) = encoder.calls
    np.testing.assert_allclose(histories[0], index.embeddings[[1, 2]])  # the newest max_len known items
    assert timestamps[0].tolist() == [30.0, 40.0] and event_ids[0].tolist() == [2, 0] and now == [1000.0]
    plain = rank(index, request(history=history, k=1, config=replace(config, user_encoder=False)))
    assert plain.item_ids != ["i3"] and len(encoder.calls) == 1  # switched off per request: the mean, no call
    searched = rank(index, request(query=[1, 0, 0], k=1, config=replace(config, query_weight=1.0)))
    assert searched.item_ids == ["i4"] and len(encoder.calls) == 1  # no history: the encoder is not asked


def test_rank_many_batches_the_user_encoder_and_matches_rank():
    encoder = FixedEncoder([0, 1, 0])
    index = replace(learned_index(), user_encoder=encoder)
    requests = [
        request(history=[("i0", 1.0)], k=2),
        request(k=2),
        request(history=[("i4", 5.0)], k=3),
        request(query=[1, 0, 0], history=[("i1", 9.0)], k=2),
    ]
    batched = rank_many(index, requests)
    assert len(encoder.calls) == 1 and len(encoder.calls[0][0]) == 3  # one call for the three histories
    for got, one in zip(batched, requests):
        want = rank(index, one)
        assert got.item_ids == want.item_ids
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    assert batched[1].interest is None  # the cold fallback has no interest vector
