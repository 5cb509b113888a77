"""Turn Triton answers into SDK results — shared by the sync and asyncio clients.

Everything here reads arrays the transport already received; nothing sends or waits, so the plans
in ``_core`` use it the same way whichever client drives them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from aisle_contract import (
    EXPLORED,
    FEATURE_CONTRIBUTIONS,
    PRE_DIVERSITY_RANK,
    RANKER_BIAS,
    RANKER_FEATURE_NAMES,
    RESULT,
    RULE_EFFECTS,
    SCORE_COMPONENTS,
)

from .errors import ServerError
from .types import ItemChanged, Recommendation, Recommendations, RuleSetInfo, ScoreComponents, Tracked

Vector: TypeAlias = npt.NDArray[np.float32]
Array: TypeAlias = npt.NDArray[Any]


class InferResult(Protocol):
    """What the SDK reads of a tritonclient ``InferResult`` (sync and aio return the same class)."""

    def as_numpy(self, name: str) -> Array | None: ...


def parse_recommendations(
    ids: Array,
    scores: Array,
    unknown: Array | None,
    row: int = 0,
    components: Array | None = None,
    ranks: Array | None = None,
    contributions: Array | None = None,
    effects: Array | None = None,
    explored: Array | None = None,
) -> Recommendations:
    """Row ``row`` of a ``recommend`` answer; empty ids (and their NaN scores) are padding and dropped.

    Rows of a batched answer are padded to the widest row, so every row is parsed this way.
    ``components``/``ranks`` (``SCORE_COMPONENTS``, ``PRE_DIVERSITY_RANK``) explain the row's items
    when the row asked for it (its ranks are not -1); ``contributions`` (``FEATURE_CONTRIBUTIONS``)
    when the learned ranker ordered the row (not NaN); ``explored`` (``EXPLORED``; absent from a
    server that predates it) names the ``explore`` rule that placed an item.
    """
    explained = (
        components is not None
        and ranks is not None
        and components.ndim == 3
        and ranks.ndim == 2
        and components.shape[1] > 0
        and ranks[row][0] >= 0
    )
    items = [
        Recommendation(
            item_id=raw.decode("utf-8"),
            score=float(score),
            explanation=_explanation(
                components[row][j],  # type: ignore[index]  # explained ⇒ both arrays are set
                int(ranks[row][j]),  # type: ignore[index]
                _features(contributions, row, j),
                _effects(effects, row, j),
            )
            if explained
            else None,
            explored_by=_explored_by(explored, row, j),
        )
        for j, (raw, score) in enumerate(zip(ids[row], scores[row], strict=False))
        if raw
    ]
    return Recommendations(items, unknown_history=int(unknown[row][0]) if unknown is not None else 0)


def _explanation(
    parts: Array, rank: int, features: dict[str, float] | None = None, effects: tuple[dict[str, Any], ...] = ()
) -> ScoreComponents:
    values = [float(part) for part in parts]
    dense, lexical, shopper, cooccurrence, freshness, popularity, diversity = values[:7]
    # 0: a server from before the rules component, or a ranker-ordered row no rule touched (NaN parts)
    rules = values[7] if len(values) > 7 and values[7] == values[7] else 0.0
    return ScoreComponents(
        dense, lexical, shopper, cooccurrence, freshness, popularity, diversity, rank, features, rules, effects
    )


def _explored_by(explored: Array | None, row: int, j: int) -> str | None:
    """The ``explore`` rule that placed item ``j`` of ``row`` (None: ranked by score)."""
    if explored is None or explored.ndim != 2 or j >= explored.shape[1] or not explored[row][j]:
        return None
    return str(explored[row][j].decode("utf-8"))


def _effects(effects: Array | None, row: int, j: int) -> tuple[dict[str, Any], ...]:
    """What each merchandising rule did to item ``j`` of ``row`` (``RULE_EFFECTS``; none: ``()``)."""
    if effects is None or effects.ndim != 2 or j >= effects.shape[1] or not effects[row][j]:
        return ()
    return tuple(json.loads(effects[row][j]))


def _features(contributions: Array | None, row: int, j: int) -> dict[str, float] | None:
    """The ranker's contributions to item ``j`` of ``row`` by feature name; None: not ranker-ordered."""
    if contributions is None or contributions.ndim != 3 or contributions.shape[1] <= j:
        return None
    values = contributions[row][j]
    if np.isnan(values).all():
        return None
    return dict(zip((*RANKER_FEATURE_NAMES, RANKER_BIAS), (float(v) for v in values), strict=True))


def split_recommendations(
    ids: Array,
    scores: Array,
    unknown: Array | None,
    components: Array | None = None,
    ranks: Array | None = None,
    contributions: Array | None = None,
    effects: Array | None = None,
    explored: Array | None = None,
) -> list[Recommendations]:
    """Every row of a batched ``recommend`` answer, in request order."""
    return [
        parse_recommendations(ids, scores, unknown, row, components, ranks, contributions, effects, explored)
        for row in range(ids.shape[0])
    ]


def recommendations_from(result: InferResult) -> list[Recommendations]:
    """Every row of a ``recommend`` answer as the transport returned it (a server without
    explanations answers without their outputs: no row is explained)."""
    ids, scores = result.as_numpy("ITEM_IDS"), result.as_numpy("SCORES")
    if ids is None or scores is None:
        raise ServerError("the recommend answer has no ITEM_IDS or SCORES output")
    components, ranks = result.as_numpy(SCORE_COMPONENTS), result.as_numpy(PRE_DIVERSITY_RANK)
    contributions, effects = result.as_numpy(FEATURE_CONTRIBUTIONS), result.as_numpy(RULE_EFFECTS)
    unknown, explored = result.as_numpy("UNKNOWN_HISTORY"), result.as_numpy(EXPLORED)
    return split_recommendations(ids, scores, unknown, components, ranks, contributions, effects, explored)


def embeddings_from(result: InferResult) -> list[Vector]:
    """One float32 vector per text of an ``embed_*`` answer, each its own array (safe to cache)."""
    vectors = result.as_numpy("EMBEDDING")
    if vectors is None:
        raise ServerError("the embed answer has no EMBEDDING output")
    return [np.array(vector, dtype=np.float32) for vector in vectors]


def tracked_from(result: InferResult) -> list[Tracked]:
    """One ``Tracked`` per event of a ``track`` answer, in request order."""
    ids, stored = result.as_numpy("EVENT_ID"), result.as_numpy("STORED")
    if ids is None or stored is None:
        raise ServerError("the track answer has no EVENT_ID or STORED output")
    return [Tracked(raw.decode("utf-8"), bool(flag)) for raw, flag in zip(ids[:, 0], stored[:, 0], strict=True)]


def changed_from(result: InferResult, item_ids: Sequence[str]) -> list[ItemChanged]:
    """One ``ItemChanged`` per change of a ``catalog`` answer, in request order."""
    ids = result.as_numpy("CHANGE_ID")
    if ids is None:
        raise ServerError("the catalog answer has no CHANGE_ID output")
    return [ItemChanged(item, raw.decode("utf-8")) for item, raw in zip(item_ids, ids[:, 0], strict=True)]


def copy_recommendations(recs: Recommendations) -> Recommendations:
    """A shallow copy, so a caller mutating its list never changes what the cache holds."""
    return Recommendations(list(recs), unknown_history=recs.unknown_history)  # a new answer: a new request_id


def rule_set_from(result: InferResult) -> RuleSetInfo:
    """The ``rules`` model's answer (a JSON object) as a ``RuleSetInfo``."""
    raw = result.as_numpy(RESULT)
    if raw is None:
        raise ServerError("the rules answer has no RESULT output")
    answer = json.loads(raw.reshape(-1)[0])
    return RuleSetInfo(
        rule_set=str(answer["rule_set"]),
        version=int(answer.get("version", 0)),
        rules=tuple(answer["rules"]) if isinstance(answer.get("rules"), list) else (),
        history=tuple(answer.get("history", ())),
        restored=answer.get("restored"),
        raw=answer,
    )
