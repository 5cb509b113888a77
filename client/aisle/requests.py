"""Validate SDK arguments and turn them into Triton tensors — before any network call.

The one place that knows the ``recommend``/``embed`` tensor contract on the client side; the sync
and asyncio clients, the micro-batcher and the caches all go through it, so a rule about bad input
is written once. A bad argument raises ``InvalidRequest`` naming it.
"""

from __future__ import annotations

import json
import math
import numbers
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypedDict, cast

import numpy as np
import numpy.typing as npt

from aisle_contract import (
    CATALOG_OPS,
    EXPLAIN,
    FILTER_NAMES,
    MAX_BATCH,
    MAX_CATALOG_BATCH,
    MAX_EVENT_ID_CHARS,
    MAX_FIELDS_BYTES,
    MAX_K,
    MAX_MESSAGE_BYTES,
    MAX_QUERY_CHARS,
    MAX_RULES_BYTES,
    MAX_TRACK_BATCH,
    OVERRIDABLE,
    RECOMMEND_MODEL,
    RULE_OPS,
    USER_ID,
    EventError,
    ItemChangeError,
    RankingConfig,
    check_event,
    check_item_change,
    valid_rule_set_name,
)

from .errors import InvalidRequest

HistoryItem = tuple[str, float] | tuple[str, float, str]  # (item_id, unix_ts[, event_type])
KnobPairs = tuple[tuple[str, object], ...]  # ranking overrides, sorted by name
TOWERS = ("query", "item")


@dataclass(frozen=True)
class Tensor:
    name: str
    array: npt.NDArray[Any]
    datatype: str


def _utf8(name: str, text: object) -> bytes:
    if not isinstance(text, str):
        raise InvalidRequest(f"{name} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{name} is not encodable as UTF-8: {exc.reason}") from None


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidRequest(f"{name} must be a finite number, got {value!r}")
    return float(value)


def validate_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and _number("timeout_s", timeout_s) <= 0:
        raise InvalidRequest(f"timeout_s must be > 0, got {timeout_s!r}")
    return timeout_s


def validate_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= MAX_K:
        raise InvalidRequest(f"k must be an int in [1, {MAX_K}], got {k!r}")
    return int(k)


def validate_tower(tower: object) -> str:
    if tower not in TOWERS:
        raise InvalidRequest(f"tower must be one of {sorted(TOWERS)}, got {tower!r}")
    return str(tower)


def validate_user_id(user_id: object) -> str | None:
    """``None`` (no shopper) or a non-empty str of at most ``MAX_EVENT_ID_CHARS`` characters."""
    if user_id is None:
        return None
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_EVENT_ID_CHARS:
        raise InvalidRequest(
            f"user_id must be None or a non-empty str of at most {MAX_EVENT_ID_CHARS} characters, got {user_id!r}"
        )
    _utf8("user_id", user_id)
    return user_id


def validate_texts(texts: object) -> list[str]:
    """A non-empty sequence of UTF-8-encodable str (checked now, so the server never sees bad text)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise InvalidRequest("texts must be a non-empty sequence of str")
    for i, text in enumerate(texts):
        _utf8(f"texts[{i}]", text)
    return [text[:MAX_QUERY_CHARS] for text in texts]  # no tower reads more of a text than this


def _history(history: Iterable[HistoryItem] | None) -> tuple[HistoryItem, ...]:
    """``(item_id, ts)`` or ``(item_id, ts, event_type)`` items, checked; event types kept only when given."""
    items: list[HistoryItem] = []
    for i, item in enumerate(history or ()):
        # tuple/list first: the Sequence ABC check costs microseconds per item on every call
        if not (
            type(item) in (tuple, list) or (isinstance(item, Sequence) and not isinstance(item, (str, bytes)))
        ) or len(item) not in (2, 3):
            raise InvalidRequest(
                f"history[{i}] must be an (item_id, unix_ts) pair or (item_id, unix_ts, event_type), got {item!r}"
            )
        if not _utf8(f"history[{i}] item_id", item[0]):
            raise InvalidRequest(f"history[{i}] item_id is empty")
        ts = _number(f"history[{i}] timestamp", item[1])
        if len(item) == 3:
            if not _utf8(f"history[{i}] event_type", item[2]):
                raise InvalidRequest(f"history[{i}] event_type is empty")
            items.append((item[0], ts, item[2]))
        else:
            items.append((item[0], ts))
    return tuple(items)


class RankingKnobs(TypedDict, total=False):
    """Per-request overrides of the server's ranking defaults (``rerank/config.pbtxt`` parameters)."""

    diversity: float  # [0, 1]: 0 = pure relevance
    diversity_method: Literal["mmr", "dpp"]
    category_cap: int  # at most this many results per category; 0 = no cap
    query_weight: float  # [0, 1]: query vs session interest when both are given
    recency_half_life_s: float  # > 0: how fast history items lose weight
    exclude_history: bool  # leave history items out of the results
    freshness_weight: float  # >= 0
    freshness_half_life_s: float  # > 0
    popularity_weight: float  # >= 0
    search_mode: Literal["hybrid", "dense", "lexical"]
    lexical_weight: float  # >= 0: BM25's weight in hybrid search
    typo_tolerance: bool  # BM25 corrects query terms the catalog never uses (shampo → shampoo)
    feed_popularity_weight: float  # >= 0: popularity prior's weight in feeds (no query)
    cooccurrence_weight: float  # >= 0: weight of co-occurrence with the shopper's history in feeds
    user_encoder: bool  # use the learned user encoder where the repository has one (else the recency mean)
    learned_ranker: bool  # order a feed by the learned ranker where the repository has one (else the hand-weighted sum)
    surface: str  # the page the request fills ("home", "pdp", ...): merchandising rules read it
    segment: str  # the shopper's segment as the caller names it ("vip", ...): merchandising rules read it
    rule_set: str  # the stored merchandising rule set to apply (default "default")
    rules: bool  # False: no merchandising rules at all for this request
    draft_rules: str  # a rule set's JSON applied in place of the stored set, for this request only (dry runs)


_KNOB_TYPES = {"FP32": float, "FP64": float, "INT32": int, "BOOL": bool, "BYTES": str}
_NUMPY_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "BOOL": np.bool_}
FILTERS = {name.lower(): name for name in FILTER_NAMES}  # exclude_ids, allow_categories, deny_categories


def validate_ranking(knobs: Mapping[str, object]) -> tuple[tuple[str, object], ...]:
    """Check knob names, types and ranges — the server's own rules (``RankingConfig.validate``)."""
    if not knobs:
        return ()
    unknown = set(knobs) - set(OVERRIDABLE)
    if unknown:
        raise InvalidRequest(f"unknown ranking option(s) {sorted(unknown)}; known: {sorted(OVERRIDABLE)}")
    for name, value in knobs.items():
        expected = _KNOB_TYPES[OVERRIDABLE[name]]
        if expected is float:
            _number(name, value)
        elif isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
            raise InvalidRequest(f"{name} must be a {expected.__name__}, got {value!r}")
    try:
        replace(RankingConfig(), **cast(dict[str, Any], dict(knobs))).validate()  # types checked above
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    return tuple(sorted(knobs.items()))


def _names(name: str, values: object) -> tuple[str, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidRequest(f"{name} must be a sequence of str, got {values!r}")
    values = tuple(values)
    for i, value in enumerate(values):
        if not _utf8(f"{name}[{i}]", value):
            raise InvalidRequest(f"{name}[{i}] is empty")
    return values


@dataclass(frozen=True, slots=True)
class RecommendRequest:
    """One validated ``recommend`` row; constructing it checks every argument.

    ``history`` is normalized to a tuple of ``(item_id, float_ts[, event_type])`` items, ``query`` ``None`` to
    ``""``, so a request is hashable and can key a cache or join a micro-batch.
    """

    query: str | None = ""
    history: Iterable[HistoryItem] | None = ()
    k: int = 10
    now: float | None = None
    exclude_ids: Sequence[str] = ()
    allow_categories: Sequence[str] = ()
    deny_categories: Sequence[str] = ()
    ranking: Mapping[str, object] | KnobPairs = ()  # RankingKnobs; normalized to sorted (name, value) pairs
    user_id: str | None = None  # the shopper whose tracked events the server adds to ``history``
    explain: bool = False  # the answer carries each item's score components
    model: str = RECOMMEND_MODEL  # the ensemble that answers (an experiment arm's model variant)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_id", validate_user_id(self.user_id))
        if not isinstance(self.explain, bool):
            raise InvalidRequest(f"explain must be a bool, got {self.explain!r}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidRequest(f"model must be a non-empty str, got {self.model!r}")
        query = "" if self.query is None else self.query
        _utf8("query", query)
        object.__setattr__(self, "query", query[:MAX_QUERY_CHARS])  # the server reads no more than this
        object.__setattr__(self, "k", validate_k(self.k))
        object.__setattr__(self, "history", _history(self.history))
        if self.now is not None:
            object.__setattr__(self, "now", _number("now", self.now))
        for name in FILTERS:
            object.__setattr__(self, name, _names(name, getattr(self, name)))
        object.__setattr__(self, "ranking", validate_ranking(dict(self.ranking)))

    @property
    def items(self) -> tuple[HistoryItem, ...]:
        """``history`` as normalized by the constructor."""
        return cast(tuple[HistoryItem, ...], self.history)

    @property
    def knobs(self) -> KnobPairs:
        """``ranking`` as normalized by the constructor: sorted (name, value) pairs."""
        return cast(KnobPairs, self.ranking)

    @property
    def text(self) -> str:
        """``query`` as normalized by the constructor (``None`` became ``""``)."""
        return cast(str, self.query)

    @property
    def batch_signature(self) -> tuple[object, ...]:
        """Rows of one Triton request go to one model and carry the same optional tensors: NOW and the knobs."""
        return (self.model, self.now is not None, tuple(name for name, _ in self.knobs))

    @classmethod
    def coerce(cls, value: RecommendRequest | Mapping[str, object], index: int | None = None) -> RecommendRequest:
        """A ``RecommendRequest`` from itself or a mapping of ``recommend``'s keyword arguments."""
        if isinstance(value, RecommendRequest):
            return value
        where = "" if index is None else f"requests[{index}]: "
        if not isinstance(value, Mapping):
            raise InvalidRequest(f"{where}expected a RecommendRequest or a mapping, got {type(value).__name__}")
        unknown = set(value) - {"query", "history", "k", "now", "user_id", "explain", *FILTERS, *OVERRIDABLE}
        if unknown:
            raise InvalidRequest(f"{where}unknown argument(s) {sorted(unknown)}")
        fields = {key: v for key, v in value.items() if key not in OVERRIDABLE}
        knobs = {key: v for key, v in value.items() if key in OVERRIDABLE}
        try:
            return cls(**fields, ranking=knobs)  # type: ignore[arg-type]  # checked by __post_init__
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}{exc}") from None


def batch_recommend_tensors(requests: Sequence[RecommendRequest]) -> list[Tensor]:
    """Tensors of one ``recommend`` request with one row per element of ``requests``.

    Histories are padded to the longest with ``b""`` ids (the server's padding) and 0.0 stamps;
    ``HISTORY_EVENTS`` goes along when any row names an event type (``b""``: none given).
    ``NOW`` is a per-request optional tensor, so rows must all have it or all lack it.
    """
    if not requests or len(requests) > MAX_BATCH:
        raise InvalidRequest(f"a batch needs 1..{MAX_BATCH} rows, got {len(requests)}")
    signatures = {r.batch_signature for r in requests}
    if len(signatures) != 1:
        raise InvalidRequest("now and ranking options must be given for every row of a batch or for none")
    has_now = {r.now is not None for r in requests}
    rows = len(requests)
    queries = np.array([[r.text.encode("utf-8")] for r in requests], dtype=object)
    tensors = [
        Tensor("QUERY", queries, "BYTES"),
        Tensor("K", np.array([[r.k] for r in requests], dtype=np.int32), "INT32"),
    ]
    width = max(len(r.items) for r in requests)
    if width:
        ids = np.full((rows, width), b"", dtype=object)
        stamps = np.zeros((rows, width), dtype=np.float64)
        events = np.full((rows, width), b"", dtype=object)
        has_events = False
        for b, request in enumerate(requests):
            for j, item in enumerate(request.items):
                ids[b, j] = item[0].encode("utf-8")
                stamps[b, j] = item[1]
                if len(item) == 3:
                    events[b, j] = item[2].encode("utf-8")
                    has_events = True
        tensors.append(Tensor("HISTORY_IDS", ids, "BYTES"))
        tensors.append(Tensor("HISTORY_TS", stamps, "FP64"))
        if has_events:
            tensors.append(Tensor("HISTORY_EVENTS", events, "BYTES"))
    if any(r.explain for r in requests):
        tensors.append(Tensor(EXPLAIN, np.array([[r.explain] for r in requests], dtype=np.bool_), "BOOL"))
    if any(r.user_id for r in requests):
        users = np.array([[(r.user_id or "").encode("utf-8")] for r in requests], dtype=object)  # b"": none
        tensors.append(Tensor(USER_ID, users, "BYTES"))
    if has_now == {True}:
        tensors.append(Tensor("NOW", np.array([[r.now] for r in requests], dtype=np.float64), "FP64"))
    for name, tensor_name in FILTERS.items():
        lists = [getattr(r, name) for r in requests]
        width = max(len(values) for values in lists)
        if width:
            array = np.full((rows, width), b"", dtype=object)  # b"" is padding to the server
            for b, values in enumerate(lists):
                array[b, : len(values)] = [v.encode("utf-8") for v in values]
            tensors.append(Tensor(tensor_name, array, "BYTES"))
    for knob, _ in requests[0].knobs:
        datatype = OVERRIDABLE[knob]
        values = [dict(r.knobs)[knob] for r in requests]
        if datatype == "BYTES":
            array = np.array([[str(v).encode("utf-8")] for v in values], dtype=object)
        else:
            array = np.array([[v] for v in values], dtype=_NUMPY_TYPES[datatype])
        tensors.append(Tensor(knob.upper(), array, datatype))
    return checked_size(tensors)


def checked_size(tensors: list[Tensor]) -> list[Tensor]:
    """``tensors``, once their encoded size is known to fit ``MAX_MESSAGE_BYTES``."""
    size = sum(
        sum(len(v) for v in t.array.flat) + 4 * t.array.size if t.datatype == "BYTES" else t.array.nbytes
        for t in tensors
    )
    if size > MAX_MESSAGE_BYTES:
        raise InvalidRequest(
            f"the request is {size:,} bytes; at most {MAX_MESSAGE_BYTES:,} may be sent: send fewer rows or a shorter history"
        )
    return tensors


def recommend_tensors(
    query: str | None, history: Iterable[HistoryItem] | None, k: int, now: float | None = None
) -> list[Tensor]:
    """Tensors of one ``recommend`` request (batch of one row)."""
    return batch_recommend_tensors([RecommendRequest(query, history, k, now)])


def embed_tensors(texts: Sequence[str]) -> list[Tensor]:
    encoded = [t.encode("utf-8") for t in validate_texts(texts)]
    return checked_size([Tensor("TEXT", np.array(encoded, dtype=object).reshape(-1, 1), "BYTES")])


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """One validated ``track`` event; constructing it checks every field (``aisle_contract.check_event``).

    ``ts`` defaults to the time of construction (when the event happened, by this machine's clock);
    ``event_id`` to a new UUID, fixed here so that a retried call carries the same id and the server
    stores the event once; ``properties`` is a JSON-serializable mapping (≤ 4 KiB as compact JSON).
    Which event types are allowed is the server's config: it answers ``InvalidRequest`` for others.
    """

    user_id: str
    item_id: str
    event_type: str
    ts: float | None = None
    event_id: str | None = None
    properties: Mapping[str, Any] | str | None = None  # normalized to compact JSON text ("" for none)

    def __post_init__(self) -> None:
        now = time.time()
        ts = now if self.ts is None else self.ts
        if isinstance(ts, numbers.Real) and not isinstance(ts, bool):
            ts = float(ts)
        properties = ""
        if self.properties is not None:
            if not isinstance(self.properties, Mapping):
                raise InvalidRequest(f"properties must be a mapping, got {type(self.properties).__name__}")
            try:
                properties = json.dumps(dict(self.properties), separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(f"properties: not JSON-serializable: {exc}") from None
        try:
            check_event(self.user_id, self.item_id, self.event_type, ts, now, self.event_id, properties or None, None)
        except EventError as exc:
            raise InvalidRequest(str(exc)) from None
        for name in ("user_id", "item_id", "event_type"):
            _utf8(name, getattr(self, name))
        object.__setattr__(self, "ts", ts)
        object.__setattr__(self, "event_id", self.event_id or uuid.uuid4().hex)
        object.__setattr__(self, "properties", properties)

    @classmethod
    def coerce(cls, value: TrackEvent | Mapping[str, Any], index: int | None = None) -> TrackEvent:
        """A ``TrackEvent`` from itself or a mapping of ``track``'s arguments."""
        if isinstance(value, TrackEvent):
            return value
        where = "" if index is None else f"events[{index}]: "
        if not isinstance(value, Mapping):
            raise InvalidRequest(f"{where}expected a TrackEvent or a mapping, got {type(value).__name__}")
        unknown = set(value) - {"user_id", "item_id", "event_type", "ts", "event_id", "properties"}
        if unknown:
            raise InvalidRequest(f"{where}unknown argument(s) {sorted(unknown)}")
        try:
            return cls(**value)
        except TypeError as exc:  # a required field is missing
            raise InvalidRequest(f"{where}{exc}") from None
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}{exc}") from None


def _bytes_column(values: Iterable[str]) -> npt.NDArray[Any]:
    """A BYTES [B, 1] column of UTF-8 strings."""
    return np.array([[v.encode("utf-8")] for v in values], dtype=object)


def track_tensors(events: Sequence[TrackEvent]) -> list[Tensor]:
    """Tensors of one ``track`` request, one row per event (``PROPERTIES`` when any event has some)."""
    if not events or len(events) > MAX_TRACK_BATCH:
        raise InvalidRequest(f"a track request needs 1..{MAX_TRACK_BATCH} events, got {len(events)}")

    column = _bytes_column
    tensors = [
        Tensor("USER_ID", column(e.user_id for e in events), "BYTES"),
        Tensor("ITEM_ID", column(e.item_id for e in events), "BYTES"),
        Tensor("EVENT_TYPE", column(e.event_type for e in events), "BYTES"),
        Tensor("TS", np.array([[e.ts] for e in events], dtype=np.float64), "FP64"),
        Tensor("EVENT_ID", column(cast(str, e.event_id) for e in events), "BYTES"),
    ]
    if any(e.properties for e in events):
        tensors.append(Tensor("PROPERTIES", column(cast(str, e.properties) for e in events), "BYTES"))
    return checked_size(tensors)


@dataclass(frozen=True, slots=True)
class ItemUpdate:
    """One live catalog change, checked on construction (``aisle_contract.check_item_change``).

    ``op="upsert"`` inserts the item (``fields`` must then hold a ``title``) or sets the ``fields``
    it names — ``title``, ``description``, ``category``, ``created_at``, ``popularity``,
    ``in_stock``, ``hidden``, and the catalog's declared attributes (``price``, ``tags``, ...; the
    server checks their types; ``None`` clears one); a changed title or description is re-embedded.
    ``op="delete"`` removes the item for good (``fields`` empty).
    """

    item_id: str
    fields: Mapping[str, Any] | None = None
    op: str = "upsert"

    def __post_init__(self) -> None:
        try:
            fields = check_item_change(self.item_id, self.op, dict(self.fields or {}), attributes=None)
        except ItemChangeError as exc:
            raise InvalidRequest(str(exc)) from None
        except TypeError as exc:
            raise InvalidRequest(f"fields: {exc}") from None
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode("utf-8")) > MAX_FIELDS_BYTES:
            raise InvalidRequest(f"fields: more than {MAX_FIELDS_BYTES} bytes as compact JSON")
        _utf8("item_id", self.item_id)
        object.__setattr__(self, "fields", fields)

    @classmethod
    def coerce(cls, value: ItemUpdate | Mapping[str, Any], index: int | None = None) -> ItemUpdate:
        """An ``ItemUpdate`` from itself or a flat mapping: ``item_id``, optional ``op``, the fields."""
        if isinstance(value, ItemUpdate):
            return value
        where = "" if index is None else f"items[{index}]: "
        if not isinstance(value, Mapping):
            raise InvalidRequest(f"{where}expected an ItemUpdate or a mapping, got {type(value).__name__}")
        fields = {k: v for k, v in value.items() if k not in ("item_id", "op")}
        if "item_id" not in value:
            raise InvalidRequest(f"{where}item_id: missing")
        op = value.get("op", "upsert")
        if op not in CATALOG_OPS:
            raise InvalidRequest(f"{where}op: {op!r} is not one of {', '.join(CATALOG_OPS)}")
        try:
            return cls(value["item_id"], fields, op)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}{exc}") from None


def catalog_tensors(updates: Sequence[ItemUpdate]) -> list[Tensor]:
    """Tensors of one ``catalog`` request, one row per change."""
    if not updates or len(updates) > MAX_CATALOG_BATCH:
        raise InvalidRequest(f"a catalog request needs 1..{MAX_CATALOG_BATCH} changes, got {len(updates)}")

    column = _bytes_column
    return checked_size(
        [
            Tensor("ITEM_ID", column(u.item_id for u in updates), "BYTES"),
            Tensor("OP", column(u.op for u in updates), "BYTES"),
            Tensor(
                "FIELDS",
                column(json.dumps(u.fields, separators=(",", ":"), ensure_ascii=False) for u in updates),
                "BYTES",
            ),
        ]
    )


def rules_tensors(op: str, rule_set: str, rules: object = None) -> list[Tensor]:
    """Tensors of one ``rules`` request: ``op`` on the set ``rule_set``; ``rules`` is the set (a
    mapping ``{"rules": [...]}``, a list of rules, or their JSON text) or a rollback's target."""
    if op not in RULE_OPS:
        raise InvalidRequest(f"op {op!r} is not one of {', '.join(RULE_OPS)}")
    if not isinstance(rule_set, str) or not valid_rule_set_name(rule_set):
        raise InvalidRequest(f"rule_set {rule_set!r}: a name is 1-64 letters, digits, '-', '_' or '.'")
    if rules is None:
        text = ""
    elif isinstance(rules, str):
        text = rules
    else:
        try:
            text = json.dumps(rules, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"rules: not JSON-serializable: {exc}") from None
    if len(text.encode("utf-8")) > MAX_RULES_BYTES:
        raise InvalidRequest(f"rules: more than {MAX_RULES_BYTES} bytes as JSON")

    def cell(value: str) -> npt.NDArray[np.object_]:
        return np.array([[value.encode("utf-8")]], dtype=object)

    return [
        Tensor("OP", cell(op), "BYTES"),
        Tensor("RULE_SET", cell(rule_set), "BYTES"),
        Tensor("RULES", cell(text), "BYTES"),
    ]
