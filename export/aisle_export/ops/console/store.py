"""What the console reads from the state store directly: a shopper's recent events, the newest live
catalog changes. Reads only — the console never writes to the store.

The keys are the server's own (``aisle_server.state_keys``), so a store with several shards or a
Redis Cluster reads the same way.
"""

from __future__ import annotations

from typing import Any

from aisle_server.errors import StateUnavailable
from aisle_server.live_catalog import Change
from aisle_server.state import ShopperState, stream_order
from aisle_server.state_url import store_errors

from .views import change_row, events_rows

#: The most events or changes one call lists.
MAX_ROWS = 200


class StoreReads:
    """Reads of one state store (``redis://`` or ``redis-cluster://``); a failing store raises ``StateUnavailable``."""

    def __init__(self, url: str):
        self.state = ShopperState(url)  # connects on first use
        self.url = self.state.url  # the password masked

    def events(self, user_id: str, n: int) -> list[dict[str, Any]]:
        """The shopper's newest ``n`` stored events (what ``recommend(user_id=)`` reads), newest first."""
        return events_rows(self.state.recent([user_id], min(n, MAX_ROWS)).get(user_id, []))

    def changes(self, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` live catalog changes over every shard's change log, newest first."""
        n = min(n, MAX_ROWS)
        layout, redis = self.state.layout, self.state.redis
        try:
            entries = [entry for stream in layout.catalog_streams() for entry in redis.xrevrange(stream, count=n)]
        except store_errors() as exc:
            raise StateUnavailable(f"state store {self.url} unavailable: {type(exc).__name__}: {exc}") from exc
        entries.sort(key=lambda entry: stream_order(entry[0]), reverse=True)
        rows = []
        for entry_id, fields in entries[:n]:
            change = Change.from_stream(entry_id, fields)
            rows.append(change_row(entry_id, change.item_id, change.op, change.fields))
        return rows
