"""SDK building blocks without a server: batch tensors, row parsing, cache keys, caches, retry policy,
micro-batch planning, and the clients' retry/fallback loops over a fake tritonclient."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from aisle import AsyncRecClient, RecClient, RecommendRequest, RetryPolicy
from aisle.batching import AsyncBatcher, Pending, ThreadBatcher, plan_batches
from aisle.cache import MISSING, Flights, ResultCache, recommend_key
from aisle.errors import DeadlineExceeded, InvalidRequest, Overloaded, PermissionDenied, ServerUnavailable, from_triton
from aisle.policy import Deadline
from aisle.requests import MAX_BATCH, batch_recommend_tensors
from aisle.responses import split_recommendations


def test_batch_tensors_pad_history_and_keep_k_per_row():
    rows = [RecommendRequest("a", [("x", 1.0), ("y", 2.0)], 3), RecommendRequest("b", (), 7)]
    named = {t.name: t.array for t in batch_recommend_tensors(rows)}
    assert set(named) == {"QUERY", "K", "HISTORY_IDS", "HISTORY_TS"}
    assert named["QUERY"].tolist() == [[b"a"], [b"b"]] and named["K"].tolist() == [[3], [7]]
    assert named["HISTORY_IDS"].tolist() == [[b"x", b"y"], [b"", b""]]
    assert named["HISTORY_TS"].tolist() == [[1.0, 2.0], [0.0, 0.0]]


def test_batch_tensors_now_all_or_none_and_size_limits():
    with_now = [RecommendRequest("a", now=5.0), RecommendRequest("b", now=6.0)]
    assert {t.name: t.array for t in batch_recommend_tensors(with_now)}["NOW"].tolist() == [[5.0], [6.0]]
    with pytest.raises(InvalidRequest, match="now"):
        batch_recommend_tensors([RecommendRequest("a", now=5.0), RecommendRequest("b")])
    with pytest.raises(InvalidRequest):
        batch_recommend_tensors([])
    with pytest.raises(InvalidRequest):
        batch_recommend_tensors([RecommendRequest("a")] * (MAX_BATCH + 1))


def test_recommend_request_coerce_names_the_row():
    assert RecommendRequest.coerce({"query": "x", "k": 2}) == RecommendRequest("x", (), 2)
    with pytest.raises(InvalidRequest, match=r"requests\[3\]: k must"):
        RecommendRequest.coerce({"k": 0}, 3)
    with pytest.raises(InvalidRequest, match="unknown"):
        RecommendRequest.coerce({"qeury": "x"}, 0)


def test_split_recommendations_parses_every_row():
    ids = np.array([[b"a", b"b"], [b"c", b""]], dtype=object)
    scores = np.array([[0.9, 0.8], [0.7, np.nan]], dtype=np.float32)
    rows = split_recommendations(ids, scores, np.array([[0], [2]], dtype=np.int32))
    assert [[r.item_id for r in row] for row in rows] == [["a", "b"], ["c"]]
    assert rows[1].unknown_history == 2


def test_recommend_key_normalizes_whitespace_and_buckets_time():
    a = RecommendRequest(" red  shoes ", [("x", 1000.5)], 5, now=2000.2)
    b = RecommendRequest("red shoes", [("x", 1001.5)], 5, now=2001.2)
    assert recommend_key(a, 60) == recommend_key(b, 60)
    assert recommend_key(a, 60) != recommend_key(RecommendRequest("red shoes", [("x", 1000.5)], 6, now=2000.2), 60)
    assert recommend_key(a, 60) != recommend_key(RecommendRequest("Red shoes", [("x", 1000.5)], 5, now=2000.2), 60)
    assert recommend_key(RecommendRequest("q"), 60) != recommend_key(RecommendRequest("q", now=1.0), 60)


def test_result_cache_lru_ttl_and_stats():
    clock = [0.0]
    cache = ResultCache(2, ttl_s=10, timer=lambda: clock[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now most recent
    cache.put("c", 3)  # evicts b (least recently used)
    assert cache.get("b") is MISSING
    clock[0] = 11.0
    assert cache.get("a") is MISSING  # expired
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size, stats.maxsize, stats.ttl_s) == (1, 2, 0, 2, 10.0)
    with pytest.raises(InvalidRequest):
        ResultCache(0, 1)


def test_flights_first_claim_leads():
    flights = Flights(concurrent.futures.Future)
    f1, lead1 = flights.claim("k")
    f2, lead2 = flights.claim("k")
    assert lead1 and not lead2 and f1 is f2
    flights.release("k")
    assert flights.claim("k")[1]


def test_retry_policy_backs_off_only_on_retryable_and_within_deadline():
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=0.3, jitter=False)
    assert [policy.backoff_cap(a) for a in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    assert policy.next_delay(ServerUnavailable("x"), 1, 5.0) == 0.1
    assert policy.next_delay(Overloaded("x"), 2, 5.0) == 0.2
    assert policy.next_delay(InvalidRequest("x"), 1, 5.0) is None
    assert policy.next_delay(DeadlineExceeded("x"), 1, 5.0) is None
    assert policy.next_delay(ServerUnavailable("x"), 4, 5.0) is None  # attempts spent
    assert policy.next_delay(ServerUnavailable("x"), 1, 0.05) is None  # would pass the deadline
    jittered = RetryPolicy(initial_backoff_s=1.0)
    assert jittered.next_delay(ServerUnavailable("x"), 1, 5.0, rng=lambda: 0.25) == 0.25


def test_deadline():
    deadline = Deadline(0.05)
    assert 0 < deadline.remaining() <= 0.05
    time.sleep(0.06)
    with pytest.raises(DeadlineExceeded):
        deadline.check()
    assert Deadline.latest([Deadline(1), Deadline(3), Deadline(2)]).timeout_s == 3


def test_restricted_protocol_maps_to_permission_denied():
    exc = InferenceServerException(msg="This protocol is restricted, expecting header 'x'", status="StatusCode.UNAVAILABLE")
    assert type(from_triton(exc)) is PermissionDenied and not from_triton(exc).retryable


def test_plan_batches_groups_and_chunks_in_order():
    items = list(range(10))
    assert plan_batches(items, 3, lambda i: i % 2) == [[0, 2, 4], [6, 8], [1, 3, 5], [7, 9]]


def test_thread_batcher_collects_concurrent_items():
    batches = []

    def run(group):
        batches.append(len(group))
        for item in group:
            item.future.set_result(item.request * 2)

    batcher = ThreadBatcher(run, max_batch=8, max_delay_s=0.05, group_key=lambda item: 0)
    items = [Pending(i, Deadline(5), concurrent.futures.Future()) for i in range(8)]
    for item in items:
        batcher.submit(item)
    assert [item.future.result(timeout=5) for item in items] == [i * 2 for i in range(8)]
    batcher.close()
    assert batches == [8]


def test_async_batcher_collects_and_isolates_errors():
    async def run(group):
        for item in group:
            item.future.set_exception(InvalidRequest("bad")) if item.request == 3 else item.future.set_result(item.request)

    async def main():
        batcher = AsyncBatcher(run, max_batch=64, max_delay_s=0.01, group_key=lambda item: 0)
        loop = asyncio.get_running_loop()
        items = [Pending(i, Deadline(5), loop.create_future()) for i in range(5)]
        for item in items:
            batcher.submit(item)
        results = await asyncio.gather(*(item.future for item in items), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results[:3] == [0, 1, 2] and isinstance(results[3], InvalidRequest) and results[4] == 4


# -- the clients' loops over a fake tritonclient ------------------------------------------------------


class FakeResult:
    def __init__(self, rows):
        self.rows = rows

    def as_numpy(self, name):
        n = len(self.rows)
        if name == "ITEM_IDS":
            return np.array([[q.encode()] for q in self.rows], dtype=object)
        if name == "SCORES":
            return np.ones((n, 1), dtype=np.float32)
        return np.zeros((n, 1), dtype=np.int32)


class FakeTriton:
    """Answers each row with its own query as the item id; fails as scripted."""

    def __init__(self, failures=(), reject=None):
        self.failures = list(failures)
        self.reject = reject
        self.calls = []

    def _answer(self, inputs, client_timeout):
        queries = [q[0].decode() for q in inputs[0]._np]  # QUERY is the first tensor
        self.calls.append((queries, client_timeout))
        if self.failures:
            raise InferenceServerException(msg="down", status=self.failures.pop(0))
        if self.reject is not None and self.reject in queries:
            raise InferenceServerException(msg=f"bad {self.reject}", status="StatusCode.INVALID_ARGUMENT")
        return FakeResult(queries)

    def infer(self, model, inputs, client_timeout=None, headers=None):
        return self._answer(inputs, client_timeout)

    def close(self):
        pass


class AsyncFakeTriton(FakeTriton):
    async def infer(self, model, inputs, client_timeout=None, headers=None):
        return self._answer(inputs, client_timeout)

    async def close(self):
        pass


@pytest.fixture(autouse=True)
def keep_numpy(monkeypatch):
    """Let the fake read the numpy array back from tritonclient's InferInput."""
    import tritonclient.grpc as grpcclient

    original = grpcclient.InferInput.set_data_from_numpy

    def set_data(self, array):
        self._np = array
        return original(self, array)

    monkeypatch.setattr(grpcclient.InferInput, "set_data_from_numpy", set_data)


def fast_retry(n=5):
    return RetryPolicy(max_attempts=n, initial_backoff_s=0.001, max_backoff_s=0.002)


def test_sync_retries_unavailable_then_succeeds():
    with RecClient("127.0.0.1:1", retry=fast_retry()) as client:
        client._triton = FakeTriton(["StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"])
        assert client.recommend("q")[0].item_id == "q"
        assert client.last_call.attempts == 3
        # each attempt's gRPC timeout is what is left of the one deadline
        timeouts = [t for _, t in client._triton.calls]
        assert timeouts == sorted(timeouts, reverse=True) and timeouts[0] <= 2.0


def test_sync_never_retries_invalid_argument_or_deadline():
    with RecClient("127.0.0.1:1", retry=fast_retry()) as client:
        client._triton = FakeTriton(["StatusCode.INVALID_ARGUMENT"])
        with pytest.raises(InvalidRequest):
            client.recommend("q")
        assert len(client._triton.calls) == 1
        client._triton = FakeTriton(["StatusCode.DEADLINE_EXCEEDED"])
        with pytest.raises(DeadlineExceeded):
            client.recommend("q")
        assert len(client._triton.calls) == 1


def test_sync_gives_up_with_the_last_error_when_attempts_run_out():
    with RecClient("127.0.0.1:1", retry=fast_retry(2)) as client:
        client._triton = FakeTriton(["StatusCode.UNAVAILABLE"] * 5)
        with pytest.raises(ServerUnavailable):
            client.recommend("q")
        assert len(client._triton.calls) == 2


def test_sync_batch_rejected_falls_back_row_by_row():
    with RecClient("127.0.0.1:1", retry=fast_retry()) as client:
        client._triton = FakeTriton(reject="bad")
        out = client.recommend_many([{"query": "a"}, {"query": "bad"}, {"query": "c"}], return_exceptions=True)
        assert out[0][0].item_id == "a" and isinstance(out[1], InvalidRequest) and out[2][0].item_id == "c"
        with pytest.raises(InvalidRequest, match="bad"):
            client.recommend_many([{"query": "a"}, {"query": "bad"}])


def test_sync_micro_batching_error_reaches_only_its_owner():
    with RecClient("127.0.0.1:1", retry=fast_retry(), max_delay_ms=50) as client:
        client._triton = FakeTriton(reject="bad")
        results = {}
        barrier = threading.Barrier(6)

        def call(q):
            barrier.wait()
            try:
                results[q] = client.recommend(q)[0].item_id
            except InvalidRequest as exc:
                results[q] = exc

        threads = [threading.Thread(target=call, args=(q,)) for q in ["a", "b", "bad", "d", "e", "f"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert isinstance(results.pop("bad"), InvalidRequest)
        assert results == {q: q for q in "abdef"}
        assert max(len(queries) for queries, _ in client._triton.calls) > 1


def test_async_client_retries_batches_and_isolates_errors():
    async def main():
        async with AsyncRecClient("127.0.0.1:1", retry=fast_retry(), max_delay_ms=20) as client:
            client._triton = AsyncFakeTriton(["StatusCode.UNAVAILABLE"], reject="bad")
            results = await asyncio.gather(
                *(client.recommend(q) for q in ["a", "bad", "c"]), return_exceptions=True
            )
            return results, client._triton.calls

    results, calls = asyncio.run(main())
    assert results[0][0].item_id == "a" and isinstance(results[1], InvalidRequest) and results[2][0].item_id == "c"
    assert calls[0][0] == ["a", "bad", "c"]  # one batched request (failed UNAVAILABLE, then retried)


def test_sync_deadline_bounds_a_micro_batched_call():
    class Slow(FakeTriton):
        def infer(self, model, inputs, client_timeout=None, headers=None):
            time.sleep(0.5)
            return super().infer(model, inputs, client_timeout, headers)

    with RecClient("127.0.0.1:1", max_delay_ms=1) as client:
        client._triton = Slow()
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.recommend("q", timeout_s=0.05)
        assert time.monotonic() - start < 0.4


# -- ranking options and filters (issue: personalized, diverse ranking) --------------------------------
_Request, _batch = RecommendRequest, batch_recommend_tensors


def test_ranking_options_become_typed_knob_tensors_and_filters_are_padded():
    rows = [
        _Request("a", k=3, ranking={"diversity": 0.3, "diversity_method": "mmr"}, exclude_ids=["x", "y"]),
        _Request("b", k=5, ranking={"diversity_method": "dpp", "diversity": 0.0}, allow_categories=["Comedy"]),
    ]
    tensors = {t.name: t for t in _batch(rows)}
    assert tensors["DIVERSITY"].datatype == "FP32" and tensors["DIVERSITY"].array.dtype == np.float32
    np.testing.assert_allclose(tensors["DIVERSITY"].array, [[0.3], [0.0]], rtol=1e-6)
    assert tensors["DIVERSITY_METHOD"].array.tolist() == [[b"mmr"], [b"dpp"]]
    assert tensors["EXCLUDE_IDS"].array.tolist() == [[b"x", b"y"], [b"", b""]]
    assert tensors["ALLOW_CATEGORIES"].array.tolist() == [[b""], [b"Comedy"]]
    assert "DENY_CATEGORIES" not in tensors


@pytest.mark.parametrize(
    "ranking, message",
    [
        ({"diversity": 1.5}, "diversity"),
        ({"diversity": "high"}, "diversity"),
        ({"diversity_method": "random"}, "diversity_method"),
        ({"category_cap": 2.5}, "category_cap"),
        ({"exclude_history": 1}, "exclude_history"),
        ({"recency_half_life_s": 0}, "recency_half_life_s"),
        ({"search_mode": "magic"}, "search_mode"),
        ({"diversty": 0.2}, "unknown ranking option"),
    ],
)
def test_bad_ranking_options_are_refused_locally(ranking, message):
    with pytest.raises(InvalidRequest, match=message):
        _Request("a", ranking=ranking)


def test_rows_with_different_knob_sets_do_not_share_a_batch():
    a = _Request("a", ranking={"diversity": 0.2})
    b = _Request("b")
    assert a.batch_signature != b.batch_signature
    with pytest.raises(InvalidRequest, match="every row"):
        _batch([a, b])


def test_filters_must_be_sequences_of_non_empty_str():
    with pytest.raises(InvalidRequest, match="exclude_ids"):
        _Request("a", exclude_ids="abc")
    with pytest.raises(InvalidRequest, match=r"deny_categories\[0\] is empty"):
        _Request("a", deny_categories=[""])
