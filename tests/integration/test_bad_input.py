"""Raw tritonclient requests the SDK would never send: each gets INVALID_ARGUMENT and the server keeps serving."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration


def _input(name, array, datatype):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _query(text: bytes = b"toy story"):
    return _input("QUERY", np.array([[text]], dtype=object), "BYTES")


BAD_REQUESTS = {
    "non-utf8 query": ([_query(b"\xff\xfe caf\xe9")], "QUERY|TEXT.*UTF-8"),
    "query as FP32": (
        [_input("QUERY", np.array([[1.0]], dtype=np.float32), "FP32")],
        "QUERY.*data-type|data-type.*QUERY",
    ),
    "query wrong shape": ([_input("QUERY", np.array([[b"a", b"b"]], dtype=object), "BYTES")], "QUERY|shape"),
    "k zero": ([_query(), _input("K", np.array([[0]], dtype=np.int32), "INT32")], "K"),
    "k as INT64": ([_query(), _input("K", np.array([[5]], dtype=np.int64), "INT64")], "K.*data-type|data-type.*K"),
    "history ts NaN": (
        [
            _query(),
            _input("HISTORY_IDS", np.array([[b"1"]], dtype=object), "BYTES"),
            _input("HISTORY_TS", np.array([[np.nan]]), "FP64"),
        ],
        "HISTORY_TS",
    ),
    "history ts without ids": ([_query(), _input("HISTORY_TS", np.array([[1.0]]), "FP64")], "HISTORY_TS"),
    "history shapes differ": (
        [
            _query(),
            _input("HISTORY_IDS", np.array([[b"1", b"2"]], dtype=object), "BYTES"),
            _input("HISTORY_TS", np.array([[1.0]]), "FP64"),
        ],
        "HISTORY_TS",
    ),
    "now is inf": ([_query(), _input("NOW", np.array([[np.inf]]), "FP64")], "NOW"),
    # Triton's ensemble scheduler reports a missing required input this way (status INVALID_ARGUMENT).
    "missing query": (
        [_input("K", np.array([[3]], dtype=np.int32), "INT32")],
        "ensemble 'recommend'.*output is not set",
    ),
    "unknown input": ([_query(), _input("BOGUS", np.array([[1]], dtype=np.int32), "INT32")], "BOGUS"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_raw_request_gets_invalid_argument_and_server_keeps_serving(raw, client, name):
    inputs, pattern = BAD_REQUESTS[name]
    with pytest.raises(InferenceServerException) as caught:
        raw.infer("recommend", inputs, client_timeout=20)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", caught.value
    assert re.search(pattern, caught.value.message()), caught.value.message()
    assert len(client.recommend(query="toy story", k=3)) == 3


def test_non_utf8_text_to_embed_is_refused(raw, client):
    with pytest.raises(InferenceServerException) as caught:
        raw.infer("embed_query", [_input("TEXT", np.array([[b"\xc3\x28"]], dtype=object), "BYTES")])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "TEXT" in caught.value.message() and "UTF-8" in caught.value.message()
    assert client.embed(["still alive"]).shape == (1, 384)


def test_batched_raw_request_pads_rows_with_fewer_results(raw):
    queries = np.array([[b"toy story"], [b"alien"]], dtype=object)
    ks = np.array([[2], [4]], dtype=np.int32)
    result = raw.infer("recommend", [_input("QUERY", queries, "BYTES"), _input("K", ks, "INT32")])
    ids, scores = result.as_numpy("ITEM_IDS"), result.as_numpy("SCORES")
    assert ids.shape == (2, 4)
    assert list(ids[0, 2:]) == [b"", b""] and np.isnan(scores[0, 2:]).all()
    assert all(ids[1]) and np.isfinite(scores[1]).all()
