"""Drain the shopper event log into a file (``aisle events export``).

``track`` appends every event to a Redis Stream in the state store (``aisle_server.state``); the
stream only grows, so the events are moved out of it into files that the offline toolchain reads:
an interaction log for ``aisle finetune --interactions`` (``user_id, item_id, timestamp,
event_type``), or, with ``raw``, every event as it is, properties included, for ``aisle experiment
report``.

Nothing is lost or exported twice: the file is written under a hidden name, fsynced and renamed into
place before the exported entries are trimmed from the stream, and only the entries up to the last
one read are trimmed — events tracked while the export runs stay for the next one. A sharded log
(``shards`` in the state URL, a Redis Cluster) is read shard by shard, each trimmed through its own
last entry read; the file holds the entries in stream-id order, each shopper's in the order stored. An existing
output file is refused rather than overwritten, since the events it holds have already left the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aisle_contract import LOG_ONLY_EVENT_TYPES
from aisle_export.data.interactions import DEFAULT_EVENT_WEIGHTS, Interactions, write_interactions
from aisle_server.state import drain_stream, trim_through
from aisle_server.state_keys import KeyLayout
from aisle_server.state_url import connect, parse_state_url, store_errors

#: The fields of a raw event line besides ``ts`` and ``properties``, as the stream stores them.
RAW_FIELDS = ("event_id", "user_id", "item_id", "event_type")


class EventLogUnreadable(RuntimeError):
    """The state store could not be read (down, wrong URL, timeout); nothing was written or removed."""


@dataclass(frozen=True)
class EventsExport:
    """What one export did. ``read == 0``: the log was empty; ``written == 0 < read``: it held only
    log-only events (exposures), which an interaction log leaves out, so nothing was written."""

    out: Path
    raw: bool
    read: int  # entries drained from the log
    written: int  # events written to ``out``
    removed: int  # entries trimmed from the log (0 with keep=True, or when nothing was written)


def interactions_of(entries: Sequence[dict[str, str]]) -> Interactions | None:
    """The interactions among event-log entries; None when there are none.

    Log-only event types (exposures: what was shown, not what the shopper did) are left out, and
    each row's weight is its event type's default weight, so ``read_interactions`` reads the file
    back exactly as ``aisle finetune`` would weigh a store's own log.
    """
    entries = [entry for entry in entries if entry["event_type"] not in LOG_ONLY_EVENT_TYPES]
    if not entries:
        return None
    types = [entry["event_type"] for entry in entries]
    return Interactions(
        user_id=np.array([entry["user_id"] for entry in entries]),
        item_id=np.array([entry["item_id"] for entry in entries]),
        weight=np.array([DEFAULT_EVENT_WEIGHTS.get(t, 1.0) for t in types]),  # row weight 1 × the type's weight
        timestamp=np.array([float(entry["ts"]) for entry in entries]),
        event_type=np.array(types),
    )


def _partial(out: Path) -> Path:
    """The hidden name a file is written under before it is renamed to ``out``; same suffix, as the
    suffix picks the format."""
    return out.with_name(f".{out.stem}.partial{out.suffix}")


def write_interaction_log(interactions: Interactions, out: Path) -> None:
    """Write ``interactions`` to ``out`` (format from its suffix) durably: fsynced and renamed into
    place, so the log can be trimmed once this returns and a crash never leaves half a file at ``out``."""
    partial = _partial(out)
    write_interactions(interactions, partial)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    partial.replace(out)


def write_raw_events(entries: Sequence[dict[str, str]], out: Path) -> None:
    """The event log as it is, one JSON object a line: properties (exposures, prices) included.

    ``ts`` becomes a number and ``properties`` an object (the stream stores both as strings), which
    is what ``aisle experiment report`` reads. Written durably, like :func:`write_interaction_log`.
    """
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ValueError(f"{out}: --raw writes JSON lines (.jsonl)")
    partial = _partial(out)
    with open(partial, "w", encoding="utf-8") as f:
        for entry in entries:
            row: dict[str, Any] = {key: entry.get(key, "") for key in RAW_FIELDS}
            row["ts"] = float(entry["ts"])
            row["properties"] = json.loads(entry["properties"]) if entry.get("properties") else {}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    partial.replace(out)


def export_events(
    state_url: str,
    out: Path,
    *,
    keep: bool = False,
    raw: bool = False,
    client: Any = None,
    timeout_s: float = 30.0,
) -> EventsExport:
    """Drain the event log of the state store at ``state_url`` into the new file ``out``.

    An interaction log (``.parquet``, ``.csv`` or ``.jsonl``) by default, every event as JSON lines
    with ``raw``. The exported entries are trimmed from the log once the file is in place, unless
    ``keep``; when nothing is written (empty log, or only exposures without ``raw``) nothing is
    trimmed. ``client``: a Redis client to use instead of connecting (tests).

    Raises ValueError when ``out`` exists (before reading anything) or does not suit the format,
    and :class:`EventLogUnreadable` when the store cannot be read.
    """
    if out.exists():
        raise ValueError(f"{out} exists: export writes a new file (the exported events leave the log)")
    spec = parse_state_url(state_url)
    if client is None:
        client = connect(state_url, timeout_s=timeout_s)
    try:
        entries, last = drain_stream(client, layout=KeyLayout.of(spec.shards, spec.cluster))  # every shard
    except store_errors() as exc:
        raise EventLogUnreadable(f"state store {spec.shown}: {exc}") from exc
    if not last:
        return EventsExport(out, raw, read=0, written=0, removed=0)
    if raw:
        write_raw_events(entries, out)
        written = len(entries)
    else:
        interactions = interactions_of(entries)
        if interactions is None:
            return EventsExport(out, raw, read=len(entries), written=0, removed=0)
        write_interaction_log(interactions, out)
        written = len(interactions.user_id)
    removed = 0 if keep else trim_through(client, last)
    return EventsExport(out, raw, read=len(entries), written=written, removed=removed)
