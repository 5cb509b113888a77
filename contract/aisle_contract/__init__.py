"""What the SDK, the server models and the toolchain must agree on — and nothing else.

Model and tensor names, the ranking knobs with their defaults and validation, and the limits of
one request. Plain Python, no dependencies: the SDK (on any numpy), the Python-backend models
inside tritonserver and the offline toolchain all import it, so a rule is written once and a
client can check a request exactly as the server will.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

# --------------------------------------------------------------------------- models

RECOMMEND_MODEL = "recommend"
EMBED_MODELS = {"query": "embed_query", "item": "embed_item"}

# --------------------------------------------------------------------------- tensors (batch first)

QUERY, QUERY_EMBEDDING = "QUERY", "QUERY_EMBEDDING"
HISTORY_IDS, HISTORY_TS, HISTORY_EVENTS = "HISTORY_IDS", "HISTORY_TS", "HISTORY_EVENTS"
K, NOW = "K", "NOW"
FILTER_NAMES = ("EXCLUDE_IDS", "ALLOW_CATEGORIES", "DENY_CATEGORIES")
#: BYTES [B, k_max], in every answer: per result, the id of the ``explore`` rule that placed it there
#: (``b""``: ranked by score, and padding), so exposure logs mark explored positions without ``EXPLAIN``.
EXPLORED = "EXPLORED"
#: The bandit that chooses an ``explore`` rule's items (``aisle_server.exploration.thompson``): the
#: ``arm`` explanations and exposure logs report for an explored position.
EXPLORATION_ARM = "thompson"
OUTPUT_NAMES = ("ITEM_IDS", "SCORES", "UNKNOWN_HISTORY", EXPLORED)
INTEREST_OUTPUT = "INTEREST"  # rerank only: the vector each row was ranked with
EMBED_INPUT, EMBED_OUTPUT = "TEXT", "EMBEDDING"

# --------------------------------------------------------------------------- explanations

#: ``recommend``/``rerank``: optional BOOL [B, 1]; true: that row's answer carries its explanation.
EXPLAIN = "EXPLAIN"
#: FP32 [B, k_max, len(SCORE_COMPONENT_NAMES)]: each result's score split into additive parts that
#: sum to its ``SCORES`` entry (NaN padding). Absent from the answer when no row of the request asked.
SCORE_COMPONENTS = "SCORE_COMPONENTS"
#: INT32 [B, k_max]: each result's 0-based position by score alone, before MMR/DPP and the category
#: cap picked the page (-1 padding): where diversity moved it. Absent when no row asked.
PRE_DIVERSITY_RANK = "PRE_DIVERSITY_RANK"
#: The order of ``SCORE_COMPONENTS``' last axis. ``dense``: the query's share of the cosine between
#: the item and the request's interest vector (a feed the learned ranker ordered: NaN, its parts are
#: in ``FEATURE_CONTRIBUTIONS``); ``shopper_interest``: the history's share (a feed's
#: whole cosine); ``lexical``: ``lexical_weight`` × BM25 (BM25 alone in ``search_mode=lexical``);
#: ``cooccurrence``, ``freshness``, ``popularity``: weight × signal; ``diversity``: always 0, since
#: MMR/DPP choose and order the page but never change a score (see ``PRE_DIVERSITY_RANK``).
#: ``rules``: what the merchandising rules in force added (boosts and buries, ``aisle_server.rules``).
SCORE_COMPONENT_NAMES = (
    "dense",
    "lexical",
    "shopper_interest",
    "cooccurrence",
    "freshness",
    "popularity",
    "diversity",
    "rules",
)
#: The log's per-item statistics the learned ranker reads (``aisle_server.features`` says what each is).
ITEM_STAT_NAMES = (
    "events_7d",
    "events_30d",
    "events_all",
    "buyers",
    "repeat_share",
    "repurchase_interval_days",
    "first_seen_days",
)
#: The learned ranker's features (``aisle_server.features``), in the order of its model's columns:
#: each candidate source's score and rank, popularity over several windows, the repurchase features
#: of the shopper's own history, item age, category affinity and history length (what each means:
#: ``aisle_server.features``). A feed the ranker ordered explains each result by these features'
#: exact tree-SHAP contributions plus ``RANKER_BIAS`` (``FEATURE_CONTRIBUTIONS``).
RANKER_FEATURE_NAMES = (
    "cosine",
    "cosine_rank",
    "cooccurrence",
    "cooccurrence_raw",
    "cooccurrence_rank",
    "popularity_prior",
    "popularity_rank",
    "hand_score",
    "hand_rank",
    "from_dense",
    "from_popular",
    "from_cooccurrence",
    "from_history",
    *ITEM_STAT_NAMES,
    "history_count",
    "history_recency_weight",
    "days_since_last",
    "interval_ratio",
    "item_age_days",
    "category_affinity",
    "history_length",
    "history_repeat_share",
)
#: The last column of ``FEATURE_CONTRIBUTIONS``: the ranker's expected score, the part no feature explains.
RANKER_BIAS = "bias"
#: FP32 [B, k_max, len(RANKER_FEATURE_NAMES) + 1]: for a row the learned ranker ordered (with
#: ``EXPLAIN``), each result's score split into its features' contributions plus ``RANKER_BIAS``,
#: summing to its ``SCORES`` entry (NaN padding, and NaN for rows the ranker did not order).
#: Absent when no row asked.
FEATURE_CONTRIBUTIONS = "FEATURE_CONTRIBUTIONS"
#: BYTES [B, k_max]: per result, a JSON list of what each merchandising rule did to it (``[]`` when
#: nothing; ``b""`` padding): ``{"rule", "effect", "delta"}`` for boosts and buries, ``{"rule",
#: "effect": "pin", "position"}`` and ``{"rule", "effect": "slot"}`` for the rules that placed it.
RULE_EFFECTS = "RULE_EFFECTS"
EXPLAIN_OUTPUTS = (SCORE_COMPONENTS, PRE_DIVERSITY_RANK, FEATURE_CONTRIBUTIONS, RULE_EFFECTS)

# --------------------------------------------------------------------------- limits of one request

#: Results per row.
MAX_K = 1000
#: Rows per Triton request: every model's ``max_batch_size``.
MAX_BATCH = 64
#: Characters kept per token of a tower's ``max_length`` before tokenizing. Tokens of real text
#: are a few characters long, so only a text whose first ``max_length`` tokens span more than this
#: many characters per token on average (long runs of spaces, one giant "word") tokenizes
#: differently after the cut; the tokenizer's work, though, grows with the whole text.
CHARS_PER_TOKEN = 16
#: The most characters of a query or text any serving stage reads (rerank's lexical search
#: included) and the SDK sends: what a 512-token tower could use.
MAX_QUERY_CHARS = 512 * CHARS_PER_TOKEN
#: The largest gRPC message the SDK sends or accepts. A full request (64 rows, each a cut query and
#: a history of a few hundred ids) and a full answer (64 rows of 1,000 ids) are a few MB; anything
#: near this is a mistake to refuse before it costs the server a copy. tritonserver 2.51 has no
#: option to cap what it receives: in front of a shared deployment, cap it at the gateway.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# --------------------------------------------------------------------------- ranking knobs

DIVERSITY_METHODS = ("mmr", "dpp")
#: The rule set a request gets unless it names another (``rule_set``).
DEFAULT_RULE_SET = "default"
#: Characters of a request's ``surface`` or ``segment``.
MAX_CONTEXT_CHARS = 64


def valid_rule_set_name(name: str) -> bool:
    """1-64 characters of letters, digits, ``-``, ``_`` and ``.``: a rule set's name is a key and a CLI word."""
    return 1 <= len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)


SEARCH_MODES = ("hybrid", "dense", "lexical")


def parse_bool(text: str) -> bool:
    """A model-config boolean: 1/true/yes or 0/false/no, any case."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise ValueError(f"{text!r} is not a boolean")


_CASTS = {"int": int, "float": float, "str": str, "bool": parse_bool}


@dataclass(frozen=True)
class RankingConfig:
    """Defaults of the ranking stage; set in the ``rerank`` model config's ``parameters``."""

    default_k: int = 10
    max_k: int = MAX_K
    candidates: int = 200
    max_history: int = 512
    query_weight: float = 0.5
    recency_half_life_s: float = 7 * 24 * 3600.0
    exclude_history: bool = True
    freshness_weight: float = 0.0
    freshness_half_life_s: float = 365 * 24 * 3600.0
    popularity_weight: float = 0.0
    fallback_freshness_weight: float = 0.2
    diversity: float = 0.0
    diversity_method: str = "dpp"
    category_cap: int = 0
    search_mode: str = "hybrid"
    lexical_weight: float = 0.5
    #: correct query terms the catalog never uses to the catalog term they most likely meant (BM25)
    typo_tolerance: bool = True
    #: retrieve candidates by scanning every item (the exact inner product over all embeddings, BM25
    #: of every item, the filters as a whole-catalog mask) even where the index has top-k engines
    #: (``aisle_server.hnsw``, ``LexicalIndex.top``): the reference the engines are measured against
    exact_retrieval: bool = False
    feed_popularity_weight: float = 1.0
    cooccurrence_weight: float = 0.0
    popular_candidates: int = 100
    cooccurrence_candidates: int = 200
    user_encoder: bool = True
    #: order a feed's candidates by the learned ranker when ``aisle finetune`` installed one
    #: (``rerank/learned/ranker``); false: the hand-weighted sum above
    learned_ranker: bool = True
    #: a ``USER_ID`` request's newest stored events that join its history (0: the store is not read)
    state_events: int = 50
    #: how often each instance reads the live catalog changes logged since its last read (seconds)
    catalog_poll_s: float = 0.2
    #: request context the merchandising rules read (``aisle_server.rules``): the page the request
    #: fills (``home``, ``pdp``, ...) and the shopper's segment, as the caller names them ("" = none)
    surface: str = ""
    segment: str = ""
    #: the stored rule set applied (``aisle rules set --rule-set NAME``); ``rules=False``: none at all
    rule_set: str = DEFAULT_RULE_SET
    rules: bool = True
    #: a rule set's JSON applied to this request in place of the stored ``rule_set`` (a dry run: nothing
    #: is stored; ``aisle console`` shows a page before and after a proposed rule); checked as ``aisle
    #: rules check`` checks a set, a malformed one refused naming ``DRAFT_RULES`` and the place ("" = none)
    draft_rules: str = ""

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> RankingConfig:
        """Build from Triton model-config parameters (all strings); unknown keys are errors."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(parameters) - set(known)
        if unknown:
            raise ValueError(f"unknown rerank parameters: {sorted(unknown)}")
        config = cls(**{name: _CASTS[str(known[name])](text) for name, text in parameters.items()})  # type: ignore[operator]  # the cast is chosen by the field's type name
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field out of range."""
        checks = {
            "default_k": 1 <= self.default_k <= self.max_k,
            "candidates": self.candidates >= 1,
            "max_history": self.max_history >= 1,
            "query_weight": 0.0 <= self.query_weight <= 1.0,
            "recency_half_life_s": self.recency_half_life_s > 0,
            "freshness_weight": self.freshness_weight >= 0,
            "freshness_half_life_s": self.freshness_half_life_s > 0,
            "popularity_weight": self.popularity_weight >= 0,
            "fallback_freshness_weight": self.fallback_freshness_weight >= 0,
            "diversity": 0.0 <= self.diversity <= 1.0,
            "diversity_method": self.diversity_method in DIVERSITY_METHODS,
            "category_cap": self.category_cap >= 0,
            "search_mode": self.search_mode in SEARCH_MODES,
            "lexical_weight": self.lexical_weight >= 0,
            "feed_popularity_weight": self.feed_popularity_weight >= 0,
            "cooccurrence_weight": self.cooccurrence_weight >= 0,
            "popular_candidates": self.popular_candidates >= 0,
            "cooccurrence_candidates": self.cooccurrence_candidates >= 0,
            "state_events": self.state_events >= 0,
            "catalog_poll_s": self.catalog_poll_s > 0,
            "surface": len(self.surface) <= MAX_CONTEXT_CHARS,
            "segment": len(self.segment) <= MAX_CONTEXT_CHARS,
            "rule_set": valid_rule_set_name(self.rule_set),
            "draft_rules": len(self.draft_rules.encode("utf-8")) <= MAX_RULES_BYTES,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if name == "draft_rules" and not ok:  # the text itself would drown the message
                raise ValueError(f"draft_rules is {len(value.encode('utf-8'))} bytes; at most {MAX_RULES_BYTES}")
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"{name}={value!r} is out of range")


#: Knobs a request may override, and the Triton data type of their tensors (named in upper case).
OVERRIDABLE = {
    "query_weight": "FP32",
    "recency_half_life_s": "FP64",
    "exclude_history": "BOOL",
    "freshness_weight": "FP32",
    "freshness_half_life_s": "FP64",
    "popularity_weight": "FP32",
    "diversity": "FP32",
    "diversity_method": "BYTES",
    "category_cap": "INT32",
    "search_mode": "BYTES",
    "lexical_weight": "FP32",
    "typo_tolerance": "BOOL",
    "feed_popularity_weight": "FP32",
    "cooccurrence_weight": "FP32",
    "user_encoder": "BOOL",
    "learned_ranker": "BOOL",
    "surface": "BYTES",
    "segment": "BYTES",
    "rule_set": "BYTES",
    "rules": "BOOL",
    "draft_rules": "BYTES",
}

# --------------------------------------------------------------------------- events and shopper state

TRACK_MODEL = "track"
#: ``recommend``/``rerank``: optional BYTES [B, 1]; the shopper whose stored events join the history
#: (``b""`` = none).
USER_ID = "USER_ID"
#: ``track`` inputs, BYTES [B, 1] unless noted; ``TS`` (FP64), ``EVENT_ID`` and ``PROPERTIES`` (a JSON
#: object's text) are optional.
ITEM_ID, EVENT_TYPE, TS, EVENT_ID, PROPERTIES = "ITEM_ID", "EVENT_TYPE", "TS", "EVENT_ID", "PROPERTIES"
#: ``track`` outputs: the event's id and whether this call stored it (False: the id was stored before).
STORED = "STORED"

#: An answer shown to a shopper (``aisle.exposure_event``): its properties carry the ``request_id``,
#: ``experiment``, ``arm`` and ``items``; ``aisle experiment report`` joins outcomes to it.
EXPOSURE_EVENT = "exposure"
#: Event types ``track`` accepts unless its config's ``event_types`` says otherwise.
DEFAULT_EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", EXPOSURE_EVENT)
#: Event types that go to the event log only: never into a shopper's history (``recommend(user_id=…)``
#: would exclude every item shown) nor into the interaction log ``aisle events export`` writes.
LOG_ONLY_EVENT_TYPES = (EXPOSURE_EVENT,)
#: Relative weight of each event type (a purchase says more about a shopper than a view); any other
#: type weighs 1.0. The interaction log's weights (``aisle_export.data.interactions``) and those of the
#: events ``rerank`` reads from the state store are this one table.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {"purchase": 1.0, "add_to_cart": 0.5, "click": 0.25, "view": 0.1}
#: Characters of a user, item or event id, or an event type.
MAX_EVENT_ID_CHARS = 256
#: Bytes of an event's ``properties`` as compact JSON.
MAX_PROPERTIES_BYTES = 4096
#: How far after the server's clock an event's ``ts`` may be (clock skew; later is a unit or clock bug).
EVENT_FUTURE_SLACK_S = 300.0
#: Events per ``track`` request (``track_many`` sends more in several requests).
MAX_TRACK_BATCH = MAX_BATCH


class EventError(ValueError):
    """An event field is invalid; ``field`` names it (``user_id``, ``ts``, ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def _event_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise EventError(field, f"must be a str, got {type(value).__name__}")
    if not value.strip():
        raise EventError(field, "must be a non-empty string")
    if len(value) > MAX_EVENT_ID_CHARS:
        raise EventError(field, f"is {len(value)} characters long; at most {MAX_EVENT_ID_CHARS}")
    return value


def check_event(
    user_id: object,
    item_id: object,
    event_type: object,
    ts: object,
    now: float,
    event_id: object = None,
    properties_json: str | None = None,
    allowed_event_types: tuple[str, ...] | None = DEFAULT_EVENT_TYPES,
) -> None:
    """Raise ``EventError`` naming the first invalid field of one event.

    The SDK checks an event with this before sending it (``allowed_event_types=None``: which types
    a server accepts is its own config) and ``track`` checks it again with its allowed types: ids
    non-empty and at most ``MAX_EVENT_ID_CHARS``, a finite ``ts`` at most ``EVENT_FUTURE_SLACK_S``
    after ``now`` (and after 1970), properties at most ``MAX_PROPERTIES_BYTES`` of JSON.
    """
    _event_text("user_id", user_id)
    _event_text("item_id", item_id)
    _event_text("event_type", event_type)
    if allowed_event_types is not None and event_type not in allowed_event_types:
        raise EventError("event_type", f"{event_type!r} is not one of {', '.join(allowed_event_types)}")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise EventError("ts", f"must be a finite number of unix seconds, got {ts!r}")
    if ts < 0:
        raise EventError("ts", f"{ts!r} is before 1970")
    if ts > now + EVENT_FUTURE_SLACK_S:
        raise EventError("ts", f"{ts!r} is {ts - now:.0f} s in the future (at most {EVENT_FUTURE_SLACK_S:.0f} s)")
    if event_id is not None:
        _event_text("event_id", event_id)
    if properties_json is not None and len(properties_json.encode("utf-8")) > MAX_PROPERTIES_BYTES:
        raise EventError("properties", f"is more than {MAX_PROPERTIES_BYTES} bytes of JSON")


# --------------------------------------------------------------------------- live catalog changes

CATALOG_MODEL = "catalog"
#: ``catalog`` inputs, BYTES [B, 1]: ``ITEM_ID`` (shared with ``track``), ``OP`` (one of ``CATALOG_OPS``)
#: and ``FIELDS`` (a JSON object's text: the fields an upsert sets; ``{}`` for a delete).
OP, FIELDS = "OP", "FIELDS"
#: ``catalog`` output, BYTES [B, 1]: the id the change was logged under (a Redis stream id, ordered).
CHANGE_ID = "CHANGE_ID"
#: ``upsert`` inserts an item or changes the fields it names; ``delete`` removes it for good.
CATALOG_OPS = ("upsert", "delete")
#: The fields an upsert may set, and their JSON types. ``title``/``description``/``category`` are
#: the item's text (a change of title or description re-embeds it); ``hidden`` takes an item out of
#: every answer without deleting it (a takedown that may be undone).
ITEM_FIELD_TYPES: dict[str, str] = {
    "title": "str",
    "description": "str",
    "category": "str",
    "created_at": "number",
    "popularity": "number",
    "in_stock": "bool",
    "hidden": "bool",
}
#: Fields whose change re-embeds the item through the item tower.
TEXT_FIELDS = ("title", "description")
#: Bytes of one change's ``FIELDS`` as compact JSON.
MAX_FIELDS_BYTES = 16 * 1024
#: Changes per ``catalog`` request (``update_items`` sends more in several requests).
MAX_CATALOG_BATCH = MAX_BATCH
#: datetime.max as unix seconds: a larger ``created_at`` is almost always milliseconds by mistake.
MAX_UNIX_SECONDS = 253_402_300_799.0


class ItemChangeError(EventError):
    """A catalog change's field is invalid; ``field`` names it (``item_id``, ``op``, ``popularity``, ...)."""


#: The types a catalog's item attributes may be declared with (``aisle_server.attributes``), and
#: the JSON each takes in a live change: a number, a string, a list of strings, true/false.
ATTRIBUTE_TYPES = ("number", "string", "string_list", "bool")
#: Strings in one ``string_list`` attribute value.
MAX_ATTRIBUTE_LIST = 64


def check_attribute(item_id: str, name: str, kind: str, value: object) -> object:
    """``value`` of attribute ``name`` (declared ``kind``) normalized, or ``ItemChangeError`` naming
    the item and the field: numbers finite (as float), strings stripped, lists of strings; ``null``
    clears the attribute (missing)."""
    where = f"item {item_id!r}: attribute {name!r} is declared {kind}"
    if value is None:
        return None
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ItemChangeError(name, f"{where}, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ItemChangeError(name, f"{where}, got {value!r}")
        return value
    if kind == "string":
        if not isinstance(value, str) or len(value) > MAX_CONTEXT_CHARS * 4:
            raise ItemChangeError(name, f"{where} (at most {MAX_CONTEXT_CHARS * 4} characters), got {value!r}")
        return value.strip()
    if kind == "string_list":
        if (
            not isinstance(value, list)
            or len(value) > MAX_ATTRIBUTE_LIST
            or not all(isinstance(v, str) and "\x1f" not in v for v in value)
        ):
            raise ItemChangeError(name, f"{where} (a list of at most {MAX_ATTRIBUTE_LIST} strings), got {value!r}")
        return [v.strip() for v in value]
    raise ItemChangeError(name, f"unknown attribute type {kind!r}; the types are {', '.join(ATTRIBUTE_TYPES)}")


#: A catalog that declares no item attributes.
NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})


def check_item_change(
    item_id: object, op: object, fields: object, attributes: Mapping[str, str] | None = NO_ATTRIBUTES
) -> dict[str, object]:
    """The change's fields, normalized (numbers as float, text stripped); ``ItemChangeError`` names
    the first invalid field. The SDK checks a change with this before sending it and ``catalog``
    checks it again: unknown fields, wrong types, NaN/infinite or negative numbers, an empty title,
    text longer than ``MAX_QUERY_CHARS``, a delete with fields or an upsert without any.

    ``attributes``: the catalog's declared item attributes (name → one of ``ATTRIBUTE_TYPES``), which
    a change may set beside the fields (the ``catalog`` model passes its index's). None (the SDK,
    which does not know the catalog): any other field passes with a JSON-shape check, and the
    server checks it against the declaration.
    """
    try:
        _event_text("item_id", item_id)
    except EventError as exc:
        raise ItemChangeError(exc.field, exc.reason) from None
    if op not in CATALOG_OPS:
        raise ItemChangeError("op", f"{op!r} is not one of {', '.join(CATALOG_OPS)}")
    if not isinstance(fields, Mapping):
        raise ItemChangeError("fields", f"must be a mapping (a JSON object), got {type(fields).__name__}")
    if op == "delete":
        if fields:
            raise ItemChangeError("fields", f"a delete takes no fields, got {sorted(fields)}")
        return {}
    if not fields:
        raise ItemChangeError("fields", f"an upsert needs at least one of {', '.join(ITEM_FIELD_TYPES)}")
    normalized: dict[str, object] = {}
    for name, value in fields.items():
        kind = ITEM_FIELD_TYPES.get(name)
        if kind is None:
            normalized[str(name)] = _attribute_change(str(item_id), str(name), value, attributes)
            continue
        if kind == "str":
            if not isinstance(value, str):
                raise ItemChangeError(name, f"must be a str, got {type(value).__name__}")
            value = value.strip()
            if name == "title" and not value:
                raise ItemChangeError(name, "must be a non-empty string")
            if len(value) > MAX_QUERY_CHARS:
                raise ItemChangeError(name, f"is {len(value)} characters long; at most {MAX_QUERY_CHARS}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ItemChangeError(name, f"must be true or false, got {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ItemChangeError(name, f"must be a finite number, got {value!r}")
            value = float(value)
            if name == "popularity" and value < 0:
                raise ItemChangeError(name, f"{value!r} is negative")
            if name == "created_at" and abs(value) > MAX_UNIX_SECONDS:
                raise ItemChangeError(name, f"{value!r} is not unix seconds (milliseconds by mistake?)")
        normalized[name] = value
    return normalized


def _attribute_change(item_id: str, name: str, value: object, attributes: Mapping[str, str] | None) -> object:
    """A change's attribute value: checked against the declaration, or (none known) by its JSON shape."""
    if attributes is not None:
        kind = attributes.get(name)
        if kind is None:
            declared = ", ".join(sorted(attributes)) or "none"
            raise ItemChangeError(
                name,
                f"item {item_id!r}: unknown field {name!r}; the fields are {', '.join(ITEM_FIELD_TYPES)} "
                f"and the catalog's attributes ({declared})",
            )
        return check_attribute(item_id, name, kind, value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return check_attribute(item_id, name, "number", value)
    if isinstance(value, str):
        return check_attribute(item_id, name, "string", value)
    if isinstance(value, list):
        return check_attribute(item_id, name, "string_list", value)
    raise ItemChangeError(
        name,
        f"item {item_id!r}: unknown field {name!r} (not an attribute either: a number, string, list of strings or bool); "
        f"the fields are {', '.join(ITEM_FIELD_TYPES)}",
    )


# --------------------------------------------------------------------------- merchandising rules

#: ``rules`` model (``aisle_server.triton_models.RulesModel``): BYTES [1, 1] inputs ``OP`` (one of
#: ``RULE_OPS``), ``RULE_SET`` (a name, ``valid_rule_set_name``) and ``RULES`` (``set``/``check``: the
#: rule set's JSON text; ``rollback``: ``{"to": VERSION}`` or ``{}`` for the version before the
#: current one); output ``RESULT`` BYTES [1, 1], a JSON object.
RULES_MODEL = "rules"
RULE_SET, RULES, RESULT = "RULE_SET", "RULES", "RESULT"
RULE_OPS = ("set", "check", "list", "rollback")
#: Bytes of one rule set's JSON text.
MAX_RULES_BYTES = 256 * 1024


def item_text(title: str, description: str = "", category: str = "") -> str:
    """The text the item tower embeds for an item — at indexing and for a live change alike.

    ``"{title}. {description}. {category}"`` with empty parts left out, e.g.
    ``"Toy Story (1995). Animation, Children's, Comedy"``. The category is also left out when the
    title or description already mentions it: mean pooling weighs repeated words more, and a
    repeated category would pull every item of a category towards the same point. No ``". "`` is
    inserted after a part that already ends a sentence (``"That Darn Cat!"``).
    """
    parts = [title]
    if description:
        parts.append(description)
    mentioned = f"{title} {description}".casefold()
    if category and category.casefold() not in mentioned:
        parts.append(category)
    text = parts[0]
    for part in parts[1:]:
        text += (" " if text.endswith((".", "!", "?")) else ". ") + part
    return text
