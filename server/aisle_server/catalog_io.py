"""Validate ``catalog`` request tensors into live catalog changes (plain Python, unit-tested without Triton).

Tensor contract (batch first; names from ``aisle_contract``):

- ``ITEM_ID``  BYTES [B, 1]  required, non-empty, ≤ 256 characters.
- ``OP``       BYTES [B, 1]  ``upsert`` or ``delete``.
- ``FIELDS``   BYTES [B, 1]  a JSON object: for an upsert the fields it sets (``ITEM_FIELD_TYPES``
  and the catalog's declared attributes, ``aisle_server.attributes``; ``null`` clears an attribute),
  ``{}`` for a delete; at most ``MAX_FIELDS_BYTES`` as compact JSON.

Output: ``CHANGE_ID`` BYTES [B, 1], the id each change was logged under. A violation raises
``InvalidInput`` naming the field and the row: INVALID_ARGUMENT, nothing of the request is logged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from aisle_contract import (
    CHANGE_ID,
    FIELDS,
    ITEM_ID,
    MAX_EVENT_ID_CHARS,
    MAX_FIELDS_BYTES,
    NO_ATTRIBUTES,
    OP,
    ItemChangeError,
    check_item_change,
)

from .errors import InvalidInput
from .live_catalog import Change
from .tokenization import decode_field
from .track_io import batch_column

CATALOG_INPUTS = (ITEM_ID, OP, FIELDS)


def _column(name: str, array: np.ndarray | None, batch: int | None) -> np.ndarray:
    column = batch_column(name, array, batch)
    if column is None:
        raise InvalidInput(name, "required, shape [batch, 1]")
    return column


def parse_changes(
    inputs: Mapping[str, np.ndarray | None], attributes: Mapping[str, str] = NO_ATTRIBUTES
) -> list[Change]:
    """One ``Change`` per row (no embedding yet), every field checked by ``check_item_change``
    (``attributes``: the catalog's declared item attributes, which a change may set too)."""
    ids = _column(ITEM_ID, inputs.get(ITEM_ID), None)
    batch = len(ids)
    item_ids = decode_field(ITEM_ID, ids, MAX_EVENT_ID_CHARS + 1)
    ops = decode_field(OP, _column(OP, inputs.get(OP), batch), 16)
    raw_fields = _column(FIELDS, inputs.get(FIELDS), batch)
    for b, raw in enumerate(raw_fields):
        if len(raw) > 4 * MAX_FIELDS_BYTES:  # bounded work before any JSON parsing
            raise InvalidInput(FIELDS, f"row {b}: {len(raw)} bytes; at most {MAX_FIELDS_BYTES} as compact JSON")
    texts = decode_field(FIELDS, raw_fields, None)
    changes = []
    for b in range(batch):
        try:
            value = json.loads(texts[b] or "{}")
        except ValueError as exc:
            raise InvalidInput(FIELDS, f"row {b}: not JSON: {exc}") from None
        if isinstance(value, dict) and len(json.dumps(value, separators=(",", ":")).encode()) > MAX_FIELDS_BYTES:
            raise InvalidInput(FIELDS, f"row {b}: more than {MAX_FIELDS_BYTES} bytes as compact JSON")
        try:
            fields = check_item_change(item_ids[b], ops[b], value, attributes)
        except ItemChangeError as exc:
            raise InvalidInput(exc.field.upper(), f"row {b}: {exc.reason}") from None
        changes.append(Change(item_ids[b], ops[b], fields))
    return changes


def pack_changed(change_ids: Sequence[str]) -> dict[str, np.ndarray]:
    return {CHANGE_ID: np.array([[c.encode("utf-8")] for c in change_ids], dtype=object)}
