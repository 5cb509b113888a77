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

Item attributes (price, brand, tags, ...: what merchandising rules read, ``docs/merchandising.md``) are
declared once per catalog in a side file beside it, ``<name>.attributes.json`` for ``<name>.csv``
(``.jsonl``, ``.parquet``): ``{"price": "number", "brand": "string", "tags": "string_list",
"on_sale": "bool"}``. Each declared name is then a column of the catalog, optional per row: a
number (or numeric string), a string, a list of strings (a JSON list; in CSV ``a|b|c``), a boolean
(the ``in_stock`` words). A value of the wrong type is a :class:`CatalogError` naming the row and
the attribute. Without the side file the catalog has no attributes and such columns are ignored.

A malformed row raises :class:`CatalogError` naming the file, the row's location and the field,
unless ``skip_bad_rows=True``, in which case it is counted in :attr:`Catalog.skipped`. Duplicate
item ids are always an error (naming both locations): silently keeping one of two products with
the same id would make search results point at the wrong product.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from aisle_contract import ItemChangeError, check_attribute, item_text
from aisle_export.data.records import (
    MAX_SKIP_REASONS,
    READERS,
    RecordFileError,
    RowError,
    is_missing,
    parse_id,
    parse_non_negative,
    parse_text,
    parse_time,
)

REQUIRED_COLUMNS = ("item_id", "title")
OPTIONAL_COLUMNS = ("description", "category", "created_at", "popularity", "in_stock")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

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
    #: the declared item attributes (name → type; ``<name>.attributes.json``), empty when none
    attribute_schema: dict[str, str] = field(default_factory=dict)
    #: per item, its attributes' checked values (a missing one left out)
    attribute_values: list[dict[str, object]] = field(default_factory=list)

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
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        supported = ", ".join(sorted(READERS))
        raise CatalogError(
            f"{path.name}: unsupported catalog extension {path.suffix or '(none)'!r} (supported: {supported})"
        )
    rows: list[_Row] = []
    attributes: list[dict[str, object]] = []
    schema = read_attribute_schema(path)
    first_seen: dict[str, str] = {}
    skipped = 0
    skip_reasons: list[str] = []
    try:
        for location, record in reader(path, REQUIRED_COLUMNS, KNOWN_COLUMNS + tuple(schema)):
            try:
                row = _parse_record(record)
                values = _parse_attributes(record, schema, row.item_id)  # type: ignore[arg-type]  # a RowError raised above
            except RowError as exc:
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
            attributes.append(values)
    except RecordFileError as exc:  # empty file, missing column, unreadable CSV
        raise CatalogError(str(exc), exc.location, exc.field) from None
    if not rows:
        raise CatalogError(f"{path.name}: catalog has no valid rows ({skipped} skipped)")
    catalog = _to_catalog(rows, skipped, skip_reasons)
    catalog.attribute_schema, catalog.attribute_values = schema, attributes if schema else []
    return catalog


def attribute_schema_path(path: Path | str) -> Path:
    """Where a catalog's attribute declaration lives: ``<name>.attributes.json`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.attributes.json")


def read_attribute_schema(path: Path | str) -> dict[str, str]:
    """The attributes ``path`` declares (``{}`` without a side file); ``CatalogError`` for a bad one."""
    from aisle_server.attributes import check_schema

    side = attribute_schema_path(path)
    if not side.exists():
        return {}
    try:
        schema = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(schema, dict):
            raise ValueError("expected a JSON object: attribute name → type")
        return check_schema(schema)
    except ValueError as exc:
        raise CatalogError(f"{side.name}: {exc}") from None


def _parse_attributes(record: Mapping[str, Any], schema: Mapping[str, str], item_id: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, kind in schema.items():
        value = record.get(name)
        if is_missing(value):
            continue
        if isinstance(value, str):
            value = _attribute_text(value.strip(), kind, name)
            if value is None:
                continue
        try:
            out[name] = check_attribute(item_id, name, kind, value)
        except ItemChangeError as exc:
            raise RowError(name, exc.reason) from None
    return out


def _attribute_text(text: str, kind: str, name: str) -> object:
    """A CSV cell (or a string in JSON) of a declared attribute as the JSON value it stands for."""
    if not text:
        return None
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise RowError(name, f"attribute {name!r} is declared number, got {text!r}") from None
    if kind == "bool":
        word = text.lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise RowError(name, f"attribute {name!r} is declared bool, got {text!r}")
    if kind == "string_list":
        return [part.strip() for part in text.split("|") if part.strip()]
    return text


# --------------------------------------------------------------------------- validation


def _parse_record(record: Mapping[str, Any] | RowError) -> _Row:
    """Validate one raw record from any reader; raises RowError naming the bad field."""
    if isinstance(record, RowError):
        raise record
    return _Row(
        item_id=parse_id(record.get("item_id")),
        title=parse_text(record.get("title"), "title", required=True),
        description=parse_text(record.get("description"), "description", required=False),
        category=parse_text(record.get("category"), "category", required=False),
        created_at=parse_time(record.get("created_at")),
        popularity=_parse_popularity(record.get("popularity")),
        in_stock=_parse_in_stock(record.get("in_stock")),
    )


def _parse_popularity(value: Any) -> float:
    return 0.0 if is_missing(value) else parse_non_negative(value, "popularity")


def _parse_in_stock(value: Any) -> bool:
    if is_missing(value):
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
    raise RowError("in_stock", f"in_stock {value!r} is not true/false/1/0/yes/no/y/n")


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
