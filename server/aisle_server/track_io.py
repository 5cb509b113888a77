"""Validate ``track`` request tensors into ``Event`` rows (plain Python, unit-tested without Triton).

Tensor contract (batch first; names from ``aisle_contract``):

- ``USER_ID``, ``ITEM_ID``, ``EVENT_TYPE``  BYTES [B, 1]  required, non-empty, ≤ 256 characters;
  the event type one of the model config's ``event_types`` (default view, click, add_to_cart, purchase).
- ``TS``          FP64  [B, 1]  optional; unix seconds, finite, ≥ 0, at most 300 s after the server's
  clock; default: the server's clock.
- ``EVENT_ID``    BYTES [B, 1]  optional; the idempotency key (``b""`` or absent: a new UUID).
- ``PROPERTIES``  BYTES [B, 1]  optional; a JSON object, at most 4,096 bytes as compact JSON.

Outputs: ``EVENT_ID`` BYTES [B, 1] and ``STORED`` BOOL [B, 1] (False: that id was stored before).
A violation raises ``InvalidInput`` naming the tensor and the row: INVALID_ARGUMENT, nothing of
the request is stored.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from aisle_contract import (
    DEFAULT_EVENT_TYPES,
    EVENT_ID,
    EVENT_TYPE,
    ITEM_ID,
    MAX_EVENT_ID_CHARS,
    MAX_PROPERTIES_BYTES,
    PROPERTIES,
    STORED,
    TS,
    USER_ID,
    EventError,
    check_event,
)

from .errors import InvalidInput
from .state import Event
from .tokenization import decode_field

#: Raw ``PROPERTIES`` bytes read at all (pretty-printed JSON may shrink to the limit once compacted).
_MAX_RAW_PROPERTIES_BYTES = 4 * MAX_PROPERTIES_BYTES
TRACK_INPUTS = (USER_ID, ITEM_ID, EVENT_TYPE, TS, EVENT_ID, PROPERTIES)


def parse_event_types(text: str | None) -> tuple[str, ...]:
    """The config's ``event_types`` (comma-separated) or the defaults."""
    types = tuple(t.strip() for t in (text or "").split(",") if t.strip())
    return types or DEFAULT_EVENT_TYPES


def batch_column(name: str, array: np.ndarray | None, batch: int | None) -> np.ndarray | None:
    """The [B] values of a [B, 1] input (``batch``: the B it must have; None: any); None if absent."""
    if array is None:
        return None
    if array.ndim != 2 or array.shape[1] != 1 or (batch is not None and array.shape[0] != batch):
        raise InvalidInput(
            name, f"expected shape [{batch if batch is not None else 'batch'}, 1], got {list(array.shape)}"
        )
    return array[:, 0]


def _texts(name: str, column: np.ndarray, max_chars: int | None = MAX_EVENT_ID_CHARS + 1) -> list[str]:
    """Decoded, at most ``max_chars`` characters each (one more than allowed: the length check sees it)."""
    return decode_field(name, column, max_chars)


def parse_events(
    inputs: Mapping[str, np.ndarray | None],
    event_types: Sequence[str] = DEFAULT_EVENT_TYPES,
    clock: Callable[[], float] = time.time,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[Event]:
    users = batch_column(USER_ID, inputs.get(USER_ID), None)
    if users is None:
        raise InvalidInput(USER_ID, "required, shape [batch, 1]")
    batch = len(users)
    columns = {}
    for name in (ITEM_ID, EVENT_TYPE):
        column = batch_column(name, inputs.get(name), batch)
        if column is None:
            raise InvalidInput(name, "required, shape [batch, 1]")
        columns[name] = _texts(name, column)
    user_ids = _texts(USER_ID, users)
    stamps = batch_column(TS, inputs.get(TS), batch)
    ids = batch_column(EVENT_ID, inputs.get(EVENT_ID), batch)
    event_ids = _texts(EVENT_ID, ids) if ids is not None else [""] * batch
    props = batch_column(PROPERTIES, inputs.get(PROPERTIES), batch)
    if props is not None:
        for b, raw in enumerate(props):
            if len(raw) > _MAX_RAW_PROPERTIES_BYTES:  # bounded work before any JSON parsing
                raise InvalidInput(
                    PROPERTIES, f"row {b}: {len(raw)} bytes; at most {MAX_PROPERTIES_BYTES} as compact JSON"
                )
    properties = _texts(PROPERTIES, props, None) if props is not None else [""] * batch
    now = clock()
    allowed = tuple(event_types)
    events = []
    for b in range(batch):
        ts = float(stamps[b]) if stamps is not None else now
        compact = ""
        if properties[b]:
            try:
                value = json.loads(properties[b])
            except ValueError as exc:
                raise InvalidInput(PROPERTIES, f"row {b}: not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise InvalidInput(PROPERTIES, f"row {b}: must be a JSON object, got {type(value).__name__}")
            compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        try:
            check_event(
                user_ids[b],
                columns[ITEM_ID][b],
                columns[EVENT_TYPE][b],
                ts,
                now,
                event_ids[b] or None,
                compact or None,
                allowed,
            )
        except EventError as exc:
            raise InvalidInput(exc.field.upper(), f"row {b}: {exc.reason}") from None
        events.append(
            Event(event_ids[b] or new_id(), user_ids[b], columns[ITEM_ID][b], columns[EVENT_TYPE][b], ts, compact)
        )
    return events


def pack_tracked(events: Sequence[Event], stored: Sequence[bool]) -> dict[str, np.ndarray]:
    return {
        EVENT_ID: np.array([[e.event_id.encode("utf-8")] for e in events], dtype=object),
        STORED: np.array([[bool(s)] for s in stored], dtype=bool).reshape(-1, 1),
    }
