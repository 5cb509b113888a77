"""Shopper state in Redis: the append-only event log and each shopper's most recent events.

``track`` writes here and ``rerank`` reads here; both find the store at ``AISLE_STATE_URL``
(``redis://HOST:PORT[/DB]``), which ``aisle serve`` sets for the tritonserver it starts.

Key layout (one Redis database; ``PREFIX`` = ``aisle:``):

===========================  ===================================================================
``aisle:events``             Stream: the event log, append-only, one entry per stored event
                             (fields ``event_id user_id item_id event_type ts properties``);
                             ``aisle events export`` drains it into an interaction log file.
``aisle:user:{user_id}``     Sorted set: the shopper's most recent ``max_user_events`` events,
                             score ``ts``, member ``["event_id", "item_id", "event_type"]`` (JSON);
                             expires ``user_ttl_s`` after the shopper's last event.
``aisle:event:{event_id}``   String: the stream id the event was stored under; expires after
                             ``dedupe_ttl_s``. While it exists the same event id is not stored
                             again (idempotent ``track``, safe client retries).
===========================  ===================================================================

A batch of events is one Lua script call (``TRACK_SCRIPT``): per event the idempotency check, the
stream entry and the shopper's sorted set change together, and with ``appendfsync always`` the
batch shares one fsync. Every Redis failure becomes ``StateUnavailable``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aisle_contract import LOG_ONLY_EVENT_TYPES

from .errors import StateUnavailable

LOG = logging.getLogger("aisle.state")

#: The environment variable that names the state store (``redis://HOST:PORT``) to the models.
STATE_URL_ENV = "AISLE_STATE_URL"
PREFIX = "aisle:"
STREAM_KEY = f"{PREFIX}events"

#: (item_id, ts, event_type): one stored event as ``rerank`` reads it, oldest first.
StoredEvent = tuple[str, float, str]


def user_key(user_id: str) -> str:
    return f"{PREFIX}user:{user_id}"


def event_key(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


@dataclass(frozen=True)
class Event:
    """One validated event, as ``track`` stores it."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: float
    properties: str = ""  # compact JSON object, or "" for none


@dataclass(frozen=True)
class StateSettings:
    """The ``track`` model's config ``parameters`` that shape what is kept."""

    max_user_events: int = 200  # events kept per shopper (rerank reads the newest ``state_events``)
    user_ttl_s: int = 90 * 24 * 3600  # a shopper's events expire this long after their last one
    dedupe_ttl_s: int = 7 * 24 * 3600  # the same event id within this window is stored once
    timeout_s: float = 0.5  # per Redis command; a slow store must not stall a recommend

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> StateSettings:
        settings = cls(
            max_user_events=int(parameters.get("max_user_events", cls.max_user_events)),
            user_ttl_s=int(parameters.get("user_ttl_s", cls.user_ttl_s)),
            dedupe_ttl_s=int(parameters.get("dedupe_ttl_s", cls.dedupe_ttl_s)),
            timeout_s=float(parameters.get("state_timeout_s", cls.timeout_s)),
        )
        for name in ("max_user_events", "user_ttl_s", "dedupe_ttl_s", "timeout_s"):
            value = getattr(settings, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be > 0")
        return settings


# KEYS: the stream, then per event its event key and its user key.
# ARGV: dedupe_ttl_s max_user_events user_ttl_s, then per event event_id user_id item_id event_type ts
#       properties member. Returns per event {stored (1/0), stream id}. An empty member (a log-only
#       event type: exposures) goes to the stream only, not to the shopper's history. One script call
#       for a whole batch: the per-command cost of the client and the server is paid once, not per event.
TRACK_SCRIPT = """
local out = {}
for i = 1, (#KEYS - 1) / 2 do
  local event_key, user_key, a = KEYS[2 * i], KEYS[2 * i + 1], 3 + (i - 1) * 7
  local existing = redis.call('GET', event_key)
  if existing then
    out[i] = {0, existing}
  else
    local id = redis.call('XADD', KEYS[1], '*', 'event_id', ARGV[a + 1], 'user_id', ARGV[a + 2],
                          'item_id', ARGV[a + 3], 'event_type', ARGV[a + 4], 'ts', ARGV[a + 5],
                          'properties', ARGV[a + 6])
    redis.call('SET', event_key, id, 'EX', ARGV[1])
    if ARGV[a + 7] ~= '' then
      redis.call('ZADD', user_key, ARGV[a + 5], ARGV[a + 7])
      redis.call('ZREMRANGEBYRANK', user_key, 0, -(tonumber(ARGV[2]) + 1))
      redis.call('EXPIRE', user_key, ARGV[3])
    end
    out[i] = {1, id}
  end
end
return out
"""


def connect(url: str, timeout_s: float = StateSettings.timeout_s) -> Any:
    """A ``redis.Redis`` for ``url``: short timeouts, one immediate retry (a pooled connection
    that a Redis restart closed is replaced), strings decoded."""
    import redis  # aisle[server]
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )


class ShopperState:
    """Writes and reads of the state store; every Redis error is raised as ``StateUnavailable``."""

    def __init__(self, url: str, settings: StateSettings | None = None, client: Any = None):
        self.url = url
        self.settings = settings or StateSettings()
        self.redis = client if client is not None else connect(url, self.settings.timeout_s)
        self._track = self.redis.register_script(TRACK_SCRIPT)

    @classmethod
    def from_environment(cls, settings: StateSettings | None = None) -> ShopperState | None:
        url = os.environ.get(STATE_URL_ENV, "").strip()
        return cls(url, settings) if url else None

    def store(self, events: Sequence[Event]) -> list[bool]:
        """Store ``events`` (one script call); per event, True if stored now, False if its id was stored before."""
        import redis

        s = self.settings
        if not events:
            return []
        keys = [STREAM_KEY]
        args: list[object] = [s.dedupe_ttl_s, s.max_user_events, s.user_ttl_s]
        for e in events:
            member = json.dumps([e.event_id, e.item_id, e.event_type], ensure_ascii=False)
            if e.event_type in LOG_ONLY_EVENT_TYPES:
                member = ""  # the event log only: never the shopper's history
            keys += [event_key(e.event_id), user_key(e.user_id)]
            args += [e.event_id, e.user_id, e.item_id, e.event_type, repr(float(e.ts)), e.properties, member]
        try:
            replies = self._track(keys=keys, args=args)
        except redis.RedisError as exc:
            raise StateUnavailable(f"state store {self.url} unavailable: {type(exc).__name__}: {exc}") from exc
        return [int(reply[0]) == 1 for reply in replies]

    def recent(self, user_ids: Sequence[str], n: int) -> dict[str, list[StoredEvent]]:
        """Each distinct non-empty user's newest ``n`` events, oldest first (one pipeline)."""
        import redis

        users = [u for u in dict.fromkeys(user_ids) if u]
        if not users or n <= 0:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for user in users:
            pipe.zrange(user_key(user), -n, -1, withscores=True)
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StateUnavailable(f"state store {self.url} unavailable: {type(exc).__name__}: {exc}") from exc
        out: dict[str, list[StoredEvent]] = {}
        for user, pairs in zip(users, replies):
            events = []
            for member, score in pairs:
                _, item_id, event_type = json.loads(member)
                events.append((str(item_id), float(score), str(event_type)))
            out[user] = events
        return out

    def check_durability(self) -> str | None:
        """A warning when the store does not fsync every write (an acknowledged event could be lost)."""
        import redis

        try:
            config = self.redis.config_get("append*")
        except redis.RedisError:
            return None  # CONFIG may be renamed or disabled on a managed Redis: nothing to say
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            return (
                f"state store {self.url} has appendonly={config.get('appendonly')} "
                f"appendfsync={config.get('appendfsync')}: acknowledged events can be lost on a crash "
                "(want appendonly yes, appendfsync always)"
            )
        return None


def read_stream(
    client: Any, key: str, after: str | None = None, count: int = 10_000
) -> list[tuple[str, dict[str, str]]]:
    """Every entry of stream ``key`` now (after the id ``after``; None: from the start), oldest first."""
    entries: list[tuple[str, dict[str, str]]] = []
    start = "-" if after is None else f"({after}"  # "(": exclusive
    while True:
        batch = client.xrange(key, min=start, max="+", count=count)
        entries.extend(batch)
        if len(batch) < count:
            return entries
        start = f"({batch[-1][0]}"


def next_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id``."""
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def drain_stream(client: Any, count: int = 10_000) -> tuple[list[dict[str, str]], str | None]:
    """Every entry of the event log now, oldest first, and the id of the last (None: empty)."""
    entries = read_stream(client, STREAM_KEY, None, count)
    return [fields for _, fields in entries], (entries[-1][0] if entries else None)


def trim_through(client: Any, last_id: str) -> int:
    """Delete the log's entries up to and including ``last_id`` (entries added since stay)."""
    return int(client.xtrim(STREAM_KEY, minid=next_id(last_id), approximate=False))  # exact, not "~"


class StateReads:
    """``rerank``'s reader: with the store down, a row keeps only its request's own history.

    A failure is counted (``failures``, and ``on_failure`` — the ``aisle_state_read_failures_total``
    metric inside Triton) and logged once, until a read succeeds again (logged too). Every read,
    failed or not, reports its seconds to ``on_lookup`` (``metrics.StateLookups.observe``).
    """

    def __init__(self, state: ShopperState, on_failure: Any = None, on_lookup: Any = None, clock: Any = None):
        self.state = state
        self.on_failure = on_failure
        self.on_lookup = on_lookup
        self.clock = clock or time.perf_counter
        self.failures = 0
        self.down = False

    def _recent(self, user_ids: Sequence[str], n: int) -> dict[str, list[StoredEvent]]:
        began = self.clock()
        try:
            return self.state.recent(user_ids, n)
        finally:
            if self.on_lookup is not None:
                self.on_lookup(self.clock() - began)

    def __call__(self, user_ids: Sequence[str], n: int) -> dict[str, list[StoredEvent]]:
        try:
            found = self._recent(user_ids, n)
        except StateUnavailable as exc:
            self.failures += 1
            if self.on_failure is not None:
                self.on_failure()
            if not self.down:
                self.down = True
                LOG.warning("%s; recommend answers from each request's own history until it is back", exc)
            return {}
        if self.down:
            self.down = False
            LOG.warning("state store %s is back after %d failed reads", self.state.url, self.failures)
        return found
