"""Exposure events: what a shopper was shown, for the event log and ``aisle experiment report``."""

from __future__ import annotations

import json

from aisle_contract import EXPLORATION_ARM, EXPOSURE_EVENT, MAX_PROPERTIES_BYTES

from .errors import InvalidRequest
from .requests import TrackEvent
from .types import Recommendations

#: The item id of an exposure whose answer was empty (``track`` needs one).
NO_ITEMS = "-"


def exposure_event(recs: Recommendations, user_id: str, ts: float | None = None) -> TrackEvent:
    """The ``exposure`` event of an answer shown to ``user_id``: ``client.track_many([...])`` stores it.

    Its ``event_id`` is the answer's ``request_id``, so sending it twice stores it once; its
    properties carry ``request_id``, ``experiment``, ``arm``, ``items`` (best first; the tail is cut,
    with ``"truncated": true``, where the list would pass the contract's 4 KiB) and ``k``; for an
    answer with explored positions, ``explored``: the 0-based positions an ``explore`` rule placed,
    with the rule and the bandit's arm, so reports can tell them apart. The item id is the
    first item shown. Exposures go to the event log only, never into the shopper's history.
    """
    items = [rec.item_id for rec in recs]
    properties: dict[str, object] = {
        "request_id": recs.request_id,
        "experiment": recs.experiment,
        "arm": recs.arm,
        "k": len(items),
        "items": items,
    }
    explored = [
        {"position": j, "rule": rec.explored_by, "arm": EXPLORATION_ARM}
        for j, rec in enumerate(recs)
        if rec.explored_by is not None
    ]
    if explored:
        properties["explored"] = explored
    while len(json.dumps(properties, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_PROPERTIES_BYTES:
        if not items:
            raise InvalidRequest("exposure properties do not fit 4 KiB")
        del items[len(items) // 2 if len(items) > 8 else -1 :]  # halve long lists, then trim
        properties["truncated"] = True
    return TrackEvent(user_id, items[0] if items else NO_ITEMS, EXPOSURE_EVENT, ts, recs.request_id, properties)
