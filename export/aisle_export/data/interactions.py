"""Read any store's interaction log (CSV, JSON Lines or Parquet) into validated, time-sorted arrays.

An interaction log is what a store already has: who did what with which item, and when. MovieLens
ratings (:mod:`aisle_export.data.movielens`) and the Online Retail invoices
(:mod:`aisle_export.data.online_retail`) are two instances of it; evaluation, fine-tuning and the
histories sent to the server all start from :class:`Interactions`.

The file formats, readers and row locations are those of a catalog (:mod:`aisle_export.data.records`
reads both): ``"line N"`` for ``.csv`` (where the record starts) and ``.jsonl``/``.ndjson``,
``"row N"`` for ``.parquet``.

Columns (unknown extra columns are ignored):

==============  =========================================================================
``user_id``     required; string, stripped, non-empty; integral numbers → decimal string.
``item_id``     required; same rules as a catalog's ``item_id``, so the two files join.
``timestamp``   required; unix seconds (number or numeric string) or ISO-8601, naive = UTC.
                NaN/inf, past year 9999 (milliseconds by mistake) and more than a day after
                the time of reading (a clock or unit bug: the future has not happened) are
                errors.
``event_type``  optional non-empty string (``purchase``, ``view``…); missing/blank →
                :data:`DEFAULT_EVENT`. With ``allowed_event_types`` anything else is an error,
                so a typo (``purchse``) cannot silently become a new event type of weight 1.
``weight``      optional finite float >= 0, default 1.
==============  =========================================================================

A row's weight in :class:`Interactions` is its ``weight`` times its event type's weight
(:data:`DEFAULT_EVENT_WEIGHTS`, overridable): a purchase says more about a shopper than a view.
Rows whose item is not in the catalog (``catalog_ids``) are dropped and counted, never an error:
logs outlive products, and a delisted product cannot be recommended anyway.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from aisle_contract import DEFAULT_EVENT_WEIGHTS as CONTRACT_EVENT_WEIGHTS
from aisle_export.data.records import (
    MAX_SKIP_REASONS,
    READERS,
    RawRecord,
    RecordFileError,
    RowError,
    is_missing,
    parse_id,
    parse_non_negative,
    parse_time,
)

REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_COLUMNS = ("event_type", "weight")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

#: Relative weight of each event type; any other type weighs 1.0 unless configured. One table with
#: the weights ``rerank`` gives the events it reads from the state store (``aisle_contract``).
DEFAULT_EVENT_WEIGHTS: dict[str, float] = dict(CONTRACT_EVENT_WEIGHTS)
#: The event type of rows that have none.
DEFAULT_EVENT = "interaction"

#: How many unknown item ids a :class:`LogReport` lists: enough to spot an id-format mismatch.
MAX_UNKNOWN_EXAMPLES = 10

# A timestamp more than this far after the time of reading is an error.
_FUTURE_SLACK_S = 86_400.0

#: Rows parsed into Python objects before they are packed into arrays: reading holds at most this
#: many row objects (~300 bytes each) besides the packed arrays (~100 bytes a row), however long
#: the log — a million-row log held ~300 MB of row objects when they were packed only at the end.
CHUNK_ROWS = 65_536


class InteractionLogError(ValueError):
    """The log cannot be read as given; ``location`` and ``field`` as in ``RecordFileError``."""

    def __init__(self, message: str, location: str | None = None, field: str | None = None):
        super().__init__(message)
        self.location = location
        self.field = field


@dataclass
class Interactions:
    """Parallel arrays sorted by timestamp (stable)."""

    user_id: np.ndarray  # '<U…'
    item_id: np.ndarray  # '<U…'
    weight: np.ndarray  # float32: the row's weight times its event type's weight
    timestamp: np.ndarray  # float64 unix seconds
    event_type: np.ndarray | None = None  # '<U…'; None means every row is DEFAULT_EVENT

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.timestamp = np.asarray(self.timestamp, dtype=np.float64)
        if self.event_type is None:
            self.event_type = np.full(len(self.user_id), DEFAULT_EVENT)
        lengths = {len(a) for a in (self.user_id, self.item_id, self.weight, self.timestamp, self.event_type)}
        if len(lengths) != 1:
            raise ValueError(f"Interactions arrays differ in length: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.user_id)

    def subset(self, mask: np.ndarray) -> Interactions:
        """The rows selected by a boolean mask (or index array), every field kept."""
        assert self.event_type is not None  # filled by __post_init__
        return Interactions(
            self.user_id[mask], self.item_id[mask], self.weight[mask], self.timestamp[mask], self.event_type[mask]
        )


@dataclass
class LogReport:
    """What reading a log kept and dropped, for the CLI and evaluation reports."""

    path: str
    rows: int  # records in the file (valid or not)
    kept: int
    skipped: int  # malformed rows skipped (skip_bad_rows=True)
    skip_reasons: list[str]  # the first MAX_SKIP_REASONS of them
    unknown_items: int  # rows dropped: item_id not in catalog_ids
    unknown_examples: list[str]  # up to MAX_UNKNOWN_EXAMPLES distinct such ids
    event_counts: dict[str, int]  # kept rows per event type

    def to_dict(self) -> dict:
        return asdict(self)


class _Event(NamedTuple):
    user_id: str
    item_id: str
    timestamp: float
    event_type: str
    weight: float


@dataclass
class _Rules:
    """How rows are validated and weighed; built once per read."""

    event_weights: dict[str, float]
    allowed: frozenset[str] | None
    latest: float  # newest acceptable timestamp


@dataclass
class _Tally:
    rows: int = 0
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    unknown_items: int = 0
    unknown_examples: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- public API


def parse_event_weights(text: str | None) -> dict[str, float]:
    """``"purchase=1,view=0.1"`` → the defaults updated with those weights.

    For command-line flags. Blank or None gives the defaults. A pair without ``=``, an empty
    name, or a weight that is not a finite number >= 0 raises ValueError naming the pair.
    """
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        pair = pair.strip()
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"event weight {pair!r} is not NAME=WEIGHT")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"event weight {pair!r}: {value.strip()!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"event weight {pair!r}: the weight must be finite and >= 0")
        weights[name] = weight
    return weights


def read_interactions(
    path: Path | str,
    *,
    skip_bad_rows: bool = False,
    event_weights: Mapping[str, float] | None = None,
    allowed_event_types: Collection[str] | None = None,
    catalog_ids: Collection[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[Interactions, LogReport]:
    """Read, validate and time-sort an interaction log; the format is chosen by the extension.

    Rows are validated one by one and packed into arrays every ``chunk_rows`` rows (the result
    does not depend on it).

    ``event_weights`` update :data:`DEFAULT_EVENT_WEIGHTS` (a partial mapping keeps the other
    defaults). A malformed row raises :class:`InteractionLogError` naming file, location and
    field, unless ``skip_bad_rows``; rows whose item is not in ``catalog_ids`` are dropped and
    counted in the report.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InteractionLogError(
            f"{path.name}: unsupported interaction log extension {path.suffix or '(none)'!r} "
            f"(supported: {', '.join(sorted(READERS))})"
        )
    rules = _Rules(
        event_weights=_checked_weights(event_weights),
        allowed=frozenset(allowed_event_types) if allowed_event_types is not None else None,
        latest=time.time() + _FUTURE_SLACK_S,
    )
    in_catalog = (
        None
        if catalog_ids is None
        else (catalog_ids if isinstance(catalog_ids, (set, frozenset)) else frozenset(catalog_ids))
    )
    tally = _Tally()
    records = reader(path, REQUIRED_COLUMNS, KNOWN_COLUMNS)
    chunks = _read_events(path, records, rules, in_catalog, skip_bad_rows, tally, chunk_rows)
    if not chunks:
        raise InteractionLogError(
            f"{path.name}: no interactions left ({tally.rows} rows, {tally.skipped} malformed "
            f"skipped, {tally.unknown_items} with items not in the catalog"
            + (f", e.g. {tally.unknown_examples[:3]}" if tally.unknown_examples else "")
            + ")"
        )
    interactions = _to_interactions(chunks)
    assert interactions.event_type is not None
    report = LogReport(
        path=str(path),
        rows=tally.rows,
        kept=len(interactions),
        skipped=tally.skipped,
        skip_reasons=tally.skip_reasons,
        unknown_items=tally.unknown_items,
        unknown_examples=tally.unknown_examples,
        event_counts=dict(Counter(interactions.event_type.tolist())),
    )
    return interactions, report


def write_interactions(
    interactions: Interactions,
    path: Path | str,
    *,
    event_weights: Mapping[str, float] | None = None,
) -> Path:
    """Write a log that :func:`read_interactions` reads back equal (same ``event_weights``).

    The format follows the suffix (``.csv``, ``.jsonl``/``.ndjson``, ``.parquet``). Since reading
    multiplies by the event type's weight, the written ``weight`` is the stored weight divided
    by it; the column is left out when every such weight is 1 (a plain log stays plain).
    Timestamps are written as unix seconds, exact for any float64.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise ValueError(
            f"{path.name}: unsupported extension {path.suffix or '(none)'!r} (supported: {', '.join(sorted(READERS))})"
        )
    columns = _output_columns(interactions, _checked_weights(event_weights))
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        _write_csv(path, columns)
    elif suffix == ".parquet":
        _write_parquet(path, columns)
    else:
        _write_jsonl(path, columns)
    return path


def user_sequences(interactions: Interactions, min_len: int = 1) -> dict[str, tuple[list[str], np.ndarray, list[str]]]:
    """user → (item ids, float64 timestamps, event types), oldest → newest, >= min_len events.

    Users appear in order of their first interaction. Does not assume ``interactions`` is sorted
    (a filtered or merged copy may not be); ties in time keep their given order.
    """
    order = np.argsort(interactions.timestamp, kind="stable")
    users = interactions.user_id[order]
    assert interactions.event_type is not None
    items = interactions.item_id[order].tolist()
    events = interactions.event_type[order].tolist()
    times = interactions.timestamp[order]
    rows: dict[str, list[int]] = {}
    for position, user in enumerate(users.tolist()):
        rows.setdefault(user, []).append(position)
    return {
        user: ([items[p] for p in positions], times[positions], [events[p] for p in positions])
        for user, positions in rows.items()
        if len(positions) >= min_len
    }


def user_histories(interactions: Interactions, min_len: int = 1) -> dict[str, list[tuple[str, float]]]:
    """Each user's ``(item_id, timestamp)`` list, oldest → newest, for users with >= min_len.

    Users appear in order of their first interaction. Does not assume ``interactions`` is sorted
    (a filtered or split copy may not be); ties in time keep their given order.
    """
    return {
        user: list(zip(items, times.tolist()))
        for user, (items, times, _) in user_sequences(interactions, min_len).items()
    }


# --------------------------------------------------------------------------- reading


def _checked_weights(event_weights: Mapping[str, float] | None) -> dict[str, float]:
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    for name, weight in (event_weights or {}).items():
        if not math.isfinite(float(weight)) or weight < 0:
            raise ValueError(f"event weight {name}={weight!r} must be finite and >= 0")
        weights[name] = float(weight)
    return weights


def _read_events(
    path: Path,
    records: Iterator[RawRecord],
    rules: _Rules,
    known: Collection[str] | None,
    skip_bad_rows: bool,
    tally: _Tally,
    chunk_rows: int = CHUNK_ROWS,
) -> list[_Chunk]:
    """Validate every record, packed into arrays every ``chunk_rows`` rows, in file order;
    file-level problems of the shared readers become our error."""
    chunks: list[_Chunk] = []
    events: list[_Event] = []
    try:
        for location, record in records:
            tally.rows += 1
            try:
                event = _parse_record(record, rules)
            except RowError as exc:
                error = InteractionLogError(f"{path.name} {location}: {exc.reason}", location, exc.field)
                if not skip_bad_rows:
                    raise error from None
                tally.skipped += 1
                if len(tally.skip_reasons) < MAX_SKIP_REASONS:
                    tally.skip_reasons.append(str(error))
                continue
            if known is not None and event.item_id not in known:
                tally.unknown_items += 1
                if len(tally.unknown_examples) < MAX_UNKNOWN_EXAMPLES and event.item_id not in tally.unknown_examples:
                    tally.unknown_examples.append(event.item_id)
                continue
            events.append(event)
            if len(events) >= chunk_rows:
                chunks.append(_pack(events))
                events = []
    except RecordFileError as exc:  # empty file, missing column, unreadable CSV
        raise InteractionLogError(str(exc), exc.location, exc.field) from None
    return [*chunks, _pack(events)] if events else chunks


def _parse_record(record: Mapping[str, Any] | RowError, rules: _Rules) -> _Event:
    """Validate one raw record from any reader; raises RowError naming the bad field."""
    if isinstance(record, RowError):
        raise record
    event_type = _parse_event_type(record.get("event_type"), rules.allowed)
    return _Event(
        user_id=parse_id(record.get("user_id"), "user_id"),
        item_id=parse_id(record.get("item_id"), "item_id"),
        timestamp=_parse_timestamp(record.get("timestamp"), rules.latest),
        event_type=event_type,
        weight=_parse_weight(record.get("weight")) * rules.event_weights.get(event_type, 1.0),
    )


def _parse_timestamp(value: Any, latest: float) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("timestamp", "timestamp is missing")
    if not _is_finite_or_not_numeric(value):  # else NaN would read as "missing"
        raise RowError("timestamp", f"timestamp {value!r} is not a finite number")
    seconds = parse_time(value, "timestamp")
    if seconds > latest:
        when = dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat()
        raise RowError(
            "timestamp",
            f"timestamp {value!r} ({when}) is more than a day in the future (milliseconds? a wrong clock?)",
        )
    return seconds


def _is_finite_or_not_numeric(value: Any) -> bool:
    """False for NaN/inf given as a float or a numeric string ("nan", "inf")."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return True
    return not isinstance(value, float) or math.isfinite(value)


def _parse_event_type(value: Any, allowed: frozenset[str] | None) -> str:
    if is_missing(value):
        event_type = DEFAULT_EVENT
    elif not isinstance(value, str):
        raise RowError("event_type", f"event_type {value!r} is not a string")
    else:
        event_type = value.strip()
    if allowed is not None and event_type not in allowed:
        given = " (none given)" if is_missing(value) else ""
        raise RowError("event_type", f"event_type {event_type!r}{given} is not one of the allowed {sorted(allowed)}")
    return event_type


def _parse_weight(value: Any) -> float:
    if is_missing(value) and not isinstance(value, float):  # a float NaN is a bad weight
        return 1.0
    return parse_non_negative(value, "weight")


class _Chunk(NamedTuple):
    """Validated rows as arrays, in file order."""

    user_id: np.ndarray
    item_id: np.ndarray
    timestamp: np.ndarray
    event_type: np.ndarray
    weight: np.ndarray


def _pack(events: list[_Event]) -> _Chunk:
    users, items, times, types, weights = zip(*events)
    return _Chunk(
        np.array(users, dtype=str),
        np.array(items, dtype=str),
        np.array(times, dtype=np.float64),
        np.array(types, dtype=str),
        np.array(weights, dtype=np.float32),
    )


def _to_interactions(chunks: list[_Chunk]) -> Interactions:
    columns = _Chunk(*(np.concatenate(column) for column in zip(*chunks)))
    order = np.argsort(columns.timestamp, kind="stable")  # same-second events keep file order
    return Interactions(
        user_id=columns.user_id[order],
        item_id=columns.item_id[order],
        weight=columns.weight[order],
        timestamp=columns.timestamp[order],
        event_type=columns.event_type[order],
    )


# --------------------------------------------------------------------------- writing


def _output_columns(interactions: Interactions, event_weights: Mapping[str, float]) -> dict[str, list[Any]]:
    """Column name → Python values, ``weight`` only when some row's own weight is not 1."""
    assert interactions.event_type is not None
    types = interactions.event_type.tolist()
    factors = np.array([event_weights.get(t, 1.0) for t in types], dtype=np.float64)
    stored = interactions.weight.astype(np.float64)
    # A zero event weight makes every row of that type 0 whatever it was written as: write 0.
    own = np.divide(stored, factors, out=np.zeros_like(stored), where=factors > 0)
    columns: dict[str, list[Any]] = {
        "user_id": interactions.user_id.tolist(),
        "item_id": interactions.item_id.tolist(),
        "timestamp": [_number(t) for t in interactions.timestamp.tolist()],
        "event_type": types,
    }
    if len(own) and not np.all(own == 1.0):
        columns["weight"] = [_number(w) for w in own.tolist()]
    return columns


def _number(value: float) -> int | float:
    """Integral floats as ints (``874724710``, not ``874724710.0``): shorter, same value."""
    return int(value) if value.is_integer() else value


def _write_csv(path: Path, columns: dict[str, list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*columns.values()))


def _write_jsonl(path: Path, columns: dict[str, list[Any]]) -> None:
    names = list(columns)
    with path.open("w", encoding="utf-8") as f:
        for values in zip(*columns.values()):
            f.write(json.dumps(dict(zip(names, values)), ensure_ascii=False) + "\n")


def _write_parquet(path: Path, columns: dict[str, list[Any]]) -> None:
    import pyarrow as pa  # optional dependency: only Parquet logs need it
    import pyarrow.parquet as pq

    types = {
        "user_id": pa.string(),
        "item_id": pa.string(),
        "timestamp": pa.float64(),
        "event_type": pa.string(),
        "weight": pa.float64(),
    }
    table = pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items()})
    pq.write_table(table, path)
