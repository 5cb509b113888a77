"""recommend(..., explain=True) through the real server: score components add up to the scores."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

pytestmark = pytest.mark.integration

HISTORY = [("50", 1_700_000_000.0), ("172", 1_700_003_600.0), ("181", 1_700_007_200.0)]
NOW = 1_700_010_000.0
PRIORS = {"freshness_weight": 0.2, "popularity_weight": 0.3, "feed_popularity_weight": 0.5}
CASES = {
    "search": {"query": "star wars"},
    "search mmr": {"query": "star wars", "diversity": 0.6, "diversity_method": "mmr"},
    "search dpp + cap": {"query": "funny animated movie", "diversity": 0.5, "category_cap": 2},
    "search lexical": {"query": "godfather", "search_mode": "lexical"},
    "search + history": {"query": "space adventure", "history": HISTORY},
    "feed": {"history": HISTORY},
    "feed dpp": {"history": HISTORY, "diversity": 0.7, "diversity_method": "dpp"},
    "cold": {},
}
WORST = {}


@pytest.mark.parametrize("case", list(CASES))
def test_components_add_up_to_the_served_scores(client, case):
    kwargs = {**PRIORS, **CASES[case], "k": 10, "now": NOW}
    explained = client.recommend(explain=True, **kwargs)
    plain = client.recommend(**kwargs)
    assert [r.item_id for r in explained] == [r.item_id for r in plain] and len(plain) == 10
    assert [r.score for r in explained] == [r.score for r in plain]  # explaining changes nothing
    assert all(r.explanation is None for r in plain)
    errors = [abs(r.explanation.total - r.score) for r in explained]
    WORST[case] = max(errors)
    assert max(errors) <= 1e-5, case
    assert all(r.explanation.diversity == 0.0 for r in explained)
    ranks = [r.explanation.pre_diversity_rank for r in explained]
    if "diversity" in kwargs or "category_cap" in kwargs:
        assert ranks != list(range(10))  # the diversity step moved items up from further down
    else:
        assert ranks == list(range(10))


def test_search_and_feed_put_relevance_in_their_own_component(client):
    search = client.recommend(query="star wars", k=5, explain=True)
    assert all(r.explanation.shopper_interest == 0 and r.explanation.dense > 0 for r in search)
    feed = client.recommend(history=HISTORY, k=5, explain=True, now=NOW)
    assert all(r.explanation.dense == 0 and r.explanation.shopper_interest != 0 for r in feed)


def test_micro_batched_rows_explain_only_when_asked(client):
    rows = client.recommend_many(
        [{"query": "alien", "k": 4, "explain": True}, {"query": "toy story", "k": 4}, {"history": HISTORY, "k": 3}]
    )
    assert all(r.explanation is not None for r in rows[0])
    assert all(r.explanation is None for r in rows[1]) and all(r.explanation is None for r in rows[2])
    assert len({rows[0].request_id, rows[1].request_id, rows[2].request_id}) == 3


def test_raw_answer_without_explain_leaves_the_explanation_outputs_out(raw):
    query = grpcclient.InferInput("QUERY", [2, 1], "BYTES")
    query.set_data_from_numpy(np.array([[b"star wars"], [b"alien"]], dtype=object))
    result = raw.infer("recommend", [query], client_timeout=30)
    names = {output.name for output in result.get_response().outputs}
    assert names == {"ITEM_IDS", "SCORES", "UNKNOWN_HISTORY", "EXPLORED"}, names
    assert result.as_numpy("SCORE_COMPONENTS") is None and result.as_numpy("PRE_DIVERSITY_RANK") is None
    explain = grpcclient.InferInput("EXPLAIN", [2, 1], "BOOL")
    explain.set_data_from_numpy(np.array([[False], [True]]))
    result = raw.infer("recommend", [query, explain], client_timeout=30)
    components, scores = result.as_numpy("SCORE_COMPONENTS"), result.as_numpy("SCORES")
    assert np.isnan(components[0]).all() and (result.as_numpy("PRE_DIVERSITY_RANK")[0] == -1).all()
    np.testing.assert_allclose(components[1].sum(axis=1), scores[1], atol=1e-5)


def test_report_the_worst_sum_error():
    """Prints the figure the docs quote (run with -s); fails if no case ran."""
    assert WORST, "run the whole module"
    print(f"\nexplain: largest |sum(components) - score| over {len(WORST)} cases: {max(WORST.values()):.2e}")
