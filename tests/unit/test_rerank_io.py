"""``rerank`` tensors → ``RankRequest`` rows and ``RankResult`` rows → tensors (no Triton)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aisle_contract import EXPLAIN_OUTPUTS, SCORE_COMPONENT_NAMES
from aisle_server.errors import InvalidInput
from aisle_server.ranking import RankingConfig, RankResult
from aisle_server.rerank_io import OUTPUT_NAMES, pack_results, parse_requests
from aisle_server.tokenization import MAX_QUERY_CHARS

DIM = 4
CATALOG = 50
CLOCK_NOW = 1_700_000_000.0
CONFIG = RankingConfig(default_k=7, max_k=20, max_history=3)


def clock():
    return CLOCK_NOW


def strings(rows):
    return np.array(rows, dtype=object)


def embeddings(batch, dim=DIM, value=0.5):
    return np.full((batch, dim), value, dtype=np.float32)


def base_inputs(queries=(b"red shoes", b"blue hat"), **extra):
    inputs = {
        "QUERY": strings([[q] for q in queries]),
        "QUERY_EMBEDDING": embeddings(len(queries)),
    }
    inputs.update(extra)
    return inputs


def parse(inputs, config=CONFIG, catalog_size=CATALOG, dim=DIM, clock=clock):
    return parse_requests(inputs, config, catalog_size, dim, clock=clock)


def invalid_field(inputs, **kwargs) -> str:
    with pytest.raises(InvalidInput) as info:
        parse(inputs, **kwargs)
    assert str(info.value).startswith(info.value.field + ":")
    return info.value.field


# -- valid requests --------------------------------------------------------------------------------


def test_valid_batch_of_two_rows_with_their_own_k_and_now():
    emb = np.array([[1, 0, 0, 0], [0, 2, 0, 0]], dtype=np.float32)
    inputs = {
        "QUERY": strings([[b"red shoes"], ["caf\u00e9".encode()]]),
        "QUERY_EMBEDDING": emb,
        "HISTORY_IDS": strings([[b"a", b"b"], [b"c", b""]]),
        "HISTORY_TS": np.array([[10.0, 20.0], [30.0, 0.0]]),
        "K": np.array([[3], [12]], dtype=np.int32),
        "NOW": np.array([[100.0], [200.0]]),
    }
    first, second = parse(inputs)

    assert first.k == 3 and second.k == 12
    assert first.now == 100.0 and second.now == 200.0
    assert list(first.history_ids) == ["a", "b"]
    np.testing.assert_array_equal(first.history_ts, [10.0, 20.0])
    assert list(second.history_ids) == ["c"]
    np.testing.assert_array_equal(second.history_ts, [30.0])
    assert first.query_embedding.dtype == np.float32
    np.testing.assert_array_equal(first.query_embedding, emb[0])
    np.testing.assert_array_equal(second.query_embedding, emb[1])


def test_k_defaults_to_config_default_k():
    requests = parse(base_inputs())
    assert [r.k for r in requests] == [CONFIG.default_k, CONFIG.default_k]


def test_now_defaults_to_the_injected_clock():
    calls = []

    def fake_clock():
        calls.append(1)
        return 123.5

    requests = parse(base_inputs(), clock=fake_clock)
    assert [r.now for r in requests] == [123.5, 123.5]
    assert calls, "the injected clock was never consulted"


def test_now_tensor_overrides_the_clock():
    requests = parse(base_inputs(NOW=np.array([[5.0], [6.0]])), clock=lambda: 999.0)
    assert [r.now for r in requests] == [5.0, 6.0]


def test_without_history_rows_have_no_history():
    for request in parse(base_inputs()):
        assert list(request.history_ids) == []
        assert len(request.history_ts) == 0


@pytest.mark.parametrize("text", [b"", b"   ", b"\t\n ", "\u3000".encode()])
def test_empty_or_whitespace_query_means_no_query_embedding(text):
    inputs = base_inputs(queries=(text, b"shoes"))
    inputs["QUERY_EMBEDDING"][0] = np.nan  # not used, so not validated
    blank, real = parse(inputs)
    assert blank.query_embedding is None
    assert real.query_embedding is not None


def test_a_multi_megabyte_query_is_cut_before_lexical_search():
    huge = ("fresh basil " * 500_000).encode()
    cut, short = parse(base_inputs(queries=(huge, b"shoes")))
    assert cut.query_text == huge.decode()[:MAX_QUERY_CHARS] and short.query_text == "shoes"


def test_history_ids_without_ts_count_as_now():
    inputs = base_inputs(
        HISTORY_IDS=strings([[b"a", b"b"], [b"c", b""]]),
        NOW=np.array([[111.0], [222.0]]),
    )
    first, second = parse(inputs)
    np.testing.assert_array_equal(first.history_ts, [111.0, 111.0])
    np.testing.assert_array_equal(second.history_ts, [222.0])
    assert list(second.history_ids) == ["c"]


def test_history_ids_without_ts_use_clock_when_no_now():
    (request,) = parse(base_inputs(queries=(b"q",), HISTORY_IDS=strings([[b"a", b"b"]])))
    np.testing.assert_array_equal(request.history_ts, [CLOCK_NOW, CLOCK_NOW])


def test_empty_history_entries_are_padding_and_dropped():
    inputs = base_inputs(
        queries=(b"q",),
        HISTORY_IDS=strings([[b"", b"a", b"", b"b"]]),
        HISTORY_TS=np.array([[1.0, 2.0, 3.0, 4.0]]),
    )
    (request,) = parse(inputs, config=RankingConfig(max_history=10))
    assert list(request.history_ids) == ["a", "b"]
    np.testing.assert_array_equal(request.history_ts, [2.0, 4.0])


def test_all_padding_history_is_empty():
    inputs = base_inputs(queries=(b"q",), HISTORY_IDS=strings([[b"", b""]]), HISTORY_TS=np.array([[1.0, 2.0]]))
    (request,) = parse(inputs)
    assert list(request.history_ids) == []
    assert len(request.history_ts) == 0


def test_long_history_keeps_the_most_recent_items():
    ids = [f"i{n}".encode() for n in range(6)]
    inputs = base_inputs(
        queries=(b"q",),
        HISTORY_IDS=strings([ids]),
        HISTORY_TS=np.array([[float(n) for n in range(6)]]),
    )
    (request,) = parse(inputs)  # CONFIG.max_history == 3
    assert list(request.history_ids) == ["i3", "i4", "i5"]
    np.testing.assert_array_equal(request.history_ts, [3.0, 4.0, 5.0])


def test_padding_does_not_count_towards_max_history():
    # 3 real items and 3 padding slots: all 3 real items fit in max_history=3
    inputs = base_inputs(
        queries=(b"q",),
        HISTORY_IDS=strings([[b"a", b"", b"b", b"", b"c", b""]]),
        HISTORY_TS=np.array([[1.0, 9.0, 2.0, 9.0, 3.0, 9.0]]),
    )
    (request,) = parse(inputs)
    assert list(request.history_ids) == ["a", "b", "c"]
    np.testing.assert_array_equal(request.history_ts, [1.0, 2.0, 3.0])


# -- invalid requests ------------------------------------------------------------------------------


def test_missing_query_is_invalid():
    inputs = base_inputs()
    del inputs["QUERY"]
    assert invalid_field(inputs) == "QUERY"


def test_query_wrong_shape_is_invalid():
    assert invalid_field(base_inputs() | {"QUERY": strings([b"a", b"b"])}) == "QUERY"
    assert invalid_field(base_inputs() | {"QUERY": strings([[b"a", b"b"], [b"c", b"d"]])}) == "QUERY"


def test_missing_query_embedding_is_invalid():
    inputs = base_inputs()
    del inputs["QUERY_EMBEDDING"]
    assert invalid_field(inputs) == "QUERY_EMBEDDING"


def test_query_embedding_wrong_dim_is_invalid():
    assert invalid_field(base_inputs(), dim=DIM + 1) == "QUERY_EMBEDDING"
    assert invalid_field(base_inputs() | {"QUERY_EMBEDDING": embeddings(2, dim=3)}) == "QUERY_EMBEDDING"


def test_query_embedding_batch_mismatch_is_invalid():
    assert invalid_field(base_inputs() | {"QUERY_EMBEDDING": embeddings(3)}) == "QUERY_EMBEDDING"
    assert invalid_field(base_inputs() | {"QUERY_EMBEDDING": np.zeros(2 * DIM, dtype=np.float32)}) == "QUERY_EMBEDDING"


def test_non_finite_query_embedding_for_a_real_query_is_invalid():
    inputs = base_inputs()
    inputs["QUERY_EMBEDDING"][1, 2] = np.inf
    assert invalid_field(inputs) == "QUERY_EMBEDDING"


def test_non_utf8_query_is_invalid():
    assert invalid_field(base_inputs(queries=(b"ok", b"\xff\xfe bad"))) == "QUERY"


def test_non_utf8_history_id_is_invalid():
    inputs = base_inputs(queries=(b"q",), HISTORY_IDS=strings([[b"a", b"\xc3"]]))
    assert invalid_field(inputs) == "HISTORY_IDS"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_history_ts_is_invalid(bad):
    inputs = base_inputs(
        HISTORY_IDS=strings([[b"a", b"b"], [b"c", b"d"]]),
        HISTORY_TS=np.array([[1.0, 2.0], [3.0, bad]]),
    )
    assert invalid_field(inputs) == "HISTORY_TS"


def test_history_ts_without_history_ids_is_invalid():
    inputs = base_inputs(HISTORY_TS=np.array([[1.0], [2.0]]))
    assert invalid_field(inputs) == "HISTORY_TS"


def test_history_ts_of_another_shape_is_invalid():
    inputs = base_inputs(
        HISTORY_IDS=strings([[b"a", b"b"], [b"c", b"d"]]),
        HISTORY_TS=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
    )
    assert invalid_field(inputs) == "HISTORY_TS"


def test_history_ts_batch_mismatch_is_invalid():
    inputs = base_inputs(HISTORY_IDS=strings([[b"a"], [b"b"]]), HISTORY_TS=np.array([[1.0], [2.0], [3.0]]))
    assert invalid_field(inputs) == "HISTORY_TS"


def test_history_ids_wrong_ndim_or_batch_is_invalid():
    assert invalid_field(base_inputs(HISTORY_IDS=strings([b"a", b"b"]))) == "HISTORY_IDS"
    assert invalid_field(base_inputs(HISTORY_IDS=strings([[b"a"], [b"b"], [b"c"]]))) == "HISTORY_IDS"


@pytest.mark.parametrize("k", [0, -1, CONFIG.max_k + 1])
def test_k_out_of_range_is_invalid(k):
    inputs = base_inputs(K=np.array([[5], [k]], dtype=np.int32))
    assert invalid_field(inputs) == "K"


def test_k_above_catalog_size_is_invalid():
    inputs = base_inputs(K=np.array([[5], [6]], dtype=np.int32))
    assert invalid_field(inputs, catalog_size=5) == "K"
    assert [r.k for r in parse(inputs, catalog_size=6)] == [5, 6]


def test_k_wrong_ndim_or_batch_is_invalid():
    assert invalid_field(base_inputs(K=np.array([5, 5], dtype=np.int32))) == "K"
    assert invalid_field(base_inputs(K=np.array([[5]], dtype=np.int32))) == "K"


def test_now_wrong_ndim_or_batch_or_non_finite_is_invalid():
    assert invalid_field(base_inputs(NOW=np.array([1.0, 2.0]))) == "NOW"
    assert invalid_field(base_inputs(NOW=np.array([[1.0], [2.0], [3.0]]))) == "NOW"
    assert invalid_field(base_inputs(NOW=np.array([[1.0], [np.nan]]))) == "NOW"


# -- packing results -------------------------------------------------------------------------------


def test_pack_results_pads_short_rows_with_empty_ids_and_nan():
    results = [
        RankResult(["a", "b", "c"], np.array([0.9, 0.8, 0.7], dtype=np.float32), 2),
        RankResult(["\u00e9t\u00e9"], np.array([0.5], dtype=np.float32), 0),
        RankResult([], np.zeros(0, dtype=np.float32), 1),
    ]
    packed = pack_results(results)
    assert tuple(packed) == OUTPUT_NAMES == ("ITEM_IDS", "SCORES", "UNKNOWN_HISTORY", "EXPLORED")
    assert packed["EXPLORED"].shape == (3, 3) and not packed["EXPLORED"].any()  # no explore rule placed any

    ids, scores, unknown = packed["ITEM_IDS"], packed["SCORES"], packed["UNKNOWN_HISTORY"]
    assert ids.shape == (3, 3) and ids.dtype == object
    assert ids.tolist() == [[b"a", b"b", b"c"], ["\u00e9t\u00e9".encode(), b"", b""], [b"", b"", b""]]

    assert scores.shape == (3, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[0], [0.9, 0.8, 0.7], rtol=1e-6)
    assert math.isclose(float(scores[1, 0]), 0.5)
    assert np.isnan(scores[1, 1:]).all() and np.isnan(scores[2]).all()

    assert unknown.shape == (3, 1) and unknown.dtype == np.int32
    assert unknown.ravel().tolist() == [2, 0, 1]


def test_pack_results_full_rows_have_no_padding():
    packed = pack_results([RankResult(["x", "y"], np.array([2.0, 1.0], dtype=np.float32), 0)])
    assert packed["ITEM_IDS"].tolist() == [[b"x", b"y"]]
    assert not np.isnan(packed["SCORES"]).any()
    assert packed["UNKNOWN_HISTORY"].tolist() == [[0]]


def test_explanation_outputs_only_when_a_row_asked():
    plain = RankResult(["a", "b"], np.array([0.9, 0.8], dtype=np.float32), 0)
    assert set(pack_results([plain, plain], explanations=True)) == set(OUTPUT_NAMES)  # none asked: left out
    parts = np.linspace(0, 1, 2 * len(SCORE_COMPONENT_NAMES), dtype=np.float32).reshape(2, -1)
    asked = RankResult(
        ["c"], np.array([0.9], dtype=np.float32), 0, components=parts[:1], pre_diversity_rank=np.array([0])
    )
    packed = pack_results([plain, asked], explanations=True)
    assert set(packed) == {*OUTPUT_NAMES, *EXPLAIN_OUTPUTS}
    assert packed["SCORE_COMPONENTS"].shape == (2, 2, len(SCORE_COMPONENT_NAMES))
    assert np.isnan(packed["SCORE_COMPONENTS"][0]).all() and packed["PRE_DIVERSITY_RANK"].tolist() == [
        [-1, -1],
        [0, -1],
    ]
    np.testing.assert_array_equal(packed["SCORE_COMPONENTS"][1, 0], parts[0])


# -- event types and the interest output -----------------------------------------------------------


def test_history_events_follow_their_ids_through_padding_and_truncation():
    inputs = base_inputs(
        queries=(b"",),
        HISTORY_IDS=strings([[b"a", b"", b"b", b"c", b"d"]]),
        HISTORY_TS=np.array([[1.0, 0.0, 2.0, 3.0, 4.0]]),
        HISTORY_EVENTS=strings([[b"view", b"", b"purchase", b"", b"click"]]),
    )
    (row,) = parse(inputs)
    assert list(row.history_ids) == ["b", "c", "d"]  # max_history=3 keeps the newest
    assert list(row.history_events) == ["purchase", "", "click"]
    (plain,) = parse(base_inputs(queries=(b"",), HISTORY_IDS=strings([[b"a"]])))
    assert list(plain.history_events) == []


@pytest.mark.parametrize("events", [strings([[b"view"]]), strings([[b"view", b"view", b"view"]])])
def test_history_events_need_ids_of_the_same_shape(events):
    inputs = base_inputs(queries=(b"",), HISTORY_EVENTS=events)
    assert invalid_field(inputs) == "HISTORY_EVENTS"
    inputs["HISTORY_IDS"] = strings([[b"a", b"b"]])
    assert invalid_field(inputs) == "HISTORY_EVENTS"


def test_history_events_must_be_utf8():
    inputs = base_inputs(queries=(b"",), HISTORY_IDS=strings([[b"a"]]), HISTORY_EVENTS=strings([[b"\xff"]]))
    assert invalid_field(inputs) == "HISTORY_EVENTS"


def test_interest_output_only_with_dim_and_zeros_for_the_fallback():
    results = [
        RankResult(["a"], np.array([0.5], dtype=np.float32), 0, interest=np.array([1, 0, 0, 0], np.float32)),
        RankResult(["b"], np.array([0.1], dtype=np.float32), 0),
    ]
    assert set(pack_results(results)) == set(OUTPUT_NAMES)
    packed = pack_results(results, dim=DIM)
    assert packed["INTEREST"].dtype == np.float32 and packed["INTEREST"].tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
