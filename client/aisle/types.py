"""Plain result types the SDK returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aisle_contract import SCORE_COMPONENT_NAMES


@dataclass(frozen=True, slots=True)
class ScoreComponents:
    """Why an item scored what it did (``recommend(..., explain=True)``): additive parts of its score.

    ``dense``: the query's share of the item's cosine with the request's interest; ``lexical``:
    ``lexical_weight`` × BM25; ``shopper_interest``: the history's share of the cosine;
    ``cooccurrence``, ``freshness``, ``popularity``: weight × signal; ``diversity``: always 0 (MMR
    and DPP choose the page, never change a score). ``total`` is their sum, the item's score within
    float32 rounding. ``pre_diversity_rank``: the item's 0-based place by score alone, before
    diversity and the category cap picked the page (its rank in the page when they are off).

    A feed the learned ranker ordered has no such parts (they are NaN): ``features`` then holds the
    ranker's exact per-feature contributions (``aisle_contract.RANKER_FEATURE_NAMES`` plus
    ``"bias"``, tree SHAP), and ``total`` is their sum (plus ``rules``).

    ``rules``: what the merchandising rules' boosts and buries added; ``rule_effects``: one mapping
    per rule that acted on the item (``{"rule", "effect", "delta"}`` for a boost or bury, ``{"rule",
    "effect": "pin", "position"}`` or ``{"rule", "effect": "slot"}`` for the rule that placed it).
    """

    dense: float
    lexical: float
    shopper_interest: float
    cooccurrence: float
    freshness: float
    popularity: float
    diversity: float
    pre_diversity_rank: int
    features: dict[str, float] | None = None
    rules: float = 0.0
    rule_effects: tuple[Mapping[str, Any], ...] = ()

    @property
    def total(self) -> float:
        if self.features is not None:
            return float(sum(self.features.values())) + self.rules
        return float(sum(self.as_dict().values()))

    def as_dict(self) -> dict[str, float]:
        """The score components by name, in ``aisle_contract.SCORE_COMPONENT_NAMES`` order."""
        return {name: getattr(self, name) for name in SCORE_COMPONENT_NAMES}


@dataclass(frozen=True, slots=True)
class Recommendation:
    item_id: str
    score: float
    #: with ``explain=True``: the parts ``score`` adds up from
    explanation: ScoreComponents | None = field(default=None, repr=False)
    #: the ``explore`` rule that placed this item at its position (None: ranked by score); in every
    #: answer, so exposure logs can tell explored positions apart (``aisle.exposure_event``)
    explored_by: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSetInfo:
    """A merchandising rule set as the server stores it (``set_rules``, ``list_rules``, ``rollback_rules``).

    ``version``: its newest version (0: none stored); ``rules``: that version's rules (``list_rules``
    only); ``history``: every version, oldest first (``list_rules`` only); ``restored``: the
    version a rollback put back; ``raw``: the server's whole answer.
    """

    rule_set: str
    version: int
    rules: tuple[Mapping[str, Any], ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()
    restored: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


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
    ``request_id`` names this answer (a new uuid4 hex per answer, cache hits included): exposure and
    outcome events join to it. ``experiment`` and ``arm`` say which experiment arm served it (None:
    no experiment).
    """

    def __init__(
        self,
        items: Iterable[Recommendation] = (),
        unknown_history: int = 0,
        request_id: str | None = None,
        experiment: str | None = None,
        arm: str | None = None,
    ) -> None:
        super().__init__(items)
        self.unknown_history = unknown_history
        self.request_id = request_id or uuid.uuid4().hex
        self.experiment = experiment
        self.arm = arm

    def __repr__(self) -> str:
        arm = "" if self.arm is None else f", experiment={self.experiment!r}, arm={self.arm!r}"
        return (
            f"Recommendations({list.__repr__(self)}, unknown_history={self.unknown_history}, "
            f"request_id={self.request_id!r}{arm})"
        )
