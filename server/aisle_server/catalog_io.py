"""Validate ``catalog`` request tensors into live catalog changes (plain Python, unit-tested without Triton).

Tensor contract (batch first; names from ``aisle_contract``):

- ``ITEM_ID``  BYTES [B, 1]  required, non-empty, ≤ 256 characters.
- ``OP``       BYTES [B, 1]  ``upsert`` or ``delete``.
- ``FIELDS``   BYTES [B, 1]  a JSON object: for an upsert the fields it sets (``ITEM_FIELD_TYPES``),
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
    OP,
    ItemChangeError,
    check_item_change,
)

from .errors import InvalidInput
from .live_catalog import Change
from .tokenization import TextDecodeError, decode_utf8

CATALOG_INPUTS = (ITEM_ID, OP, FIELDS)


def _column(name: str, array: np.ndarray | None, batch: int | None) -> np.ndarray:
    if array is None or array.ndim != 2 or array.shape[1] != 1 or (batch is not None and array.shape[0] != batch):
        shape = "missing" if array is None else list(array.shape)
        raise InvalidInput(name, f"required, shape [{batch if batch is not None else 'batch'}, 1], got {shape}")
    return array[:, 0]


def _texts(name: str, column: np.ndarray, max_chars: int | None) -> list[str]:
    try:
        return decode_utf8(column, max_chars)
    except TextDecodeError as exc:
        raise InvalidInput(name, str(exc)) from None


def parse_changes(inputs: Mapping[str, np.ndarray | None]) -> list[Change]:
    """One ``Change`` per row (no embedding yet), every field checked by ``check_item_change``."""
    ids = _column(ITEM_ID, inputs.get(ITEM_ID), None)
    batch = len(ids)
    item_ids = _texts(ITEM_ID, ids, MAX_EVENT_ID_CHARS + 1)
    ops = _texts(OP, _column(OP, inputs.get(OP), batch), 16)
    raw_fields = _column(FIELDS, inputs.get(FIELDS), batch)
    for b, raw in enumerate(raw_fields):
        if len(raw) > 4 * MAX_FIELDS_BYTES:  # bounded work before any JSON parsing
            raise InvalidInput(FIELDS, f"row {b}: {len(raw)} bytes; at most {MAX_FIELDS_BYTES} as compact JSON")
    texts = _texts(FIELDS, raw_fields, None)
    changes = []
    for b in range(batch):
        try:
            value = json.loads(texts[b] or "{}")
        except ValueError as exc:
            raise InvalidInput(FIELDS, f"row {b}: not JSON: {exc}") from None
        if isinstance(value, dict) and len(json.dumps(value, separators=(",", ":")).encode()) > MAX_FIELDS_BYTES:
            raise InvalidInput(FIELDS, f"row {b}: more than {MAX_FIELDS_BYTES} bytes as compact JSON")
        try:
            fields = check_item_change(item_ids[b], ops[b], value)
        except ItemChangeError as exc:
            raise InvalidInput(exc.field.upper(), f"row {b}: {exc.reason}") from None
        changes.append(Change(item_ids[b], ops[b], fields))
    return changes


def pack_changed(change_ids: Sequence[str]) -> dict[str, np.ndarray]:
    return {CHANGE_ID: np.array([[c.encode("utf-8")] for c in change_ids], dtype=object)}
