"""Shopper state in Redis: the append-only event log and each shopper's most recent events.

``track`` writes here and ``rerank`` reads here; both find the store at ``AISLE_STATE_URL``
(``redis://HOST:PORT[/DB]`` or ``redis-cluster://HOST:PORT,…``: ``aisle_server.state_url``), which
``aisle serve`` sets for the tritonserver it starts.

Keys (``aisle_server.state_keys``; on one Redis with one shard, the names below):

===========================  ===================================================================
``aisle:events``             Stream: the event log, append-only, one entry per stored event
                             (fields ``event_id user_id item_id event_type ts properties``);
                             ``aisle events export`` drains it into an interaction log file.
                             Split into ``shards`` streams by shopper on a cluster.
``aisle:user:{user_id}``     Sorted set: the shopper's most recent ``max_user_events`` events,
                             score ``ts``, member ``["event_id", "item_id", "event_type"]`` (JSON);
                             expires ``user_ttl_s`` after the shopper's last event.
``aisle:event:{event_id}``   String: the stream id the event was stored under; expires after
                             ``dedupe_ttl_s``. While it exists the same event id (of the same
                             shopper) is not stored again (idempotent ``track``, safe retries).
===========================  ===================================================================

The events of one shopper shard are one Lua script call (``TRACK_SCRIPT``): per event the
idempotency check, the stream entry and the shopper's sorted set change together, in one hash slot,
and with ``appendfsync always`` the batch shares one fsync. With ``replicas`` in the URL the call is
acknowledged only once that many replicas have it (``aisle_server.state_writes``). Every Redis
failure becomes ``StateUnavailable``.
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
from .state_keys import LEGACY, KeyLayout
from .state_url import connect, parse_state_url, store_errors
from .state_writes import SlotWrites

LOG = logging.getLogger("aisle.state")

#: The environment variable that names the state store (``redis://HOST:PORT``) to the models.
STATE_URL_ENV = "AISLE_STATE_URL"
#: The single-node layout's event log (``state_keys.LEGACY``).
STREAM_KEY = LEGACY.event_stream(0)

#: (item_id, ts, event_type): one stored event as ``rerank`` reads it, oldest first.
StoredEvent = tuple[str, float, str]


def user_key(user_id: str) -> str:
    """A shopper's sorted set in the single-node layout."""
    return LEGACY.user_key(user_id)


def event_key(event_id: str) -> str:
    """An event id's dedupe key in the single-node layout."""
    return LEGACY.event_key("", event_id)


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
    -- written again (same value and TTL) so that this call's WAIT also covers the first write
    redis.call('SET', event_key, existing, 'KEEPTTL')
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


class ShopperState:
    """Writes and reads of the state store; every Redis error is raised as ``StateUnavailable``."""

    def __init__(self, url: str, settings: StateSettings | None = None, client: Any = None):
        self.spec = parse_state_url(url)
        self.url = self.spec.shown  # the password masked
        self.layout = KeyLayout.of(self.spec.shards, self.spec.cluster)
        self.settings = settings or StateSettings()
        self.redis = client if client is not None else connect(url, self.settings.timeout_s)
        self.writes = SlotWrites(self.redis, self.spec)

    @classmethod
    def from_environment(cls, settings: StateSettings | None = None) -> ShopperState | None:
        url = os.environ.get(STATE_URL_ENV, "").strip()
        return cls(url, settings) if url else None

    def store(self, events: Sequence[Event]) -> list[bool]:
        """Store ``events`` (one script call per shopper shard); per event, True if stored now,
        False if its id was stored before. ``StateUnavailable``: none of them is acknowledged."""
        s, layout = self.settings, self.layout
        if not events:
            return []
        by_shard: dict[int, list[int]] = {}
        for i, e in enumerate(events):
            by_shard.setdefault(layout.user_shard(e.user_id), []).append(i)
        calls = []
        for shard, indices in by_shard.items():
            keys = [layout.event_stream(shard)]
            args: list[object] = [s.dedupe_ttl_s, s.max_user_events, s.user_ttl_s]
            for e in (events[i] for i in indices):
                member = json.dumps([e.event_id, e.item_id, e.event_type], ensure_ascii=False)
                if e.event_type in LOG_ONLY_EVENT_TYPES:
                    member = ""  # the event log only: never the shopper's history
                keys += [layout.event_key(e.user_id, e.event_id), layout.user_key(e.user_id)]
                args += [e.event_id, e.user_id, e.item_id, e.event_type, repr(float(e.ts)), e.properties, member]
            calls.append((TRACK_SCRIPT, keys, args))
        replies = self.writes.run_many(calls)
        stored = [False] * len(events)
        for indices, reply in zip(by_shard.values(), replies):
            for i, one in zip(indices, reply):
                stored[i] = int(one[0]) == 1
        return stored

    def recent(self, user_ids: Sequence[str], n: int) -> dict[str, list[StoredEvent]]:
        """Each distinct non-empty user's newest ``n`` events, oldest first (one pipeline)."""
        users = [u for u in dict.fromkeys(user_ids) if u]
        if not users or n <= 0:
            return {}
        try:
            pipe = self.redis.pipeline(transaction=False)
            for user in users:
                pipe.zrange(self.layout.user_key(user), -n, -1, withscores=True)
            replies = pipe.execute()
        except store_errors() as exc:
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
        """A warning when an acknowledged event could be lost: a node that does not fsync every
        write, or a cluster whose writes are acknowledged before a replica has them."""
        import redis

        try:
            nodes = [node.redis_connection for node in self.redis.get_nodes()] if self.spec.cluster else [self.redis]
        except store_errors():
            return None  # unreachable now: the first write will say so
        warnings = []
        if self.spec.cluster and self.spec.replicas == 0:
            warnings.append("replicas=0: an event acknowledged by a master that dies before replicating it is lost")
        for node in nodes:
            try:
                config = node.config_get("append*")
            except redis.RedisError:
                continue  # CONFIG may be renamed or disabled on a managed Redis: nothing to say
            if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
                warnings.append(
                    f"appendonly={config.get('appendonly')} appendfsync={config.get('appendfsync')}: "
                    "acknowledged events can be lost on a crash (want appendonly yes, appendfsync always)"
                )
                break
        return f"state store {self.url} has " + "; ".join(warnings) if warnings else None


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


def read_streams(
    client: Any, after: dict[str, str | None], count: int = 10_000
) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Every entry of each stream now, after its id (None: from the start), oldest first per stream.

    The first page of every stream is one pipeline (a cluster client sends one per master); a
    stream with more than ``count`` new entries is paged on its own.
    """
    keys = list(after)
    if len(keys) == 1:
        return {keys[0]: read_stream(client, keys[0], after[keys[0]], count)}
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.xrange(key, min="-" if after[key] is None else f"({after[key]}", max="+", count=count)
    out = {}
    for key, batch in zip(keys, pipe.execute()):
        entries = list(batch)
        if len(batch) == count:
            entries += read_stream(client, key, batch[-1][0], count)
        out[key] = entries
    return out


def stream_order(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def drain_streams(client: Any, keys: Sequence[str], count: int = 10_000) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Every entry of the event log's streams now, and the id of each stream's last entry read
    (streams that were empty are left out). Entries are in stream-id order, which keeps each
    stream's — each shopper's — own order."""
    read = read_streams(client, dict.fromkeys(keys), count)
    marks = {key: entries[-1][0] for key, entries in read.items() if entries}
    merged = sorted((entry for entries in read.values() for entry in entries), key=lambda e: stream_order(e[0]))
    return [fields for _, fields in merged], marks


def drain_stream(
    client: Any, count: int = 10_000, layout: KeyLayout = LEGACY
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """Every entry of the event log (all of ``layout``'s shards) now, oldest first, and each shard's mark."""
    return drain_streams(client, layout.event_streams(), count)


def trim_through(client: Any, marks: dict[str, str]) -> int:
    """Delete each stream's entries up to and including its mark (entries added since stay)."""
    return sum(int(client.xtrim(key, minid=next_id(last), approximate=False)) for key, last in marks.items())


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
