"""The SDK without a server: argument validation, request tensors, error mapping, result parsing."""

from __future__ import annotations

import math
import socket

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

import aisle
from aisle.client import RecClient, parse_recommendations
from aisle.errors import (
    AisleError,
    DeadlineExceeded,
    InvalidRequest,
    ModelNotReady,
    Overloaded,
    ServerError,
    ServerUnavailable,
    from_triton,
)
from aisle.requests import (
    MAX_K,
    RecommendRequest,
    batch_recommend_tensors,
    embed_tensors,
    recommend_tensors,
    validate_timeout,
)
from aisle.types import Recommendation, Recommendations
from aisle_contract import MAX_QUERY_CHARS


def by_name(tensors):
    named = {t.name: t for t in tensors}
    assert len(named) == len(tensors), "duplicate tensor names"
    return named


# -- recommend_tensors -----------------------------------------------------------------------------


def test_recommend_tensors_full_request():
    tensors = by_name(recommend_tensors("red shoes", [("i1", 100), ("caf\u00e9", 200.5)], 7, now=1_700_000_000.25))
    assert set(tensors) == {"QUERY", "K", "HISTORY_IDS", "HISTORY_TS", "NOW"}

    query = tensors["QUERY"]
    assert query.datatype == "BYTES" and query.array.dtype == object and query.array.shape == (1, 1)
    assert query.array[0, 0] == b"red shoes"

    k = tensors["K"]
    assert k.datatype == "INT32" and k.array.dtype == np.int32 and k.array.shape == (1, 1)
    assert int(k.array[0, 0]) == 7

    ids = tensors["HISTORY_IDS"]
    assert ids.datatype == "BYTES" and ids.array.dtype == object and ids.array.shape == (1, 2)
    assert ids.array.tolist() == [[b"i1", "caf\u00e9".encode()]]

    ts = tensors["HISTORY_TS"]
    assert ts.datatype == "FP64" and ts.array.dtype == np.float64 and ts.array.shape == (1, 2)
    assert ts.array.tolist() == [[100.0, 200.5]]

    now = tensors["NOW"]
    assert now.datatype == "FP64" and now.array.dtype == np.float64 and now.array.shape == (1, 1)
    assert now.array[0, 0] == 1_700_000_000.25


def test_recommend_tensors_minimal_request_omits_optional_tensors():
    tensors = by_name(recommend_tensors(None, None, 1))
    assert set(tensors) == {"QUERY", "K"}
    assert tensors["QUERY"].array.tolist() == [[b""]]
    assert tensors["K"].array.tolist() == [[1]]
    assert set(by_name(recommend_tensors("", (), MAX_K))) == {"QUERY", "K"}


def test_recommend_tensors_accepts_lists_generators_and_numpy_numbers():
    history = (pair for pair in [["a", np.float64(1.5)], ("b", np.int64(2))])
    tensors = by_name(recommend_tensors("q", history, np.int64(3)))
    assert tensors["HISTORY_IDS"].array.tolist() == [[b"a", b"b"]]
    assert tensors["HISTORY_TS"].array.tolist() == [[1.5, 2.0]]
    assert tensors["K"].array.tolist() == [[3]]


def test_history_event_types_travel_as_history_events_only_when_given():
    tensors = by_name(
        batch_recommend_tensors(
            [RecommendRequest("", [("a", 1.0, "view"), ("b", 2.0)]), RecommendRequest("", [("c", 3.0)])]
        )
    )
    assert tensors["HISTORY_EVENTS"].datatype == "BYTES"
    assert tensors["HISTORY_EVENTS"].array.tolist() == [[b"view", b""], [b"", b""]]
    assert "HISTORY_EVENTS" not in by_name(recommend_tensors("", [("a", 1.0)], 3))
    assert_invalid(lambda: recommend_tensors("", [("a", 1.0, "")], 3), "history[0] event_type")
    assert_invalid(lambda: recommend_tensors("", [("a", 1.0, b"view")], 3), "history[0] event_type")


def assert_invalid(call, *names):
    with pytest.raises(InvalidRequest) as info:
        call()
    for name in names:
        assert name in str(info.value), f"{name!r} not named in {str(info.value)!r}"
    return info.value


@pytest.mark.parametrize("k", [0, -1, True, False, MAX_K + 1, 2.5, 3.0, "3", None])
def test_bad_k_is_rejected(k):
    error = assert_invalid(lambda: recommend_tensors("q", (), k), "k must")
    assert isinstance(error, ValueError) and isinstance(error, AisleError)


@pytest.mark.parametrize(
    "history, named",
    [
        ([("a",)], "history[0]"),
        ([("a", 1.0, 2.0)], "history[0]"),
        ([("a", 1.0), "ab"], "history[1]"),
        ([("a", 1.0), b"ab"], "history[1]"),
        ([("a", 1.0), {"a": 1.0}], "history[1]"),
        ([("a", 1.0), 5], "history[1]"),
        ([("a", 1.0), ("", 2.0)], "history[1] item_id"),
        ([(b"a", 1.0)], "history[0] item_id"),
        ([(7, 1.0)], "history[0] item_id"),
        ([("\ud800", 1.0)], "history[0] item_id"),
        ([("a", math.nan)], "history[0] timestamp"),
        ([("a", math.inf)], "history[0] timestamp"),
        ([("a", 1.0), ("b", -math.inf)], "history[1] timestamp"),
        ([("a", True)], "history[0] timestamp"),
        ([("a", "123")], "history[0] timestamp"),
        ([("a", None)], "history[0] timestamp"),
    ],
)
def test_bad_history_is_rejected_naming_the_item(history, named):
    assert_invalid(lambda: recommend_tensors("q", history, 5), named)


@pytest.mark.parametrize("query", [123, b"bytes", ["q"]])
def test_non_str_query_is_rejected(query):
    assert_invalid(lambda: recommend_tensors(query, (), 5), "query")


def test_an_over_long_query_or_text_is_sent_cut_to_what_the_server_reads():
    huge = "espresso beans " * 100_000
    query = next(t for t in recommend_tensors(huge, (), 5) if t.name == "QUERY")
    assert query.array[0, 0] == huge[:MAX_QUERY_CHARS].encode()
    (text,) = embed_tensors([huge])
    assert text.array[0, 0] == huge[:MAX_QUERY_CHARS].encode()


def test_query_with_lone_surrogate_is_rejected():
    assert_invalid(lambda: recommend_tensors("shoes \ud800", (), 5), "query", "UTF-8")


@pytest.mark.parametrize("now", [math.nan, math.inf, True, "now"])
def test_bad_now_is_rejected(now):
    assert_invalid(lambda: recommend_tensors("q", (), 5, now=now), "now")


@pytest.mark.parametrize("timeout", [0, 0.0, -1, math.nan, math.inf, True, "1"])
def test_bad_timeout_is_rejected(timeout):
    assert_invalid(lambda: validate_timeout(timeout), "timeout_s")


def test_good_timeouts_pass_through():
    assert validate_timeout(None) is None
    assert validate_timeout(0.25) == 0.25
    assert validate_timeout(3) == 3


# -- embed_tensors ---------------------------------------------------------------------------------


def test_embed_tensors_builds_one_text_column():
    (tensor,) = embed_tensors(["a", "caf\u00e9", ""])
    assert tensor.name == "TEXT" and tensor.datatype == "BYTES"
    assert tensor.array.dtype == object and tensor.array.shape == (3, 1)
    assert tensor.array.ravel().tolist() == [b"a", "caf\u00e9".encode(), b""]


@pytest.mark.parametrize("texts", ["just a str", [], (), None, 42])
def test_embed_tensors_rejects_non_sequences_and_empty(texts):
    assert_invalid(lambda: embed_tensors(texts), "texts")


def test_embed_tensors_names_the_bad_text():
    assert_invalid(lambda: embed_tensors(["ok", 3]), "texts[1]")
    assert_invalid(lambda: embed_tensors(["ok", "x", "\udfff"]), "texts[2]")


# -- error mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, kind",
    [
        ("StatusCode.INVALID_ARGUMENT", InvalidRequest),
        ("StatusCode.OUT_OF_RANGE", InvalidRequest),
        ("StatusCode.FAILED_PRECONDITION", InvalidRequest),
        ("StatusCode.UNAVAILABLE", ServerUnavailable),
        ("StatusCode.CANCELLED", ServerUnavailable),  # a draining server dropped it: retryable
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceeded),
        ("StatusCode.RESOURCE_EXHAUSTED", Overloaded),
        ("StatusCode.NOT_FOUND", ModelNotReady),
        ("StatusCode.INTERNAL", ServerError),
        ("StatusCode.UNKNOWN", ServerError),
        ("StatusCode.NOT_A_REAL_CODE", ServerError),
        (None, ServerError),
    ],
)
def test_from_triton_maps_status_codes(status, kind):
    error = from_triton(InferenceServerException(msg="something happened", status=status))
    assert type(error) is kind
    assert isinstance(error, AisleError)
    assert str(error) == "something happened"


def test_from_triton_keeps_the_grpc_code():
    error = from_triton(InferenceServerException(msg="K: k=0 out of range", status="StatusCode.INVALID_ARGUMENT"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "K: k=0" in str(error)
    assert from_triton(InferenceServerException(msg="boom", status=None)).code is None


def test_from_triton_accepts_status_code_objects_and_bare_names():
    assert type(from_triton(InferenceServerException(msg="x", status=grpc.StatusCode.UNAVAILABLE))) is ServerUnavailable
    assert type(from_triton(InferenceServerException(msg="x", status="NOT_FOUND"))) is ModelNotReady


def test_from_triton_reads_client_side_deadline_without_status():
    error = from_triton(InferenceServerException(msg="Deadline Exceeded", status=None))
    assert type(error) is DeadlineExceeded


def test_from_triton_maps_plain_exceptions_to_server_error():
    error = from_triton(RuntimeError("socket closed"))
    assert type(error) is ServerError and str(error) == "socket closed"


def test_from_triton_queue_full_is_overloaded():
    # tritonserver's own wording (core/src/scheduler_utils.cc, PolicyQueue::Enqueue, also in the
    # libtritonserver bundled with nvidia-pytriton): UNAVAILABLE "<request log>Exceeds maximum queue size".
    message = "[request id: <id_unknown>] Exceeds maximum queue size"
    error = from_triton(InferenceServerException(msg=message, status="StatusCode.UNAVAILABLE"))
    assert type(error) is Overloaded
    assert error.retryable


def test_from_triton_plain_unavailable_is_not_overloaded():
    error = from_triton(
        InferenceServerException(msg="failed to connect to all addresses", status="StatusCode.UNAVAILABLE")
    )
    assert type(error) is ServerUnavailable


@pytest.mark.parametrize(
    "kind, retryable",
    [
        (AisleError, False),
        (InvalidRequest, False),
        (ServerError, False),
        (DeadlineExceeded, False),
        (ModelNotReady, True),
        (ServerUnavailable, True),
        (Overloaded, True),
    ],
)
def test_retryable_flags(kind, retryable):
    assert kind.retryable is retryable
    assert kind("x").retryable is retryable
    assert issubclass(kind, AisleError)


def test_public_names_are_exported():
    for name in aisle.__all__:
        assert hasattr(aisle, name)
    assert aisle.InvalidRequest is InvalidRequest and aisle.Recommendations is Recommendations


# -- results ---------------------------------------------------------------------------------------


def test_parse_recommendations_drops_padding_and_reads_unknown_history():
    ids = np.array([[b"a", "caf\u00e9".encode(), b"", b""]], dtype=object)
    scores = np.array([[0.9, 0.5, np.nan, np.nan]], dtype=np.float32)
    recs = parse_recommendations(ids, scores, np.array([[3]], dtype=np.int32))
    assert isinstance(recs, Recommendations) and isinstance(recs, list)
    assert [r.item_id for r in recs] == ["a", "caf\u00e9"]
    assert [r.score for r in recs] == pytest.approx([0.9, 0.5])
    assert all(type(r.score) is float for r in recs)
    assert recs.unknown_history == 3
    assert recs[0] == Recommendation("a", pytest.approx(0.9))


def test_parse_recommendations_without_unknown_history_tensor():
    recs = parse_recommendations(np.array([[b"x"]], dtype=object), np.array([[1.0]], dtype=np.float32), None)
    assert recs == [Recommendation("x", 1.0)]
    assert recs.unknown_history == 0


def test_parse_recommendations_all_padding_is_empty():
    recs = parse_recommendations(
        np.array([[b"", b""]], dtype=object), np.full((1, 2), np.nan, dtype=np.float32), np.array([[1]], dtype=np.int32)
    )
    assert recs == [] and len(recs) == 0
    assert recs.unknown_history == 1


def test_recommendations_is_a_list_with_unknown_history():
    recs = Recommendations([Recommendation("a", 1.0), Recommendation("b", 0.5)], unknown_history=2)
    assert isinstance(recs, list)
    assert len(recs) == 2 and recs[1].item_id == "b"
    assert recs.unknown_history == 2
    assert "unknown_history=2" in repr(recs)
    assert Recommendations().unknown_history == 0 and list(Recommendations()) == []


def test_recommendation_is_frozen():
    rec = Recommendation("a", 1.0)
    with pytest.raises(AttributeError):
        rec.score = 2.0  # type: ignore[misc]  # frozen: the assignment must fail


# -- client construction without a server ----------------------------------------------------------


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("timeout", [0, -1.0, math.nan])
def test_client_rejects_bad_timeout(timeout):
    with pytest.raises(InvalidRequest, match="timeout_s"):
        RecClient(f"127.0.0.1:{unused_port()}", timeout_s=timeout)


def test_client_validates_arguments_before_any_network_call():
    with RecClient(f"127.0.0.1:{unused_port()}", timeout_s=0.5) as client:
        assert client.timeout_s == 0.5
        with pytest.raises(InvalidRequest, match="k must"):
            client.recommend(query="shoes", k=0)
        with pytest.raises(InvalidRequest, match=r"history\[0\]"):
            client.recommend(history=[("a",)])
        with pytest.raises(InvalidRequest, match="timeout_s"):
            client.recommend(query="shoes", timeout_s=0)
        with pytest.raises(InvalidRequest, match="tower"):
            client.embed(["x"], tower="bogus")
        with pytest.raises(InvalidRequest, match="texts"):
            client.embed("x")


def test_from_triton_queue_timeout_is_overloaded():
    # Triton 2.51's wording when a request waited longer than default_timeout_microseconds
    exc = InferenceServerException(msg="Request timeout expired", status="StatusCode.UNAVAILABLE")
    error = from_triton(exc)
    assert isinstance(error, Overloaded) and error.retryable


def test_the_typed_knobs_are_exactly_the_overridable_ones():
    from aisle import RankingKnobs
    from aisle_contract import OVERRIDABLE

    assert set(RankingKnobs.__annotations__) == set(OVERRIDABLE)


def test_a_request_over_the_contracts_message_cap_is_refused_before_sending():
    from aisle_contract import MAX_MESSAGE_BYTES

    long_id = "x" * 200_000
    history = [(f"{long_id}{i}", 1.0) for i in range(MAX_MESSAGE_BYTES // 200_000 + 1)]
    assert_invalid(lambda: recommend_tensors("q", history, 5), "bytes", "shorter history")
    assert_invalid(lambda: embed_tensors(["y" * MAX_QUERY_CHARS] * (MAX_MESSAGE_BYTES // MAX_QUERY_CHARS + 1)), "bytes")
    assert recommend_tensors("q", history[:10], 5)  # well under the cap: sent


def test_the_channel_caps_messages_at_the_contracts_limit():
    from aisle._core import channel_args
    from aisle_contract import MAX_MESSAGE_BYTES

    options = dict(channel_args())
    assert options["grpc.max_send_message_length"] == options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
