"""One behaviour, two drivers: every scenario runs against ``RecClient`` and ``AsyncRecClient`` on the real server.

Each test is written once and parametrized over a sync and an asyncio driver (pytriton runs its
functional scenarios against its sync and async clients the same way). The answers are compared
with the session's sync ``client``, so a drift between the two clients fails here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from aisle import AsyncRecClient, DeadlineExceeded, InvalidRequest, RecClient, RecommendRequest
from aisle.errors import ClientClosed

pytestmark = pytest.mark.integration
NOW = 1_700_000_000.0
HISTORY = [("50", NOW - 7200.0), ("181", NOW - 600.0)]  # Star Wars, Return of the Jedi


class Calls:
    """A client's methods as plain calls that return their results, whichever client it is."""

    def __init__(self, driver: Driver, client: RecClient | AsyncRecClient) -> None:
        self.client = client
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        attr = self._driver.context.run(getattr, self.client, name)  # last_call reads the driver's context
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self._driver(lambda: attr(*args, **kwargs))


class Driver:
    """Opens a client of one kind and runs calls on it: directly, or awaited on one event loop.

    Every call runs in one ``contextvars.Context``, so ``last_call`` means the same for both kinds.
    """

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.context = contextvars.copy_context()

    def __call__(self, call: Callable[[], Any]) -> Any:
        result = self.context.run(call)
        if inspect.isawaitable(result):
            return self.loop.run_until_complete(self.loop.create_task(result, context=self.context))
        return result

    @contextlib.contextmanager
    def open(self, **options: Any) -> Iterator[Calls]:
        """A client as its users hold one: ``with RecClient(...)`` or ``async with AsyncRecClient(...)``."""
        options.setdefault("timeout_s", 30)
        if self.kind == "sync":
            with RecClient(self.url, **options) as client:
                yield Calls(self, client)
            return
        client = AsyncRecClient(self.url, **options)
        self(client.__aenter__)
        try:
            yield Calls(self, client)
        finally:
            self(lambda: client.__aexit__(None, None, None))

    def at_once(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Results of ``calls`` made concurrently: threads for the sync client, tasks for the asyncio one."""
        if self.kind == "async":

            async def gather() -> list[Any]:
                return await asyncio.gather(*(call() for call in calls))

            return self(gather)
        barrier = threading.Barrier(len(calls))

        def one(call: Callable[[], Any]) -> Any:
            barrier.wait()
            return self.context.copy().run(call)

        with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(one, calls))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=["sync", "async"])
def drive(request, server) -> Iterator[Driver]:
    driver = Driver(request.param, server.grpc_url)
    yield driver
    driver.close()


def ids(recs) -> list[str]:
    return [r.item_id for r in recs]


def assert_same(got, want) -> None:
    """Equal answers; scores may move in the last float bits between batch shapes, so exact ties may swap."""
    assert len(got) == len(want) and got.unknown_history == want.unknown_history
    for a, b in zip(got, want, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-4)
        assert a.item_id == b.item_id or math.isclose(a.score, b.score, abs_tol=1e-5)


def successes(calls: Calls, model: str, expect: int | None = None) -> int:
    """Triton's success count of ``model`` once it settles (an ensemble's statistics may trail its
    answer by a moment): equal to ``expect``, or, without one, unchanged over 0.1 s."""
    count = None
    for _ in range(50):
        stats = calls.inference_statistics(model)["model_stats"][0]["inference_stats"]["success"]
        count, last = int(stats.get("count", 0)), count
        if count == (last if expect is None else expect):
            break
        time.sleep(0.1)
    return count


# -- answers --------------------------------------------------------------------------------------------


def test_search_answers_like_the_reference_client(drive, client):
    with drive.open() as calls:
        recs = calls.recommend(query="star wars", k=5, now=NOW)
        assert calls.last_call.method == "recommend" and calls.last_call.attempts == 1
    assert len(recs) == 5 and recs.unknown_history == 0
    assert all(a.score >= b.score for a, b in itertools.pairwise(recs))
    assert_same(recs, client.recommend(query="star wars", k=5, now=NOW))


def test_a_feed_from_history_never_recommends_the_history_and_counts_unknown_ids(drive, client):
    with drive.open() as calls:
        feed = calls.recommend(history=HISTORY, k=8, now=NOW)
        with_unknown = calls.recommend(history=[*HISTORY, ("no-such-item", NOW - 60.0)], k=8, now=NOW)
    assert len(feed) == 8 and not {"50", "181"} & set(ids(feed))
    assert with_unknown.unknown_history == 1
    assert_same(feed, client.recommend(history=HISTORY, k=8, now=NOW))


def test_recommend_many_answers_each_row_in_order(drive, client):
    rows = [
        RecommendRequest("toy story", (), 3, now=NOW),
        {"query": "alien", "k": 4, "now": NOW},
        {"history": HISTORY, "k": 5, "now": NOW},
        {"query": "fargo", "k": 2},  # no NOW: a Triton request of its own
    ]
    with drive.open() as calls:
        got = calls.recommend_many(rows)
    assert [len(r) for r in got] == [3, 4, 5, 2]
    for row, answer in zip(rows, got, strict=True):
        kwargs = row if isinstance(row, dict) else {"query": row.query, "k": row.k, "now": row.now}
        assert_same(answer, client.recommend(**kwargs))


def test_embed_gives_normalized_vectors_of_either_tower(drive, client):
    texts = ["red running shoes", "a space opera"]
    with drive.open() as calls:
        query = calls.embed(texts)
        before = successes(calls, "embed_item")
        item = calls.embed(texts, tower="item")
        assert successes(calls, "embed_item", before + 1) == before + 1  # the item tower's own ensemble answered
    assert query.shape == item.shape == (2, 384) and query.dtype == item.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(query, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(query, client.embed(texts), atol=1e-5)
    np.testing.assert_allclose(item, client.embed(texts, tower="item"), atol=1e-5)


def test_ranking_options_apply_per_request(drive, client):
    plain = client.recommend(query="star wars", k=10)
    with drive.open() as calls:
        diverse = calls.recommend(query="star wars", k=10, diversity=0.8, diversity_method="mmr")
        filtered = calls.recommend(query="star wars", k=5, exclude_ids=[plain[0].item_id], deny_categories=["Horror"])
        dense = calls.recommend(query="godfather", k=5, search_mode="dense")
    assert ids(diverse) == ids(client.recommend(query="star wars", k=10, diversity=0.8, diversity_method="mmr"))
    assert ids(diverse) != ids(plain)
    assert plain[0].item_id not in ids(filtered) and len(filtered) == 5
    assert ids(dense) == ids(client.recommend(query="godfather", k=5, search_mode="dense"))


# -- caches and concurrency -----------------------------------------------------------------------------


def test_cache_hits_skip_the_server(drive):
    with drive.open(recommend_cache_size=100) as calls:
        before = successes(calls, "recommend")
        first = calls.recommend("parity cache " + drive.kind, HISTORY, k=5, now=NOW)
        assert calls.last_call.cache == "miss"
        older = [(item, ts - 1.0) for item, ts in HISTORY]  # the same history, a second older
        second = calls.recommend("  parity  cache " + drive.kind, older, k=5, now=NOW + 1.0)
        assert calls.last_call.cache == "hit" and calls.last_call.attempts == 0
        assert second == first and second is not first
        assert successes(calls, "recommend", before + 1) == before + 1
        calls.recommend("parity cache " + drive.kind, HISTORY, k=5, now=NOW, cache=False)
        assert calls.last_call.cache == "bypass" and successes(calls, "recommend", before + 2) == before + 2

        texts = [f"cached text {drive.kind}", f"another {drive.kind}"]
        calls.embed(texts)
        again = calls.embed(texts[::-1])
        assert calls.last_call.cache == "hit" and again.shape == (2, 384)
        stats = calls.cache_stats()
        assert (stats["recommend"].hits, stats["recommend"].misses) == (1, 1) and stats["embed"].hits == 2


def test_identical_concurrent_misses_make_one_server_call(drive):
    with drive.open(recommend_cache_size=100) as calls:
        before = successes(calls, "recommend")
        query = f"single flight {drive.kind}"
        results = drive.at_once([lambda: calls.client.recommend(query, k=4, now=NOW) for _ in range(8)])
        assert all(r == results[0] for r in results) and len(results[0]) == 4
        assert successes(calls, "recommend", before + 1) == before + 1


def test_micro_batched_callers_get_their_own_rows(drive, client):
    queries = [f"{title} {i}" for i, title in enumerate(["heat", "jaws", "alien", "fargo"] * 4)]
    seen = []
    with drive.open(max_delay_ms=5, max_batch=8, on_call=seen.append) as calls:
        got = drive.at_once([lambda q=q: calls.client.recommend(q, k=3, now=NOW) for q in queries])
    for query, answer in zip(queries, got, strict=True):
        assert_same(answer, client.recommend(query, k=3, now=NOW))
    assert max(info.batch_rows for info in seen) > 1, "no call was micro-batched"


# -- errors and lifecycle -------------------------------------------------------------------------------


class NoNetwork:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"network call {name} for an invalid request")


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda c: c.recommend(query="shoes", k=0), "k"),
        (lambda c: c.recommend(query=b"bytes"), "query"),
        (lambda c: c.recommend(history=[("a", math.nan)]), r"history\[0\] timestamp"),
        (lambda c: c.recommend(query="x", now=math.inf), "now"),
        (lambda c: c.recommend(query="x", timeout_s=-1), "timeout_s"),
        (lambda c: c.recommend(query="x", diversity=2.0), "diversity"),
        (lambda c: c.recommend(query="x", exclude_ids="abc"), "exclude_ids"),
        (lambda c: c.recommend_many([{"query": "x"}, {"query": "y", "k": 0}]), r"requests\[1\]: k"),
        (lambda c: c.embed("not a list"), "texts"),
        (lambda c: c.embed(["ok", "\ud800"]), r"texts\[1\]"),
        (lambda c: c.embed(["x"], tower="bogus"), "tower"),
    ],
)
def test_invalid_input_is_refused_before_any_network_call_naming_the_field(drive, call, field):
    with drive.open(recommend_cache_size=10, max_delay_ms=1) as calls:
        calls.client._triton, real = NoNetwork(), calls.client._triton
        try:
            with pytest.raises(InvalidRequest, match=field):
                call(calls)
            assert calls.last_call.error == "InvalidRequest"
        finally:
            calls.client._triton = real


def test_a_deadline_shorter_than_the_work_raises_deadline_exceeded_on_time(drive):
    # The item tower: the work the server finishes after the caller gave up must not move the
    # query tower's counters that other SDK tests read.
    texts = [" ".join(f"word{i}x{j}{drive.kind}" for j in range(200)) for i in range(64)]  # 64 texts of 256 tokens
    with drive.open() as calls:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            calls.embed(texts, tower="item", timeout_s=0.05, cache=False)
        assert time.monotonic() - start < 0.05 + 1.0
        assert calls.last_call.error == "DeadlineExceeded"
        assert calls.embed(["still serving"], tower="item", cache=False).shape == (1, 384)  # queued behind it


def test_a_closed_client_raises_client_closed_with_the_same_message(drive, server):
    with drive.open(recommend_cache_size=10) as calls:
        calls.recommend(query="closing soon", k=2)
        drive(calls.client.close)
        drive(calls.client.close)  # twice is fine
        for call in (
            lambda: calls.recommend(query="closing soon", k=2),  # even a cache hit
            lambda: calls.recommend_many([{"query": "x"}]),
            lambda: calls.embed(["x"]),
            lambda: calls.is_live(),
            lambda: calls.model_metadata(),
        ):
            with pytest.raises(ClientClosed) as raised:
                call()
            assert str(raised.value) == f"the client of {server.grpc_url} is closed; calling it after close() is a bug"
            assert not raised.value.retryable and isinstance(raised.value, RuntimeError)


def test_leaving_the_with_block_closes_the_client(drive):
    with drive.open(max_delay_ms=1) as calls:
        assert calls.is_live() and calls.is_ready()
        assert len(calls.recommend(query="toy story", k=2)) == 2
    with pytest.raises(ClientClosed):
        calls.recommend(query="toy story", k=2)
    with pytest.raises(ClientClosed):
        calls.wait_ready(1.0)
