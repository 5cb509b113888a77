"""Apply a file of live catalog changes to a running deployment (``aisle catalog update``).

A change file is JSON Lines, one change per line: ``item_id``, an optional ``op`` (``upsert`` or
``delete``) and the fields to set. The changes go through the SDK's ``update_items`` — the path a
store's own code takes — which checks every change before sending anything, then sends them in
order; every ``rerank`` instance serves them live, without a re-index, and ``aisle catalog
compact`` later folds them into a new base version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aisle import InvalidRequest, RecClient


def read_changes(path: Path) -> list[dict[str, Any]]:
    """The changes in ``path``, in order; blank lines skipped. A line that is not JSON, or a file
    without any change, is a ValueError naming the file (and the line): nothing is sent then."""
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"{path} line {number}: not JSON: {exc}") from None
    if not items:
        raise ValueError(f"{path} holds no change")
    return items


def update_catalog(
    path: Path, url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Send the changes in ``path`` to the deployment at ``url`` (gRPC host:port).

    Returns ``{"changed": N, "last_change_id": ...}``: how many changes were logged, and the id
    the last one was logged under (ids are ordered, like log offsets). Durable once it returns. A
    change the SDK refuses (a bad field) is a ValueError naming the file, raised before anything
    is sent; the SDK's other errors (``AisleError``) pass through.
    """
    items = read_changes(path)
    with RecClient(url, timeout_s=timeout_s, headers=headers or None) as client:
        try:
            changed = client.update_items(items)
        except InvalidRequest as exc:
            raise ValueError(f"{path}: {exc}") from None
    return {"changed": len(changed), "last_change_id": changed[-1].change_id}
