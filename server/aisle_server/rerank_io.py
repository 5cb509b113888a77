"""Validate ``rerank`` request tensors into ``RankRequest`` rows and pack results into tensors.

Kept apart from ``model.py`` so that every rule about bad input is plain, unit-tested Python:
each violation raises ``InvalidInput`` naming the tensor, and the server answers INVALID_ARGUMENT.

Tensor contract (batch dimension first; ``recommend`` exposes the same names):

- ``QUERY``            BYTES [B, 1]   UTF-8 text; empty or whitespace = no query.
- ``QUERY_EMBEDDING``  FP32  [B, d]   from ``query_encoder``.
- ``HISTORY_IDS``      BYTES [B, H]   optional; most recent last; ``b""`` entries are padding.
- ``HISTORY_TS``       FP64  [B, H]   optional; unix seconds per history item (finite).
                                       Without it every history item counts as "now".
- ``HISTORY_EVENTS``   BYTES [B, H]   optional; event type per history item (``view``, ``purchase``, …,
                                       ``b""`` = unknown), read by the learned user encoder.
- ``K``                INT32 [B, 1]   optional; default from the model config.
- ``NOW``              FP64  [B, 1]   optional; the request's clock (reproducible replays); default: server time.
- ``USER_ID``          BYTES [B, 1]   optional; the shopper whose newest ``state_events`` stored events
                                       (``aisle_server.state``) join the row's history, each weighted by
                                       its event type; ``b""`` = none.
- ``EXCLUDE_IDS``, ``ALLOW_CATEGORIES``, ``DENY_CATEGORIES``
                       BYTES [B, N]   optional filters; ``b""`` entries are padding.
- one optional [B, 1] tensor per knob of ``ranking.OVERRIDABLE``, named in upper case
  (``DIVERSITY`` FP32, ``DIVERSITY_METHOD`` BYTES, ``RECENCY_HALF_LIFE_S`` FP64, ...): the
  request's override of the model-config default, validated like the config itself.
- ``EXPLAIN``          BOOL  [B, 1]   optional; true: the row's results come with their score components.

Outputs: ``ITEM_IDS`` BYTES [B, k_max], ``SCORES`` FP32 [B, k_max] (rows with fewer than ``k_max``
results are padded with ``b""`` and NaN), ``UNKNOWN_HISTORY`` INT32 [B, 1] (ids not in the catalog,
ignored and counted), and — ``rerank`` only, not the ensemble — ``INTEREST`` FP32 [B, d], the
vector each row was ranked with (query, user encoder, recency mean or their mix; zeros for the cold
fallback), to check the served user encoder against the offline one. History longer than
``max_history`` keeps its most recent items. ``SCORE_COMPONENTS`` FP32 [B, k_max, C] and
``PRE_DIVERSITY_RANK`` INT32 [B, k_max] (``aisle_contract``; ``aisle_server.explain``) explain the rows
that set ``EXPLAIN``; NaN / -1 elsewhere, and left out of the answer when no row did; so do
``FEATURE_CONTRIBUTIONS`` (the learned ranker's) and ``RULE_EFFECTS`` BYTES [B, k_max] (what each
merchandising rule did, JSON per result, ``b""`` padding). The knobs ``SURFACE``, ``SEGMENT``,
``RULE_SET`` and ``RULES`` are the request's context for the merchandising rules
(``aisle_server.rule_store``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

import numpy as np

from aisle_contract import (
    DEFAULT_EVENT_WEIGHTS,
    EXPLAIN,
    EXPLAIN_OUTPUTS,
    FILTER_NAMES,
    INTEREST_OUTPUT,
    MAX_EVENT_ID_CHARS,
    MAX_QUERY_CHARS,
    OUTPUT_NAMES,
    OVERRIDABLE,
    RANKER_FEATURE_NAMES,
    SCORE_COMPONENT_NAMES,
    USER_ID,
    RankingConfig,
)

from .errors import InvalidInput
from .ranking import RankRequest, RankResult, validate_k, with_overrides
from .tokenization import decode_field

KNOB_NAMES = {name.upper(): name for name in OVERRIDABLE}

#: (item_id, ts, event_type) of one stored event, oldest first (``aisle_server.state.StoredEvent``).
StoredEvent: TypeAlias = tuple[str, float, str]
#: Reads the newest ``n`` stored events of each user id: ``(user_ids, n) → {user_id: events}``.
StateReader: TypeAlias = Callable[[Sequence[str], int], Mapping[str, Sequence[StoredEvent]]]


def _rows(name: str, array: np.ndarray | None, batch: int, ndim: int = 2) -> np.ndarray | None:
    if array is None:
        return None
    if array.ndim != ndim or array.shape[0] != batch:
        raise InvalidInput(name, f"expected shape [{batch}, ...] with {ndim} dims, got {list(array.shape)}")
    return array


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise InvalidInput(name, f"value at {bad} is not a finite number")
    return array


def parse_requests(
    inputs: Mapping[str, np.ndarray | None],
    config: RankingConfig,
    catalog_size: int,
    dim: int,
    clock: Callable[[], float] = time.time,
    state: StateReader | None = None,
) -> list[RankRequest]:
    """``state`` reads the stored events of the rows' ``USER_ID`` (none given: ``USER_ID`` is ignored)."""
    queries = inputs.get("QUERY")
    if queries is None or queries.ndim != 2 or queries.shape[1] != 1:
        raise InvalidInput("QUERY", "required, shape [batch, 1]")
    batch = queries.shape[0]
    embeddings = _rows("QUERY_EMBEDDING", inputs.get("QUERY_EMBEDDING"), batch)
    if embeddings is None or embeddings.shape[1] != dim:
        raise InvalidInput("QUERY_EMBEDDING", f"required, shape [batch, {dim}]")
    history_ids = _rows("HISTORY_IDS", inputs.get("HISTORY_IDS"), batch)
    history_ts = _rows("HISTORY_TS", inputs.get("HISTORY_TS"), batch)
    if history_ts is not None and (history_ids is None or history_ts.shape != history_ids.shape):
        raise InvalidInput("HISTORY_TS", "needs HISTORY_IDS of the same shape")
    history_events = _rows("HISTORY_EVENTS", inputs.get("HISTORY_EVENTS"), batch)
    if history_events is not None and (history_ids is None or history_events.shape != history_ids.shape):
        raise InvalidInput("HISTORY_EVENTS", "needs HISTORY_IDS of the same shape")
    ks = _rows("K", inputs.get("K"), batch)
    nows = _rows("NOW", inputs.get("NOW"), batch)
    filters = {name: _rows(name, inputs.get(name), batch) for name in FILTER_NAMES}
    knobs = {name: _rows(name, inputs[name], batch) for name in KNOB_NAMES if inputs.get(name) is not None}
    user_ids = _user_ids(_rows(USER_ID, inputs.get(USER_ID), batch), batch)
    explain = _explain_flags(_rows(EXPLAIN, inputs.get(EXPLAIN), batch), batch)
    stored: Mapping[str, Sequence[StoredEvent]] = {}
    if state is not None and config.state_events and any(user_ids):
        stored = state(user_ids, config.state_events)
    now_default = clock()

    requests = []
    for b in range(batch):
        text = decode_field("QUERY", queries[b], MAX_QUERY_CHARS)[0]  # bounded work, like the tokenizer's
        query_embedding = None
        if text.strip():
            query_embedding = _finite("QUERY_EMBEDDING", embeddings[b]).astype(np.float32)
        now = float(_finite("NOW", nows[b])[0]) if nows is not None else now_default
        ids: list[str] = []
        events: list[str] = []
        ts = np.zeros(0)
        if history_ids is not None:
            ids = decode_field("HISTORY_IDS", history_ids[b])
            ts = _finite("HISTORY_TS", history_ts[b]) if history_ts is not None else np.full(len(ids), now)
            keep = np.array([bool(i) for i in ids], dtype=bool)  # b"" is padding
            ids = [i for i, k in zip(ids, keep) if k][-config.max_history :]
            ts = ts[keep][-config.max_history :]
            if history_events is not None:
                events = [e for e, k in zip(decode_field("HISTORY_EVENTS", history_events[b]), keep) if k][
                    -config.max_history :
                ]
        weights = None
        if stored.get(user_ids[b]):
            ids, ts, events, weights = merge_history(ids, ts, events, stored[user_ids[b]], config.max_history)
        row_config = with_overrides(
            config, {KNOB_NAMES[name]: _knob(name, values[b]) for name, values in knobs.items()}
        )
        k = int(ks[b][0]) if ks is not None else config.default_k
        lists = {
            name: [v for v in decode_field(name, values[b]) if v] if values is not None else []
            for name, values in filters.items()
        }
        requests.append(
            RankRequest(
                query_embedding,
                ids,
                ts,
                validate_k(k, row_config, catalog_size),
                now,
                row_config,
                text,
                exclude_ids=lists["EXCLUDE_IDS"],
                allow_categories=lists["ALLOW_CATEGORIES"],
                deny_categories=lists["DENY_CATEGORIES"],
                history_events=events,
                history_weights=weights,
                explain=explain[b],
            )
        )
    return requests


def _explain_flags(array: np.ndarray | None, batch: int) -> list[bool]:
    if array is None:
        return [False] * batch
    if array.shape[1] != 1 or array.dtype != np.bool_:
        raise InvalidInput(EXPLAIN, f"expected BOOL of shape [batch, 1], got {array.dtype} {list(array.shape)}")
    return [bool(flag) for flag in array[:, 0]]


def _user_ids(array: np.ndarray | None, batch: int) -> list[str]:
    if array is None:
        return [""] * batch
    if array.shape[1] != 1:
        raise InvalidInput(USER_ID, f"expected shape [batch, 1], got {list(array.shape)}")
    users = decode_field(USER_ID, array[:, 0])
    for user in users:
        if len(user) > MAX_EVENT_ID_CHARS:
            raise InvalidInput(USER_ID, f"is {len(user)} characters long; at most {MAX_EVENT_ID_CHARS}")
    return [user.strip() and user for user in users]  # whitespace only: no user


def merge_history(
    ids: Sequence[str], ts: np.ndarray, events: Sequence[str], stored: Sequence[StoredEvent], max_history: int
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """A request's own history merged with the shopper's stored events, in time order, newest ``max_history``.

    Stored events weigh by their type (``DEFAULT_EVENT_WEIGHTS``, 1 for other types); the request's
    own items keep weight 1, as without a store. A stored event that the request also carries (same
    item and timestamp: the caller sent what it tracked) counts once. On equal timestamps the
    request's items come after the stored ones. Event types: the stored ones, and the request's
    (``""`` where it sent none).
    """
    own = set(zip(ids, ts.tolist()))
    merged = [
        (float(t), 0, item, event, DEFAULT_EVENT_WEIGHTS.get(event, 1.0))
        for item, t, event in stored
        if (item, float(t)) not in own
    ]
    own_events = list(events) if len(events) == len(ids) else [""] * len(ids)
    merged += [(float(t), 1, item, event, 1.0) for item, t, event in zip(ids, ts.tolist(), own_events)]
    merged.sort(key=lambda row: (row[0], row[1]))  # stable: each side keeps its own order on ties
    merged = merged[-max_history:]
    return (
        [row[2] for row in merged],
        np.array([row[0] for row in merged], dtype=np.float64),
        [row[3] for row in merged],
        np.array([row[4] for row in merged], dtype=np.float64),
    )


def _knob(name: str, values: np.ndarray) -> object:
    """The single value of a [1] knob tensor row, as the Python type ``RankingConfig`` holds."""
    if values.shape != (1,):
        raise InvalidInput(name, f"expected shape [batch, 1], got a row of shape {list(values.shape)}")
    value = values[0]
    if isinstance(value, (bytes, np.bytes_)):
        return decode_field(name, [value])[0]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return float(_finite(name, np.array([value]))[0])


def pack_results(
    results: Sequence[RankResult], dim: int | None = None, explanations: bool = False
) -> dict[str, np.ndarray]:
    """The output tensors; with ``dim``, also ``INTEREST`` (zeros for rows ranked without one); with
    ``explanations``, also ``EXPLAIN_OUTPUTS`` when a row was explained (when none was, they are
    left out: four tensors fewer to build and pass through the ensemble for every request that
    does not ask, which the SDK reads as "no row explained")."""
    width = max((len(r.item_ids) for r in results), default=0)
    ids = np.full((len(results), width), b"", dtype=object)
    scores = np.full((len(results), width), np.nan, dtype=np.float32)
    for b, result in enumerate(results):
        n = len(result.item_ids)
        ids[b, :n] = [i.encode("utf-8") for i in result.item_ids]
        scores[b, :n] = result.scores
    unknown = np.array([r.unknown_history for r in results], dtype=np.int32).reshape(-1, 1)
    explored = np.full((len(results), width), b"", dtype=object)
    for b, result in enumerate(results):
        if result.explored:
            explored[b, : len(result.explored)] = [rule.encode("utf-8") for rule in result.explored]
    outputs = dict(zip(OUTPUT_NAMES, (ids, scores, unknown, explored), strict=True))
    if dim is not None:
        interest = np.zeros((len(results), dim), dtype=np.float32)
        for b, result in enumerate(results):
            if result.interest is not None:
                interest[b] = result.interest
        outputs[INTEREST_OUTPUT] = interest
    if explanations and any(result.components is not None for result in results):
        outputs.update(pack_explanations(results, width))
    return outputs


def pack_explanations(results: Sequence[RankResult], width: int) -> dict[str, np.ndarray]:
    """``SCORE_COMPONENTS``, ``PRE_DIVERSITY_RANK``, ``FEATURE_CONTRIBUTIONS`` and ``RULE_EFFECTS``:
    padded like ``SCORES`` (NaN, -1, ``b""``) for the rows that did not ask."""
    components = np.full((len(results), width, len(SCORE_COMPONENT_NAMES)), np.nan, dtype=np.float32)
    ranks = np.full((len(results), width), -1, dtype=np.int32)
    contributions = np.full((len(results), width, len(RANKER_FEATURE_NAMES) + 1), np.nan, dtype=np.float32)
    effects = np.full((len(results), width), b"", dtype=object)
    for b, result in enumerate(results):
        if result.components is not None and result.pre_diversity_rank is not None:
            n = len(result.item_ids)
            components[b, :n] = result.components
            ranks[b, :n] = result.pre_diversity_rank
            if result.feature_contributions is not None:
                contributions[b, :n] = result.feature_contributions
            for j, item in enumerate(result.rule_effects or [[]] * n):
                effects[b, j] = json.dumps(item, separators=(",", ":")).encode("utf-8")
    return dict(zip(EXPLAIN_OUTPUTS, (components, ranks, contributions, effects)))
