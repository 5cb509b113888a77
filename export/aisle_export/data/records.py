"""Raw records and field parsers shared by every file reader of the toolchain (catalogs, interaction logs).

A catalog and an interaction log are read the same way — CSV, JSON Lines or Parquet, one record at a
time, each named by where it starts (``"line N"``, ``"row N"``) — and their shared columns (ids,
times, non-negative numbers) mean the same thing in both files, so the two readers take their raw
records and field rules from here rather than from each other. What a column means for one file
(a catalog's ``in_stock``, a log's ``event_type``) stays with that file's reader.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from aisle_contract import MAX_UNIX_SECONDS

#: How many skip reasons a reader keeps: enough to diagnose, bounded for huge bad files.
MAX_SKIP_REASONS = 10


class RecordFileError(ValueError):
    """A whole file cannot be read (empty, a missing or duplicated column, unreadable bytes);
    each reader re-raises it as its own error type. ``location`` and ``field`` as there."""

    def __init__(self, message: str, location: str | None = None, field: str | None = None):
        super().__init__(message)
        self.location = location
        self.field = field


class RowError(ValueError):
    """One record is invalid; the reader adds the file and location to make a RecordFileError."""

    def __init__(self, field: str | None, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason


#: A raw record and where it came from, e.g. ``("line 17", {"item_id": "42", ...})``; a reader
#: yields a RowError instead of the mapping when it cannot even split the record into fields.
RawRecord = tuple[str, Mapping[str, Any] | RowError]


# --------------------------------------------------------------------------- readers


def read_csv(
    path: Path,
    required: tuple[str, ...],
    known: tuple[str, ...],
) -> Iterator[RawRecord]:
    """``known`` is unused here (CSV rows are split in full) but kept so all readers share one signature."""
    # utf-8-sig: spreadsheet exports often start with a BOM that would otherwise glue itself
    # onto the first column name.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _next_csv_row(reader, path)
        if header is None:
            raise RecordFileError(f"{path.name}: file is empty (expected a header row)")
        columns = [name.strip() for name in header]
        check_columns(path, columns, required)
        while True:
            start = reader.line_num + 1  # the row may span lines; report where it starts
            values = _next_csv_row(reader, path)
            if values is None:
                return
            if not values:  # blank line
                continue
            location = f"line {start}"
            if len(values) != len(columns):
                yield location, RowError(None, f"has {len(values)} fields, the header has {len(columns)}")
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
        raise RecordFileError(f"{path.name} {location}: unreadable CSV ({exc})", location) from None


def read_jsonl(
    path: Path,
    required: tuple[str, ...],
    known: tuple[str, ...],
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
                yield location, RowError(None, f"is not valid JSON ({exc.msg})")
                continue
            if not isinstance(record, dict):
                yield location, RowError(None, f"is a JSON {type(record).__name__}, expected an object")
                continue
            yield location, record


def read_parquet(
    path: Path,
    required: tuple[str, ...],
    known: tuple[str, ...],
) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq  # optional dependency: only Parquet files need it

    parquet = pq.ParquetFile(path)
    columns = parquet.schema_arrow.names
    check_columns(path, columns, required)
    wanted = [name for name in known if name in columns]
    number = 0
    for batch in parquet.iter_batches(columns=wanted):
        for record in batch.to_pylist():
            number += 1
            yield f"row {number}", record


#: Raw readers by extension, called as ``reader(path, required_columns, known_columns)``.
READERS: dict[str, Callable[..., Iterator[RawRecord]]] = {
    ".csv": read_csv,
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".parquet": read_parquet,
}


def check_columns(path: Path, columns: list[str], required: tuple[str, ...]) -> None:
    duplicated = sorted({name for name in columns if columns.count(name) > 1 and name})
    if duplicated:
        raise RecordFileError(f"{path.name}: duplicate column {duplicated[0]!r} in the header", field=duplicated[0])
    for name in required:
        if name not in columns:
            raise RecordFileError(
                f"{path.name}: missing required column {name!r} (columns: {', '.join(columns)})",
                field=name,
            )


# --------------------------------------------------------------------------- fields


def parse_id(value: Any, name: str = "item_id") -> str:
    """An id column (``name``: also ``user_id`` in interaction logs)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is not None and not isinstance(value, str):
        raise RowError(name, f"{name} {value!r} is not a string or an integer")
    return parse_text(value, name, required=True)


def parse_text(value: Any, name: str, required: bool) -> str:
    if value is None:
        if required:
            raise RowError(name, f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise RowError(name, f"{name} {value!r} is not a string")
    text = value.strip()
    if required and not text:
        raise RowError(name, f"{name} is empty")
    return text


def is_missing(value: Any) -> bool:
    """None, blank strings and float NaN (how dataframe tools write a gap) mean 'not given'."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def parse_time(value: Any, name: str = "created_at") -> float:
    """Unix seconds from a number, numeric string, ISO-8601 string or datetime; NaN if missing.

    ``name`` is the field named in errors (interaction logs parse ``timestamp`` with it).
    """
    if is_missing(value):
        return math.nan
    if isinstance(value, dt.datetime):  # Parquet timestamp columns
        return _datetime_seconds(value)
    if isinstance(value, dt.date):  # Parquet date columns
        return _datetime_seconds(dt.datetime(value.year, value.month, value.day))
    bad = RowError(name, f"{name} {value!r} is not unix seconds or ISO-8601")
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
        raise RowError(name, f"{name} {value!r} is past year 9999 as unix seconds (milliseconds?)")
    return seconds


def _parse_time_string(text: str, bad: RowError) -> float:
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


def parse_non_negative(value: Any, name: str) -> float:
    """A finite float >= 0 from a number or numeric string (``name`` is the field in errors)."""
    bad = RowError(name, f"{name} {value!r} is not a finite number >= 0")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad
    try:
        number = float(value)
    except ValueError:
        raise bad from None
    if not math.isfinite(number) or number < 0:
        raise bad
    return number
