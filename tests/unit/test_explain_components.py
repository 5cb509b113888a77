"""Explanations: each result's score components add up to its score, and cost nothing when off."""

import numpy as np
import pytest
from tiny_catalog import tiny_index, unit

from aisle_contract import SCORE_COMPONENT_NAMES
from aisle_server import explain as explain_module
from aisle_server.ranking import RankingConfig, RankRequest, rank, rank_many

COLUMN = {name: i for i, name in enumerate(SCORE_COMPONENT_NAMES)}
N = 40


def make_index():
    created_at = np.where(np.arange(N) % 5 == 0, np.nan, 1000.0 - 10.0 * np.arange(N))
    return tiny_index(N, 8, 7, created_at, 100, 4, {1: ([5, 9, 13], [1.0, 0.5, 0.25])})


INDEX = make_index()
KNOBS = {"freshness_weight": 0.3, "freshness_half_life_s": 500.0, "popularity_weight": 0.2, "cooccurrence_weight": 0.7}


def request(query=None, text="", history=(), config=None, explain=True, k=8):
    ids = list(history)
    ts = np.full(len(ids), 990.0)
    query_embedding = None if query is None else unit(query)
    return RankRequest(query_embedding, ids, ts, k, 1000.0, config or RankingConfig(**KNOBS), text, explain=explain)


CASES = {
    "search hybrid": {"query": np.arange(8.0), "text": "red shoe"},
    "search dense": {
        "query": np.arange(8.0),
        "text": "red shoe",
        "config": RankingConfig(**KNOBS, search_mode="dense"),
    },
    "search lexical": {
        "query": np.arange(8.0),
        "text": "red shoe",
        "config": RankingConfig(**KNOBS, search_mode="lexical"),
    },
    "search + history": {"query": np.arange(8.0), "text": "blue hat", "history": ["i1", "i2"]},
    "feed": {"history": ["i1", "i2", "i3"]},
    "cold fallback": {},
    "feed mmr": {"history": ["i1", "i2"], "config": RankingConfig(**KNOBS, diversity=0.7, diversity_method="mmr")},
    "search dpp + cap": {
        "query": np.arange(8.0),
        "text": "red shoe",
        "config": RankingConfig(**KNOBS, diversity=0.6, category_cap=3),
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_components_add_up_to_the_returned_scores(case):
    result = rank(INDEX, request(**CASES[case]))
    assert result.components is not None and result.components.shape == (8, len(SCORE_COMPONENT_NAMES))
    np.testing.assert_allclose(result.components.sum(axis=1), result.scores, rtol=0, atol=1e-5)
    assert (result.components[:, COLUMN["diversity"]] == 0).all()
    plain = rank(INDEX, request(**CASES[case], explain=False))
    assert plain.item_ids == result.item_ids and plain.components is None and plain.pre_diversity_rank is None


def test_each_signal_lands_in_its_own_component():
    search = rank(INDEX, request(**CASES["search hybrid"])).components
    assert (search[:, COLUMN["shopper_interest"]] == 0).all() and (search[:, COLUMN["cooccurrence"]] == 0).all()
    assert search[:, COLUMN["lexical"]].max() > 0 and search[:, COLUMN["popularity"]].max() > 0
    assert search[:, COLUMN["freshness"]].max() > 0
    feed = rank(INDEX, request(**CASES["feed"])).components
    assert (feed[:, COLUMN["dense"]] == 0).all() and (feed[:, COLUMN["lexical"]] == 0).all()
    assert feed[:, COLUMN["cooccurrence"]].max() > 0 and np.abs(feed[:, COLUMN["shopper_interest"]]).max() > 0
    both = rank(INDEX, request(**CASES["search + history"])).components
    assert np.abs(both[:, COLUMN["dense"]]).max() > 0 and np.abs(both[:, COLUMN["shopper_interest"]]).max() > 0
    lexical_only = rank(INDEX, request(**CASES["search lexical"])).components
    assert (lexical_only[:, COLUMN["dense"]] == 0).all() and lexical_only[:, COLUMN["lexical"]].max() > 0
    cold = rank(INDEX, request(**CASES["cold fallback"])).components
    assert set(np.flatnonzero(np.abs(cold).sum(axis=0))) <= {COLUMN["popularity"], COLUMN["freshness"]}


def test_pre_diversity_rank_shows_where_diversity_moved_an_item():
    plain = rank(INDEX, request(history=["i1", "i2"]))
    assert plain.pre_diversity_rank.tolist() == list(range(8))  # by score: the page's own order
    diverse = rank(INDEX, request(**CASES["feed mmr"]))
    ranks = diverse.pre_diversity_rank.tolist()
    assert ranks[0] == 0 and ranks != list(range(8)) and len(set(ranks)) == 8
    by_score = {item: i for i, item in enumerate(rank(INDEX, request(history=["i1", "i2"], k=40)).item_ids)}
    assert ranks == [by_score[item] for item in diverse.item_ids]


def test_explanations_are_not_computed_when_off(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("explained a request that did not ask")

    monkeypatch.setattr(explain_module, "score_components", boom)
    requests = [request(**CASES[case], explain=False) for case in sorted(CASES)]
    assert all(r.components is None for r in rank_many(INDEX, requests))
    with pytest.raises(AssertionError, match="did not ask"):
        rank(INDEX, request(**CASES["feed"]))


def test_rank_many_explains_only_the_rows_that_ask():
    rows = rank_many(INDEX, [request(**CASES["feed"]), request(**CASES["feed"], explain=False)])
    assert rows[0].components is not None and rows[1].components is None
    np.testing.assert_allclose(rows[0].components.sum(axis=1), rows[1].scores, atol=1e-5)


def test_the_sdk_reads_explanations_of_the_rows_that_asked():
    from aisle.responses import split_recommendations

    ids = np.array([[b"a", b"b"], [b"c", b""]], dtype=object)
    scores = np.array([[1.5, 0.5], [0.7, np.nan]], dtype=np.float32)
    components = np.full((2, 2, len(SCORE_COMPONENT_NAMES)), np.nan, dtype=np.float32)
    components[0] = [[1.0, 0.25, 0, 0, 0.125, 0.125, 0, 0], [0.5, 0, 0, 0, 0, 0, 0, 0]]
    ranks = np.array([[0, 3], [-1, -1]], dtype=np.int32)
    first, second = split_recommendations(ids, scores, None, components, ranks)
    assert [r.explanation.pre_diversity_rank for r in first] == [0, 3]
    assert first[0].explanation.as_dict() == dict(zip(SCORE_COMPONENT_NAMES, [1.0, 0.25, 0, 0, 0.125, 0.125, 0, 0]))
    assert first[0].explanation.total == pytest.approx(first[0].score)
    assert [r.explanation for r in second] == [None]
    empty = np.zeros((2, 0, len(SCORE_COMPONENT_NAMES)), dtype=np.float32)
    assert all(
        r.explanation is None for row in split_recommendations(ids, scores, None, empty, ranks[:, :0]) for r in row
    )
