"""What the console shows of an answer: each result's explanation as bars, and how a dry run moved items.

Pure functions of the SDK's ``Recommendations`` (no I/O), so the page's numbers are unit-tested
here and the browser only draws them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aisle import Recommendation

#: The server names the tensor a bad input came in (``aisle_server.errors.InvalidInput``); the
#: console's fields that carry them.
TENSOR_FIELDS = {
    "DRAFT_RULES": "draft",
    "RULES": "rules",
    "RULE_SET": "rule_set",
    "QUERY": "query",
    "USER_ID": "user_id",
    "K": "k",
    "SURFACE": "surface",
    "SEGMENT": "segment",
}


def bars(recommendation: Recommendation) -> list[dict[str, Any]]:
    """The parts a result's score adds up from, one bar each (zero and NaN parts left out).

    A feed the learned ranker ordered shows the ranker's feature contributions (``kind`` "feature"),
    anything else the score components (``kind`` "component"); what the merchandising rules added is
    its own bar (``kind`` "rules"). The bars' values sum to the score (within float32 rounding).
    """
    explanation = recommendation.explanation
    if explanation is None:
        return []
    if explanation.features is not None:
        parts = [(name, float(value), "feature") for name, value in explanation.features.items()]
    else:
        parts = [(name, float(value), "component") for name, value in explanation.as_dict().items() if name != "rules"]
    parts.append(("rules", float(explanation.rules), "rules"))
    return [
        {"name": name, "value": value, "kind": kind}
        for name, value, kind in parts
        if math.isfinite(value) and value != 0.0
    ]


def result_rows(
    recommendations: Sequence[Recommendation], titles: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """One JSON row per result: id, title (from ``titles``, else ""), rank (1-based), score, its bars,
    what each rule did, its rank before diversity."""
    rows = []
    for rank, rec in enumerate(recommendations, 1):
        explanation = rec.explanation
        rows.append(
            {
                "item_id": rec.item_id,
                "title": (titles or {}).get(rec.item_id, ""),
                "rank": rank,
                "score": float(rec.score),
                "bars": bars(rec),
                "rule_effects": [dict(effect) for effect in explanation.rule_effects] if explanation else [],
                "pre_diversity_rank": explanation.pre_diversity_rank if explanation else None,
            }
        )
    return rows


def compare(before: Sequence[str], after: Sequence[str]) -> dict[str, Any]:
    """How a page changed: per item of ``after`` its rank before (None: new on the page) and the move
    (positive: up), and the items of ``before`` that left."""
    was = {item: rank for rank, item in enumerate(before, 1)}
    moves = []
    for rank, item in enumerate(after, 1):
        old = was.get(item)
        moves.append({"item_id": item, "rank": rank, "was": old, "moved": None if old is None else old - rank})
    gone = [item for item in before if item not in set(after)]
    return {"moves": moves, "left": gone, "changed": list(before) != list(after)}


def error_field(message: str, default: str) -> str:
    """The console field a server error names (``DRAFT_RULES: rules[0].match, ...`` → ``draft``)."""
    for found in re.finditer(r"\b[A-Z][A-Z_]*\b", message):
        if found.group(0) in TENSOR_FIELDS:
            return TENSOR_FIELDS[found.group(0)]
    return default


def events_rows(events: Sequence[tuple[str, float, str]]) -> list[dict[str, Any]]:
    """A shopper's stored events, newest first, as the page lists them."""
    return [{"item_id": item, "ts": float(ts), "event_type": kind} for item, ts, kind in reversed(events)]


def change_row(change_id: str, item_id: str, op: str, fields: Mapping[str, object]) -> dict[str, Any]:
    """One live catalog change as the page lists it (the stream id's milliseconds are when it was logged)."""
    return {
        "change_id": change_id,
        "at": int(change_id.split("-")[0]) / 1000.0,
        "item_id": item_id,
        "op": op,
        "fields": dict(fields),
    }
