"""SDK building blocks without a server: batch tensors, row parsing, cache keys, caches, retry policy,
micro-batch planning; the core's plans stepped by hand (no I/O at all); and the same scenarios on both
clients (sync and asyncio drivers of one core) over a fake tritonclient."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import threading
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from aisle import AsyncRecClient, RecClient, RecommendRequest, RetryPolicy
from aisle._core import ClientCore
from aisle.batching import AsyncBatcher, Pending, ThreadBatcher, Window, plan_batches
from aisle.cache import MISSING, Flights, ResultCache, recommend_key
from aisle.errors import (
    ClientClosed,
    DeadlineExceeded,
    InvalidRequest,
    Overloaded,
    PermissionDenied,
    ServerUnavailable,
    from_triton,
)
from aisle.plans import Call, Gather, Sleep, Wait
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
    message = "This protocol is restricted, expecting header 'x'"
    exc = InferenceServerException(msg=message, status="StatusCode.UNAVAILABLE")
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
            if item.request == 3:
                item.future.set_exception(InvalidRequest("bad"))
            else:
                item.future.set_result(item.request)

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


# -- a fake tritonclient ----------------------------------------------------------------------------


class FakeResult:
    def __init__(self, rows):
        self.rows = rows

    def as_numpy(self, name):
        n = len(self.rows)
        if name == "ITEM_IDS":
            return np.array([[q.encode()] for q in self.rows], dtype=object)
        if name == "SCORES":
            return np.ones((n, 1), dtype=np.float32)
        if name == "EMBEDDING":
            return np.ones((n, 4), dtype=np.float32)
        return np.zeros((n, 1), dtype=np.int32)


class FakeTriton:
    """Answers each row with its own query as the item id; fails as scripted."""

    def __init__(self, failures=(), reject=None, delay=0.0):
        self.failures = list(failures)
        self.reject = reject
        self.delay = delay
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
        time.sleep(self.delay)
        return self._answer(inputs, client_timeout)

    def close(self):
        pass


class AsyncFakeTriton(FakeTriton):
    async def infer(self, model, inputs, client_timeout=None, headers=None):
        await asyncio.sleep(self.delay)
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


# -- one core, two drivers: the plans without any I/O, then the same scenarios on both clients ---------


class BareCore(ClientCore):
    """The core with no transport at all: its plans are stepped by hand."""

    _new_future = concurrent.futures.Future
    _new_batcher = ThreadBatcher

    def _open_channel(self):
        return None


def unavailable():
    return InferenceServerException(msg="down", status="StatusCode.UNAVAILABLE")


def test_a_plan_asks_for_calls_and_sleeps_and_decides_retries_itself():
    core = BareCore("127.0.0.1:1", retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01, jitter=False))
    plan = core._plan_recommend("q", k=3)
    step = next(plan)
    assert isinstance(step, Call) and step.method == "infer" and step.args[0] == "recommend"
    assert 0 < step.kwargs["client_timeout"] <= 2.0 and step.kwargs["headers"] is None
    assert plan.throw(unavailable()) == Sleep(0.01)  # the core maps the code and picks the backoff
    assert isinstance(plan.send(None), Call)
    assert [r.item_id for r in finish(plan, FakeResult(["q"]))] == ["q"]
    assert core.last_call.attempts == 2 and core.last_call.error is None


def test_a_plan_maps_grpc_errors_and_gives_up_on_what_is_not_retryable():
    core = BareCore("127.0.0.1:1")
    plan = core._plan_embed(["a"])
    next(plan)
    with pytest.raises(InvalidRequest, match="bad"):
        plan.throw(InferenceServerException(msg="bad", status="StatusCode.INVALID_ARGUMENT"))
    assert core.last_call.error == "InvalidRequest"


def test_a_plan_waits_for_an_identical_call_in_flight_instead_of_sending_it_again():
    core = BareCore("127.0.0.1:1", recommend_cache_size=10)
    leader, follower = core._plan_recommend("same"), core._plan_recommend("same")
    assert isinstance(next(leader), Call)
    waiting = next(follower)
    assert isinstance(waiting, Wait) and waiting.what == "recommend"
    finish(leader, FakeResult(["same"]))
    assert finish(follower, waiting.future.result(timeout=0))[0].item_id == "same"
    assert core.last_call.cache == "shared"


def finish(plan, reply):
    """The result of ``plan`` once ``reply`` is sent to its step (or thrown, for an exception)."""
    with pytest.raises(StopIteration) as done:
        plan.throw(reply) if isinstance(reply, BaseException) else plan.send(reply)
    return done.value.value


def test_a_plan_splits_a_rejected_batch_into_rows():
    core = BareCore("127.0.0.1:1")
    plan = core._plan_recommend_many([{"query": "a"}, {"query": "bad"}], return_exceptions=True)
    (batch,) = next(plan).plans  # one Triton request of two rows
    assert isinstance(next(batch), Call)
    rows = batch.throw(InferenceServerException(msg="bad", status="StatusCode.INVALID_ARGUMENT"))
    assert isinstance(rows, Gather) and len(rows.plans) == 2  # resent row by row
    row_a, row_bad = rows.plans
    next(row_a), next(row_bad)
    rejected = InferenceServerException(msg="bad row", status="StatusCode.INVALID_ARGUMENT")
    per_row = finish(batch, [finish(row_a, FakeResult(["a"])), finish(row_bad, rejected)])
    results = finish(plan, [per_row])
    assert results[0][0].item_id == "a" and isinstance(results[1], InvalidRequest)


class Driver:
    """Runs a scenario's calls on either client: as they are, or on one event loop (asyncio).

    Both run inside one ``contextvars.Context``, so ``last_call`` reads the same for both.
    """

    def __init__(self, kind):
        self.kind = kind
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.context = contextvars.copy_context()

    def client(self, triton=None, **options):
        client = (RecClient if self.kind == "sync" else AsyncRecClient)("127.0.0.1:1", **options)
        client._triton = triton if triton is not None else self.fake()
        return client

    def fake(self, *args, **kwargs):
        return (FakeTriton if self.kind == "sync" else AsyncFakeTriton)(*args, **kwargs)

    def __call__(self, call):
        """What ``call()`` returns, awaited on the loop when it is a coroutine."""
        result = self.context.run(call)
        if inspect.isawaitable(result):
            return self.loop.run_until_complete(self.loop.create_task(result, context=self.context))
        return result

    def last_call(self, client):
        return self.context.run(lambda: client.last_call)

    def at_once(self, calls):
        """Results (or errors) of ``calls`` made concurrently: threads, or tasks on the loop."""
        if self.kind == "async":

            async def gather():
                return await asyncio.gather(*(call() for call in calls), return_exceptions=True)

            return self(gather)
        barrier = threading.Barrier(len(calls))

        def one(call):
            barrier.wait()
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - returned like gather(return_exceptions=True
                return exc

        with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(one, calls))

    def close(self):
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def drive(request):
    driver = Driver(request.param)
    yield driver
    driver.close()


def test_both_clients_have_the_same_methods_and_signatures():
    names = {n for n in dir(RecClient) if not n.startswith("_")} - {"close"}
    assert names == {n for n in dir(AsyncRecClient) if not n.startswith("_")} - {"close", "connect"}
    for name in names:
        sync, aio = getattr(RecClient, name), getattr(AsyncRecClient, name)
        if callable(sync):
            assert inspect.signature(sync) == inspect.signature(aio), name
            assert inspect.iscoroutinefunction(aio) != (name in {"cache_stats", "clear_caches", "exposure_stats"}), name
    assert inspect.signature(RecClient) == inspect.signature(AsyncRecClient)


def test_retries_unavailable_then_succeeds(drive):
    client = drive.client(drive.fake(["StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"]), retry=fast_retry())
    assert drive(lambda: client.recommend("q"))[0].item_id == "q"
    assert drive.last_call(client).attempts == 3
    # each attempt's gRPC timeout is what is left of the one deadline
    timeouts = [t for _, t in client._triton.calls]
    assert timeouts == sorted(timeouts, reverse=True) and timeouts[0] <= 2.0


def test_never_retries_invalid_argument_or_deadline(drive):
    client = drive.client(drive.fake(["StatusCode.INVALID_ARGUMENT"]), retry=fast_retry())
    with pytest.raises(InvalidRequest):
        drive(lambda: client.recommend("q"))
    assert len(client._triton.calls) == 1
    client._triton = drive.fake(["StatusCode.DEADLINE_EXCEEDED"])
    with pytest.raises(DeadlineExceeded):
        drive(lambda: client.recommend("q"))
    assert len(client._triton.calls) == 1


def test_gives_up_with_the_last_error_when_attempts_run_out(drive):
    client = drive.client(drive.fake(["StatusCode.UNAVAILABLE"] * 5), retry=fast_retry(2))
    with pytest.raises(ServerUnavailable):
        drive(lambda: client.recommend("q"))
    assert len(client._triton.calls) == 2 and drive.last_call(client).error == "ServerUnavailable"


def test_batch_rejected_falls_back_row_by_row(drive):
    client = drive.client(drive.fake(reject="bad"), retry=fast_retry())
    rows = [{"query": "a"}, {"query": "bad"}, {"query": "c"}]
    out = drive(lambda: client.recommend_many(rows, return_exceptions=True))
    assert out[0][0].item_id == "a" and isinstance(out[1], InvalidRequest) and out[2][0].item_id == "c"
    with pytest.raises(InvalidRequest, match="bad"):
        drive(lambda: client.recommend_many([{"query": "a"}, {"query": "bad"}]))


def test_micro_batching_retries_once_and_an_error_reaches_only_its_owner(drive):
    client = drive.client(drive.fake(["StatusCode.UNAVAILABLE"], reject="bad"), retry=fast_retry(), max_delay_ms=50)
    queries = ["a", "b", "bad", "d", "e", "f"]
    results = drive.at_once([lambda q=q: client.recommend(q) for q in queries])
    assert isinstance(results[2], InvalidRequest)
    assert [r[0].item_id for i, r in enumerate(results) if i != 2] == ["a", "b", "d", "e", "f"]
    assert max(len(sent) for sent, _ in client._triton.calls) > 1
    drive(lambda: client.close())


def test_identical_concurrent_embeds_are_fetched_once(drive):
    client = drive.client(drive.fake(delay=0.05))  # long enough for the other callers to find the flight
    vectors = drive.at_once([lambda: client.embed(["same text"]) for _ in range(4)])
    assert [v.shape for v in vectors] == [(1, 4)] * 4 and len(client._triton.calls) == 1


def test_a_deadline_bounds_a_micro_batched_call(drive):
    client = drive.client(drive.fake(delay=0.5), max_delay_ms=1)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        drive(lambda: client.recommend("q", timeout_s=0.05))
    assert time.monotonic() - start < 0.45


CLOSED_CALLS = {
    "recommend": lambda c: c.recommend("q"),
    "recommend_many": lambda c: c.recommend_many([{"query": "q"}]),
    "embed": lambda c: c.embed(["q"]),
    "is_live": lambda c: c.is_live(),
    "is_ready": lambda c: c.is_ready(),
    "wait_ready": lambda c: c.wait_ready(1.0),
    "model_config": lambda c: c.model_config(),
}


@pytest.mark.parametrize("method", sorted(CLOSED_CALLS))
def test_a_closed_client_raises_client_closed_with_one_message(drive, method):
    client = drive.client(recommend_cache_size=10, max_delay_ms=1)
    drive(lambda: client.recommend("q"))  # cached now: even a hit must not answer once closed
    drive(lambda: client.close())
    drive(lambda: client.close())  # closing twice is fine
    with pytest.raises(ClientClosed) as raised:
        drive(lambda: CLOSED_CALLS[method](client))
    assert str(raised.value) == "the client of 127.0.0.1:1 is closed; calling it after close() is a bug"
    assert isinstance(raised.value, RuntimeError) and not raised.value.retryable
    if method.startswith("recommend") or method == "embed":
        assert drive.last_call(client).error == "ClientClosed"


def test_leaving_the_with_block_closes_the_client():
    with RecClient("127.0.0.1:1") as client:
        client._triton = FakeTriton()
    with pytest.raises(ClientClosed):
        client.recommend("q")

    async def main():
        async with AsyncRecClient("127.0.0.1:1") as aclient:
            aclient._triton = AsyncFakeTriton()
        with pytest.raises(ClientClosed):
            await aclient.recommend("q")
        with pytest.raises(ClientClosed):
            await aclient.connect()

    asyncio.run(main())


def test_a_micro_batcher_refuses_rows_once_closed():
    batcher = ThreadBatcher(lambda group: None, max_batch=4, max_delay_s=0.01, group_key=lambda item: 0)
    batcher.close()
    with pytest.raises(ClientClosed):
        batcher.submit(Pending(1, Deadline(1), concurrent.futures.Future()))


def test_window_says_when_it_is_full_and_splits_by_signature():
    window = Window(3, group_key=lambda item: item.request % 2)
    items = [Pending(i, Deadline(1), None) for i in range(3)]
    assert [window.add(item) for item in items] == [False, False, True] and len(window) == 3
    assert [[item.request for item in group] for group in window.take()] == [[0, 2], [1]]
    assert len(window) == 0


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
