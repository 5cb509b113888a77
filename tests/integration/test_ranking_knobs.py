"""Per-request ranking knobs and filters through the real server (raw tensors, as any client may send)."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration


def _tensor(name, values, datatype):
    array = np.array([values], dtype=object if datatype == "BYTES" else None)
    if datatype == "FP32":
        array = array.astype(np.float32)
    elif datatype == "INT32":
        array = array.astype(np.int32)
    elif datatype == "BOOL":
        array = array.astype(bool)
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def recommend(raw, query=b"", k=10, **knobs):
    inputs = [_tensor("QUERY", [query], "BYTES"), _tensor("K", [k], "INT32")]
    for name, (values, datatype) in knobs.items():
        inputs.append(_tensor(name, values, datatype))
    result = raw.infer("recommend", inputs, client_timeout=30)
    return [i.decode() for i in result.as_numpy("ITEM_IDS")[0] if i], result.as_numpy("SCORES")[0]


def test_diversity_changes_the_list_and_keeps_the_best_item(raw):
    plain, _ = recommend(raw, b"star wars", 10)
    for method in (b"mmr", b"dpp"):
        diverse, _ = recommend(raw, b"star wars", 10, DIVERSITY=([0.8], "FP32"), DIVERSITY_METHOD=([method], "BYTES"))
        assert diverse[0] == plain[0]
        assert diverse != plain and len(diverse) == 10


def test_category_cap_and_filters(raw, catalog):
    category = dict(zip(catalog.item_ids.tolist(), catalog.categories.tolist()))
    capped, _ = recommend(raw, b"funny animated movie for kids", 10, CATEGORY_CAP=([2], "INT32"))
    counts = {}
    for item in capped:
        counts[category[item]] = counts.get(category[item], 0) + 1
    assert max(counts.values()) <= 2 and len(capped) == 10

    only_horror, _ = recommend(raw, b"funny animated movie for kids", 5, ALLOW_CATEGORIES=([b"Horror"], "BYTES"))
    assert {category[i] for i in only_horror} == {"Horror"}
    no_animation, _ = recommend(raw, b"funny animated movie for kids", 10, DENY_CATEGORIES=([b"Animation"], "BYTES"))
    assert "Animation" not in {category[i] for i in no_animation}

    plain, _ = recommend(raw, b"toy story", 3)
    excluded, _ = recommend(raw, b"toy story", 3, EXCLUDE_IDS=([plain[0].encode(), b"not-an-id"], "BYTES"))
    assert plain[0] not in excluded and excluded[0] == plain[1]


def test_search_modes_differ_and_hybrid_is_default(raw):
    query = b"godfather"
    dense, _ = recommend(raw, query, 10, SEARCH_MODE=([b"dense"], "BYTES"))
    lexical, _ = recommend(raw, query, 10, SEARCH_MODE=([b"lexical"], "BYTES"))
    hybrid, _ = recommend(raw, query, 10)
    explicit, _ = recommend(raw, query, 10, SEARCH_MODE=([b"hybrid"], "BYTES"))
    assert hybrid == explicit
    assert lexical != dense


def test_a_misspelled_title_finds_the_movie_with_typo_tolerance_and_not_without(client):
    spelled = [r.item_id for r in client.recommend(query="godfather", k=5, search_mode="lexical")]
    typo = [r.item_id for r in client.recommend(query="godfahter", k=5, search_mode="lexical")]
    strict = [r.item_id for r in client.recommend(query="godfahter", k=5, search_mode="lexical", typo_tolerance=False)]
    assert typo == spelled  # "godfahter" → "godfather": the same BM25 list
    assert strict != spelled  # without it BM25 knows no query term and the dense side answers alone


@pytest.mark.parametrize(
    "knob, values, datatype",
    [
        ("DIVERSITY", [1.5], "FP32"),
        ("DIVERSITY_METHOD", [b"random"], "BYTES"),
        ("RECENCY_HALF_LIFE_S", [0.0], "FP64"),
        ("QUERY_WEIGHT", [float("nan")], "FP32"),
        ("SEARCH_MODE", [b"magic"], "BYTES"),
        ("CATEGORY_CAP", [-1], "INT32"),
    ],
)
def test_bad_knob_values_name_the_knob(raw, client, knob, values, datatype):
    with pytest.raises(InferenceServerException) as caught:
        recommend(raw, b"toy story", 5, **{knob: (values, datatype)})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert knob in caught.value.message()
    assert len(client.recommend(query="toy story", k=2)) == 2


def test_sdk_passes_ranking_options_and_filters(client, catalog, raw):
    category = dict(zip(catalog.item_ids.tolist(), catalog.categories.tolist()))
    plain = [r.item_id for r in client.recommend(query="star wars", k=10)]
    diverse = [r.item_id for r in client.recommend(query="star wars", k=10, diversity=0.8, diversity_method="mmr")]
    raw_diverse, _ = recommend(raw, b"star wars", 10, DIVERSITY=([0.8], "FP32"), DIVERSITY_METHOD=([b"mmr"], "BYTES"))
    assert diverse == raw_diverse != plain
    comedies = client.recommend(query="star wars", k=5, allow_categories=["Comedy"], exclude_ids=[plain[0]])
    assert {category[r.item_id] for r in comedies} == {"Comedy"}
    recent = client.recommend(history=[("50", 1.0)], k=3, exclude_history=False, recency_half_life_s=3600.0)
    assert recent[0].item_id == "50"
    with pytest.raises(Exception) as caught:
        client.recommend(query="x", diversity=2.0)
    assert type(caught.value).__name__ == "InvalidRequest" and "diversity" in str(caught.value)


def test_recommend_many_with_different_ranking_options_per_row(client):
    rows = [
        {"query": "star wars", "k": 5, "diversity": 0.8, "diversity_method": "mmr"},
        {"query": "star wars", "k": 5},
        {"query": "star wars", "k": 5, "allow_categories": ["Comedy"]},
    ]
    diverse, plain, comedies = client.recommend_many(rows)
    assert [r.item_id for r in diverse] == [r.item_id for r in client.recommend(**rows[0])]
    assert [r.item_id for r in plain] == [r.item_id for r in client.recommend(**rows[1])]
    assert [r.item_id for r in comedies] == [r.item_id for r in client.recommend(**rows[2])]
    assert [r.item_id for r in diverse] != [r.item_id for r in plain]
