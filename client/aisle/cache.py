"""Client-side result caches (LRU + TTL, cachetools) and single-flight bookkeeping.

Why in the client: a cache hit answers in microseconds without a network hop, and identical
concurrent misses (a hot query arriving from many threads at once) become one server call.
Triton's own response cache (``response_cache`` in the model configs) still helps across many
clients; this one removes the round trip.

``ResultCache`` is thread-safe (one lock around cachetools' ``TTLCache``, which is not); the
asyncio client uses it from one thread, where the uncontended lock costs well under a microsecond.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

from .errors import InvalidRequest, ServerUnavailable
from .requests import RecommendRequest

V = TypeVar("V")
F = TypeVar("F")
_MISSING = object()


@dataclass(frozen=True)
class CacheStats:
    """A snapshot: entries now held, capacity, time to live, and counters since creation/clear."""

    size: int
    maxsize: int
    ttl_s: float
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ResultCache(Generic[V]):
    """A bounded LRU cache whose entries also expire ``ttl_s`` after they were stored."""

    def __init__(self, maxsize: int, ttl_s: float, timer: Callable[[], float] = time.monotonic) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise InvalidRequest(f"cache maxsize must be an int >= 1, got {maxsize!r}")
        if not (isinstance(ttl_s, (int, float)) and math.isfinite(ttl_s) and ttl_s > 0):
            raise InvalidRequest(f"cache ttl_s must be a finite number > 0, got {ttl_s!r}")
        self.maxsize = maxsize
        self.ttl_s = float(ttl_s)
        self._data: TTLCache[Hashable, V] = TTLCache(maxsize=maxsize, ttl=ttl_s, timer=timer)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | object:
        """The cached value, or ``MISSING``; counts a hit or a miss."""
        with self._lock:
            value: V | object = self._data.get(key, _MISSING)
            if value is _MISSING:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._data[key] = value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def stats(self) -> CacheStats:
        with self._lock:
            self._data.expire()
            return CacheStats(len(self._data), self.maxsize, self.ttl_s, self.hits, self.misses)

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


MISSING = _MISSING


def _bucket(value: float, bucket_s: float) -> int:
    return math.floor(value / bucket_s)


def recommend_key(request: RecommendRequest, bucket_s: float) -> tuple[Any, ...]:
    """The cache key of a ``recommend`` request: equal for requests that must get the same answer.

    - the query with whitespace runs collapsed and ends stripped (the tokenizer splits on
      whitespace, and a whitespace-only query means "no query" to the server);
    - history timestamps and ``now`` in ``bucket_s`` buckets, so the same history replayed a
      second later (recency weights move by a negligible amount) still hits. A stamp right at a
      bucket boundary can miss — a miss, never a wrong answer beyond that tolerance.
    """
    query = " ".join(request.text.split())
    history = tuple(
        (item[0], _bucket(item[1], bucket_s), *item[2:])  # the event type, when given, stays
        for item in request.items
    )
    now = None if request.now is None else _bucket(request.now, bucket_s)
    filters = (request.exclude_ids, request.allow_categories, request.deny_categories)
    return ("recommend", request.model, query, history, request.k, now, filters, request.ranking, request.explain)


def embed_key(tower: str, text: str) -> tuple[str, str]:
    """Embeddings are deterministic per (tower, exact text): no normalization, nothing to go stale."""
    return (tower, text)


class Flights(Generic[F]):
    """Identical concurrent misses share one server call ("single flight").

    ``claim(key)`` returns ``(future, True)`` to the first caller (the leader, who must resolve
    the future and ``release`` the key) and ``(future, False)`` to everyone who arrives while it is
    in flight. The future type comes from ``new_future`` (``concurrent.futures.Future`` for threads,
    ``loop.create_future`` for asyncio), which is the only difference between the two clients.
    """

    def __init__(self, new_future: Callable[[], F]) -> None:
        self._new_future = new_future
        self._flights: dict[Hashable, F] = {}
        self._lock = threading.Lock()

    def claim(self, key: Hashable) -> tuple[F, bool]:
        with self._lock:
            future = self._flights.get(key)
            if future is not None:
                return future, False
            future = self._flights[key] = self._new_future()
            return future, True

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._flights.pop(key, None)

    def __len__(self) -> int:
        return len(self._flights)


def fail_waiters(future: Any, error: BaseException) -> None:
    """Hand a failed leader's error to whoever waits on its flight's ``future``.

    A leader stopped by cancellation or an interrupt hands them ``ServerUnavailable`` instead
    (asyncio futures refuse ``BaseException``s, and the call itself did not fail). The exception is
    marked retrieved, since every follower may have gone already.
    """
    if future.done():
        return
    future.set_exception(error if isinstance(error, Exception) else ServerUnavailable("call cancelled"))
    future.exception()
