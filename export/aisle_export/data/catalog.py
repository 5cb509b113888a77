"""Read a product catalog (CSV, JSON Lines or Parquet) into validated columns for indexing.

Every format goes through the same row validator (:func:`_parse_record`), so a catalog means the
same thing whichever way it was exported; the readers only differ in how they produce raw records
and how they name a record's position:

* ``.csv`` — ``"line N"``: the physical line on which the record *starts*, counted by the csv
  module, so quoted fields spanning several lines do not throw the numbers off.
* ``.jsonl`` / ``.ndjson`` — ``"line N"``: one JSON object per line, blank lines ignored.
* ``.parquet`` — ``"row N"``: 1-based row number across all row groups.

Columns (unknown extra columns are ignored):

=============  ==========================================================================
``item_id``    required; string, stripped, non-empty. JSON/Parquet integers become their
               decimal string; integral floats too (``3.0`` → ``"3"``) because dataframe
               tools silently turn an integer id column with a gap into floats.
``title``      required; string, stripped, non-empty.
``description`` optional string, default ``""``.
``category``   optional string, default ``""``.
``created_at`` unix seconds (number or numeric string, may be negative: old movies) or an
               ISO-8601 date/datetime string; naive datetimes are UTC. Missing → NaN.
``popularity`` finite float >= 0. Missing → 0.0, so a ranker can use it without NaN checks.
``in_stock``   true/false/1/0/yes/no/y/n (case-insensitive) or a JSON bool. Missing → True,
               because a catalog that does not track stock is selling everything it lists.
=============  ==========================================================================

A malformed row raises :class:`CatalogError` naming the file, the row's location and the field,
unless ``skip_bad_rows=True``, in which case it is counted in :attr:`Catalog.skipped`. Duplicate
item ids are always an error (naming both locations): silently keeping one of two products with
the same id would make search results point at the wrong product.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from aisle_contract import MAX_UNIX_SECONDS, item_text

REQUIRED_COLUMNS = ("item_id", "title")
OPTIONAL_COLUMNS = ("description", "category", "created_at", "popularity", "in_stock")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

#: How many skip reasons :class:`Catalog` keeps: enough to diagnose, bounded for huge bad files.
MAX_SKIP_REASONS = 10


_TRUE_WORDS = frozenset({"true", "1", "yes", "y"})
_FALSE_WORDS = frozenset({"false", "0", "no", "n"})


class CatalogError(ValueError):
    """The catalog cannot be read as given.

    ``location`` is where the problem is (``"line 17"``, ``"row 17"``) or None for whole-file
    problems; ``field`` is the column concerned, or None when the row as a whole is malformed.
    """

    def __init__(self, message: str, location: str | None = None, field: str | None = None):
        super().__init__(message)
        self.location = location
        self.field = field


class _RowError(ValueError):
    """One record is invalid; the reader adds the file and location to make a CatalogError."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


#: A raw record and where it came from, e.g. ``("line 17", {"item_id": "42", ...})``; a reader
#: yields a _RowError instead of the mapping when it cannot even split the record into fields.
RawRecord = tuple[str, Mapping[str, Any] | _RowError]


class _Row(NamedTuple):
    item_id: str
    title: str
    description: str
    category: str
    created_at: float
    popularity: float
    in_stock: bool


@dataclass
class Catalog:
    """Validated catalog columns, one entry per item, in file order."""

    item_ids: np.ndarray  # '<U…'
    titles: np.ndarray  # '<U…'
    descriptions: np.ndarray  # '<U…'; "" when absent
    categories: np.ndarray  # '<U…'; "" when absent
    created_at: np.ndarray  # float64 unix seconds; NaN when unknown
    popularity: np.ndarray  # float32, >= 0
    in_stock: np.ndarray  # bool
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids)

    def texts(self) -> list[str]:
        """The text the item tower embeds for each item (``aisle_contract.item_text``)."""
        return [
            item_text(title, description, category)
            for title, description, category in zip(
                self.titles.tolist(), self.descriptions.tolist(), self.categories.tolist()
            )
        ]


def read_catalog(path: Path | str, skip_bad_rows: bool = False) -> Catalog:
    """Read and validate a catalog file; the format is chosen by the file extension."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        supported = ", ".join(sorted(_READERS))
        raise CatalogError(
            f"{path.name}: unsupported catalog extension {path.suffix or '(none)'!r} (supported: {supported})"
        )
    rows: list[_Row] = []
    first_seen: dict[str, str] = {}
    skipped = 0
    skip_reasons: list[str] = []
    for location, record in reader(path):
        try:
            row = _parse_record(record)
        except _RowError as exc:
            error = CatalogError(f"{path.name} {location}: {exc.reason}", location, exc.field)
            if not skip_bad_rows:
                raise error from None
            skipped += 1
            if len(skip_reasons) < MAX_SKIP_REASONS:
                skip_reasons.append(str(error))
            continue
        if row.item_id in first_seen:
            raise CatalogError(
                f"{path.name} {location}: duplicate item_id {row.item_id!r} (first seen at {first_seen[row.item_id]})",
                location,
                "item_id",
            )
        first_seen[row.item_id] = location
        rows.append(row)
    if not rows:
        raise CatalogError(f"{path.name}: catalog has no valid rows ({skipped} skipped)")
    return _to_catalog(rows, skipped, skip_reasons)


# --------------------------------------------------------------------------- readers


def _read_csv(
    path: Path,
    required: tuple[str, ...] = REQUIRED_COLUMNS,
    known: tuple[str, ...] = KNOWN_COLUMNS,
) -> Iterator[RawRecord]:
    """``known`` is unused here (CSV rows are split in full) but kept so all readers share the
    signature :mod:`aisle_export.data.interactions` calls them with."""
    # utf-8-sig: spreadsheet exports often start with a BOM that would otherwise glue itself
    # onto the first column name.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _next_csv_row(reader, path)
        if header is None:
            raise CatalogError(f"{path.name}: file is empty (expected a header row)")
        columns = [name.strip() for name in header]
        _check_columns(path, columns, required)
        while True:
            start = reader.line_num + 1  # the row may span lines; report where it starts
            values = _next_csv_row(reader, path)
            if values is None:
                return
            if not values:  # blank line
                continue
            location = f"line {start}"
            if len(values) != len(columns):
                yield location, _RowError(None, f"has {len(values)} fields, the header has {len(columns)}")
                continue
            yield location, dict(zip(columns, values))


def _next_csv_row(reader: Any, path: Path) -> list[str] | None:
    """The next parsed row, or None at the end; unreadable bytes abort the whole file."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except (csv.Error, UnicodeDecodeError) as exc:
        location = f"line {reader.line_num + 1}"
        raise CatalogError(f"{path.name} {location}: unreadable CSV ({exc})", location) from None


def _read_jsonl(
    path: Path,
    required: tuple[str, ...] = REQUIRED_COLUMNS,
    known: tuple[str, ...] = KNOWN_COLUMNS,
) -> Iterator[RawRecord]:
    """JSON Lines has no header: a missing required field is reported per row by the parser."""
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            location = f"line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield location, _RowError(None, f"is not valid JSON ({exc.msg})")
                continue
            if not isinstance(record, dict):
                yield location, _RowError(None, f"is a JSON {type(record).__name__}, expected an object")
                continue
            yield location, record


def _read_parquet(
    path: Path,
    required: tuple[str, ...] = REQUIRED_COLUMNS,
    known: tuple[str, ...] = KNOWN_COLUMNS,
) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq  # optional dependency: only Parquet catalogs need it

    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    _check_columns(path, columns, required)
    wanted = [name for name in known if name in columns]
    number = 0
    for batch in parquet.iter_batches(columns=wanted):
        for record in batch.to_pylist():
            number += 1
            yield f"row {number}", record


#: Raw readers by extension, shared with :mod:`aisle_export.data.interactions`: called as
#: ``reader(path, required_columns, known_columns)`` (both default to the catalog's).
_READERS: dict[str, Callable[..., Iterator[RawRecord]]] = {
    ".csv": _read_csv,
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".parquet": _read_parquet,
}


def _check_columns(path: Path, columns: list[str], required: tuple[str, ...] = REQUIRED_COLUMNS) -> None:
    duplicated = sorted({name for name in columns if columns.count(name) > 1 and name})
    if duplicated:
        raise CatalogError(f"{path.name}: duplicate column {duplicated[0]!r} in the header", field=duplicated[0])
    for name in required:
        if name not in columns:
            raise CatalogError(
                f"{path.name}: missing required column {name!r} (columns: {', '.join(columns)})",
                field=name,
            )


# --------------------------------------------------------------------------- validation


def _parse_record(record: Mapping[str, Any] | _RowError) -> _Row:
    """Validate one raw record from any reader; raises _RowError naming the bad field."""
    if isinstance(record, _RowError):
        raise record
    return _Row(
        item_id=_parse_item_id(record.get("item_id")),
        title=_parse_text(record.get("title"), "title", required=True),
        description=_parse_text(record.get("description"), "description", required=False),
        category=_parse_text(record.get("category"), "category", required=False),
        created_at=_parse_created_at(record.get("created_at")),
        popularity=_parse_popularity(record.get("popularity")),
        in_stock=_parse_in_stock(record.get("in_stock")),
    )


def _parse_item_id(value: Any, name: str = "item_id") -> str:
    """An id column (``name``: also ``user_id`` in interaction logs)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is not None and not isinstance(value, str):
        raise _RowError(name, f"{name} {value!r} is not a string or an integer")
    return _parse_text(value, name, required=True)


def _parse_text(value: Any, name: str, required: bool) -> str:
    if value is None:
        if required:
            raise _RowError(name, f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise _RowError(name, f"{name} {value!r} is not a string")
    text = value.strip()
    if required and not text:
        raise _RowError(name, f"{name} is empty")
    return text


def _is_missing(value: Any) -> bool:
    """None, blank strings and float NaN (how dataframe tools write a gap) mean 'not given'."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def _parse_created_at(value: Any, name: str = "created_at") -> float:
    """Unix seconds from a number, numeric string, ISO-8601 string or datetime; NaN if missing.

    ``name`` is the field named in errors (interaction logs parse ``timestamp`` with it).
    """
    if _is_missing(value):
        return math.nan
    if isinstance(value, dt.datetime):  # Parquet timestamp columns
        return _datetime_seconds(value)
    if isinstance(value, dt.date):  # Parquet date columns
        return _datetime_seconds(dt.datetime(value.year, value.month, value.day))
    bad = _RowError(name, f"{name} {value!r} is not unix seconds or ISO-8601")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_time_string(value.strip(), bad)
    else:
        raise bad
    if not math.isfinite(seconds):
        raise bad
    if abs(seconds) > MAX_UNIX_SECONDS:
        raise _RowError(name, f"{name} {value!r} is past year 9999 as unix seconds (milliseconds?)")
    return seconds


def _parse_time_string(text: str, bad: _RowError) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    # Python < 3.11 fromisoformat does not accept the common "Z" suffix.
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        return _datetime_seconds(dt.datetime.fromisoformat(iso))
    except ValueError:
        raise bad from None


def _datetime_seconds(value: dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _parse_popularity(value: Any) -> float:
    return 0.0 if _is_missing(value) else _parse_non_negative(value, "popularity")


def _parse_non_negative(value: Any, name: str) -> float:
    """A finite float >= 0 from a number or numeric string (``name`` is the field in errors)."""
    bad = _RowError(name, f"{name} {value!r} is not a finite number >= 0")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    try:
        number = float(value)
    except ValueError:
        raise bad from None
    if not math.isfinite(number) or number < 0:
        raise bad
    return number


def _parse_in_stock(value: Any) -> bool:
    if _is_missing(value):
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise _RowError("in_stock", f"in_stock {value!r} is not true/false/1/0/yes/no/y/n")


# --------------------------------------------------------------------------- assembly


def _to_catalog(rows: list[_Row], skipped: int, skip_reasons: list[str]) -> Catalog:
    columns = list(zip(*rows))
    item_ids, titles, descriptions, categories, created_at, popularity, in_stock = columns
    return Catalog(
        item_ids=np.array(item_ids, dtype=str),
        titles=np.array(titles, dtype=str),
        descriptions=np.array(descriptions, dtype=str),
        categories=np.array(categories, dtype=str),
        created_at=np.array(created_at, dtype=np.float64),
        popularity=np.array(popularity, dtype=np.float32),
        in_stock=np.array(in_stock, dtype=bool),
        skipped=skipped,
        skip_reasons=skip_reasons,
    )
