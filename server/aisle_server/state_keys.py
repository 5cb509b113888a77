"""Where each piece of state lives: key names that work on one Redis and on a Redis Cluster.

A Redis Cluster keeps every key in one of 16384 hash slots, and a Lua script or a MULTI may only
touch keys of one slot. ``track`` writes a shopper's event to the event log, to the shopper's
recent events and to the event id's dedupe key in one script, and ``update_items`` writes a change
to the change log and the item's merged fields in one script; so the logs are split into
``shards`` streams and every key a write touches carries its shard's hash tag (``{…}``):

======================================  ===========================================================
``aisle:{T}:events``                    Stream: the event log of shard T's shoppers
``aisle:{T}:user:{user_id}``            Sorted set: a shopper's recent events (``aisle_server.state``)
``aisle:{T}:event:{event_id}``          String: an event id's dedupe key (T: its shopper's shard)
``aisle:{T}:catalog``                   Stream: the change log of shard T's items
``aisle:{T}:catalog:items``             Hash: shard T's items' merged fields (``live_catalog``)
======================================  ===========================================================

A shopper's shard is ``crc32(user_id) % shards``, an item's ``crc32(item_id) % shards``: all of a
shopper's events are in one stream in the order they were stored, and so are all of an item's
changes — the order every reader needs, per key. The tags are chosen so that the shards' slots are
evenly spaced over 0…16383: ``redis-cli --cluster create`` gives each master an even range of
slots, so the shards spread evenly over the masters. A shard is the unit a cluster moves between
masters: ``shards`` bounds how many masters the state can spread over (16 by default).

With ``shards=1`` on one Redis the keys are the names Aisle has always used (``aisle:events``,
``aisle:user:ID``, ``aisle:event:ID``, ``aisle:catalog``, ``aisle:catalog:items``): an existing
store is read and written as it is, with no migration. Changing ``shards`` of a store that holds
data is not supported in place: export the events and compact the catalog first, then start empty.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

PREFIX = "aisle:"
SLOTS = 16384


def key_slot(key: str) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16 of its hash tag), as the server computes it."""
    from redis.crc import key_slot as slot  # aisle[server]

    return int(slot(key.encode("utf-8")))


@lru_cache(maxsize=16)
def shard_tags(shards: int) -> tuple[str, ...]:
    """One hash tag per shard whose slots lie in ``shards`` evenly spaced ranges of the 16384."""
    tags = []
    for shard in range(shards):
        low, high = shard * SLOTS // shards, (shard + 1) * SLOTS // shards
        k = 0
        while not (low <= key_slot(f"{{{shard}.{k}}}") < high):
            k += 1
        tags.append(f"{shard}.{k}")
    return tuple(tags)


def shard_of(key_id: str, shards: int) -> int:
    """The shard of a shopper or item id: stable across processes, machines and Python versions."""
    return zlib.crc32(key_id.encode("utf-8")) % shards if shards > 1 else 0


@dataclass(frozen=True)
class KeyLayout:
    """Key names for ``shards`` shards; ``tagged=False`` (one Redis, one shard): the legacy names."""

    shards: int = 1
    tagged: bool = False

    @classmethod
    def of(cls, shards: int, cluster: bool) -> KeyLayout:
        return cls(shards, tagged=cluster or shards > 1)

    def _base(self, shard: int) -> str:
        return f"{PREFIX}{{{shard_tags(self.shards)[shard]}}}:" if self.tagged else PREFIX

    def user_shard(self, user_id: str) -> int:
        return shard_of(user_id, self.shards)

    def item_shard(self, item_id: str) -> int:
        return shard_of(item_id, self.shards)

    def user_key(self, user_id: str) -> str:
        return f"{self._base(self.user_shard(user_id))}user:{user_id}"

    def event_key(self, user_id: str, event_id: str) -> str:
        """The dedupe key: in the shopper's slot, so an event id is unique per shopper."""
        return f"{self._base(self.user_shard(user_id))}event:{event_id}"

    def event_stream(self, shard: int) -> str:
        return f"{self._base(shard)}events"

    def event_streams(self) -> list[str]:
        return [self.event_stream(s) for s in range(self.shards)]

    def catalog_stream(self, shard: int) -> str:
        return f"{self._base(shard)}catalog"

    def catalog_items(self, shard: int) -> str:
        return f"{self._base(shard)}catalog:items"

    def catalog_streams(self) -> list[str]:
        return [self.catalog_stream(s) for s in range(self.shards)]


#: The layout of a single Redis with one shard: the names Aisle has always used.
LEGACY = KeyLayout()
