"""Exploration: exposure and click counts per item from the tracked events, and Thompson sampling over them.

A new item with no interactions reaches shoppers only through content similarity; an ``explore``
rule (``aisle_server.rules``) gives items it matches that have been shown fewer than
``max_exposures`` times a bounded share of the page. Which ones: Thompson sampling — each eligible
candidate draws a click rate from Beta(1 + clicks, 1 + exposures − clicks) and the highest draws
win, so an item nobody has seen is tried, and one that was shown and not clicked is tried less.

The counts come from the event log ``track`` writes (``aisle_server.state``): an ``exposure``
event counts once for each item in its ``properties["items"]`` (what ``aisle.exposure_event``
records), a ``click`` once for its item. Every ``rerank`` instance reads the log's streams in the
background (``ExposureCounts``, the ``catalog_poll_s`` interval) from their start, so instances agree
once they have read the same entries; entries ``aisle events export`` trimmed are not counted again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from aisle_contract import EXPOSURE_EVENT

from .errors import StateUnavailable
from .polling import Poller
from .state import read_streams
from .state_url import store_errors

LOG = logging.getLogger("aisle.exploration")
CLICK = "click"


class ItemCounts:
    """Exposures and clicks per item id (plain dicts; read by requests, written by one poller)."""

    def __init__(self) -> None:
        self.exposures: dict[str, int] = {}
        self.clicks: dict[str, int] = {}

    def add(self, fields: dict[str, str]) -> None:
        """Count one event-log entry (other event types are ignored)."""
        kind = fields.get("event_type")
        if kind == CLICK:
            item = fields.get("item_id", "")
            self.clicks[item] = self.clicks.get(item, 0) + 1
        elif kind == EXPOSURE_EVENT:
            try:
                items = json.loads(fields.get("properties") or "{}").get("items") or []
            except (ValueError, AttributeError):
                return
            for item in items:
                if isinstance(item, str):
                    self.exposures[item] = self.exposures.get(item, 0) + 1

    def of(self, item_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """float64 exposures and clicks of ``item_ids`` (0 for items never counted)."""
        exposures, clicks = self.exposures, self.clicks
        return (
            np.fromiter((exposures.get(i, 0) for i in item_ids), dtype=np.float64, count=len(item_ids)),
            np.fromiter((clicks.get(i, 0) for i in item_ids), dtype=np.float64, count=len(item_ids)),
        )


def thompson(exposures: np.ndarray, clicks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per item from Beta(1 + clicks, 1 + max(exposures − clicks, 0))."""
    return rng.beta(1.0 + clicks, 1.0 + np.maximum(exposures - clicks, 0.0))


class ExposureCounts:
    """``ItemCounts`` kept up to date from the event log's streams, polled in a daemon thread."""

    def __init__(self, client: Any, streams: Sequence[str], poll_s: float = 0.2):
        self.client = client
        self.marks: dict[str, str | None] = dict.fromkeys(streams)
        self.counts = ItemCounts()
        self.down = False
        self._poller = Poller(self.refresh, poll_s, "aisle-event-counts", lambda: "counting events", LOG)

    def refresh(self) -> int:
        try:
            batches = read_streams(self.client, self.marks)
        except store_errors() as exc:
            if not self.down:
                self.down = True
                LOG.warning("%s; exploration counts stay as they are", StateUnavailable(str(exc)))
            return 0
        self.down = False
        read = 0
        for stream, entries in batches.items():
            for entry_id, fields in entries:
                self.counts.add(fields)
                self.marks[stream] = entry_id
                read += 1
        return read

    def started(self) -> ExposureCounts:
        """This counter, its background reads started (once): the first read of a long log is not a
        request's to wait for, so until it is done items count as never shown."""
        self._poller.start(refresh_first=True)
        return self

    def stop(self) -> None:
        self._poller.stop()
