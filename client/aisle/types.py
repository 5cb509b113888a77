"""Plain result types the SDK returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Recommendation:
    item_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Tracked:
    """What ``track`` did with one event: its id, and whether this call stored it (False: stored before)."""

    event_id: str
    stored: bool


@dataclass(frozen=True, slots=True)
class ItemChanged:
    """A logged catalog change: the item, and the id it was logged under (ordered, like a log offset).

    Every ``rerank`` instance serves the change within its poll interval (0.2 s by default).
    """

    item_id: str
    change_id: str


class Recommendations(list[Recommendation]):
    """A list of ``Recommendation``, best first, with what the server reported about the request.

    ``unknown_history`` counts history item ids the catalog does not know (they were ignored).
    """

    def __init__(self, items: Iterable[Recommendation] = (), unknown_history: int = 0) -> None:
        super().__init__(items)
        self.unknown_history = unknown_history

    def __repr__(self) -> str:
        return f"Recommendations({list.__repr__(self)}, unknown_history={self.unknown_history})"
