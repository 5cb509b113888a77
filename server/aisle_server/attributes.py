"""Typed item attributes (price, brand, margin, tags, ...) as the index serves them: one column each.

A catalog declares its attributes once (``aisle_export.data.catalog``: the ``<catalog>.attributes.json``
side file, ``{"price": "number", "brand": "string", "tags": "string_list", "on_sale": "bool"}``);
``aisle index`` writes them beside the other item fields and live changes set them by name
(``aisle_contract.check_item_change`` checks a change against the declaration). The merchandising
rules (``aisle_server.rules``) read them for the candidates of a request.

Layout of ``index/items/attributes/``: ``schema.json`` (name → type) and one ``.npy`` per attribute,
memory-mapped like the other fields, one entry per catalog row:

===============  ==========================================================================
``number``       float64; NaN = missing
``string``       fixed-width unicode; ``""`` = missing
``string_list``  fixed-width unicode, the strings joined as ``"\\x1fa\\x1fb\\x1f"`` (``""`` = missing),
                 so ``"a" in tags`` is one vectorized substring search over the candidates
``bool``         int8: 1 true, 0 false, -1 missing (a missing bool reads false)
===============  ==========================================================================

Why columns and not a JSON blob per item: a rule reads one attribute of a few hundred candidates per
request; a gather from a mapped column costs microseconds, parsing JSON per item would not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aisle_contract import ATTRIBUTE_TYPES

ATTRIBUTES_DIRNAME = "attributes"
SCHEMA_FILE = "schema.json"
SEP = "\x1f"  # joins a string_list's strings (refused inside them by ``check_attribute``)
#: Names the rule language gives its own meaning (``aisle_server.rules``): no attribute may take them.
RESERVED = frozenset(
    {
        "has_query",
        "surface",
        "segment",
        "score",
        "popularity",
        "age_days",
        "category",
        "item_id",
        "in_stock",
        "has",
        "exposures",
        "clicks",
    }
)


def check_schema(schema: Mapping[str, str]) -> dict[str, str]:
    """``schema`` as a plain dict, or ``ValueError`` naming the first bad attribute."""
    out = {}
    for name, kind in schema.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"attribute {name!r}: a name is a Python-style identifier (letters, digits, _)")
        if name in RESERVED:
            raise ValueError(f"attribute {name!r}: the name is reserved by the rule language ({sorted(RESERVED)})")
        if kind not in ATTRIBUTE_TYPES:
            raise ValueError(f"attribute {name!r}: type {kind!r} is not one of {', '.join(ATTRIBUTE_TYPES)}")
        out[name] = kind
    return out


def missing(kind: str) -> object:
    """What a column holds for an item without the attribute."""
    return {"number": np.nan, "bool": -1}.get(kind, "")


def encode(kind: str, value: object) -> object:
    """One checked value (``aisle_contract.check_attribute``) as its column stores it."""
    if value is None:
        return missing(kind)
    if kind == "bool":
        return 1 if value else 0
    if kind == "string_list":
        strings = [str(v) for v in value]  # type: ignore[attr-defined]  # a checked list
        return SEP + SEP.join(strings) + SEP if strings else ""
    return value


def column(kind: str, values: Sequence[object]) -> np.ndarray:
    """A column of encoded values."""
    if kind == "number":
        return np.asarray(values, dtype=np.float64)
    if kind == "bool":
        return np.asarray(values, dtype=np.int8)
    return np.asarray(values, dtype=str) if len(values) else np.zeros(0, dtype="<U1")


def decode(kind: str, stored: object) -> object:
    """A stored value back as JSON (None: missing), for ``catalog``'s merged item state and the console."""
    if kind == "number":
        value = float(stored)  # type: ignore[arg-type]
        return None if np.isnan(value) else value
    if kind == "bool":
        return None if int(stored) < 0 else bool(int(stored))  # type: ignore[call-overload]
    text = str(stored)
    if not text:
        return None
    return text.strip(SEP).split(SEP) if kind == "string_list" else text


@dataclass(eq=False)
class Attributes:
    """The declared attributes of a catalog and one column per attribute (rows as the index's)."""

    schema: dict[str, str] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._contains: dict[tuple[str, str], np.ndarray] = {}  # (string_list name, tag) → mask over rows
        self.schema = check_schema(self.schema)
        if set(self.schema) != set(self.columns):
            raise ValueError(f"attribute columns {sorted(self.columns)} do not match the schema {sorted(self.schema)}")

    @classmethod
    def of(cls, schema: Mapping[str, str], values: Sequence[Mapping[str, object]]) -> Attributes:
        """From one mapping of checked values per item (a missing name: missing)."""
        schema = check_schema(schema)
        return cls(
            schema,
            {name: column(kind, [encode(kind, item.get(name)) for item in values]) for name, kind in schema.items()},
        )

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def values(self, row: int) -> dict[str, object]:
        """The attributes of one row as JSON values (missing ones left out)."""
        out = {name: decode(kind, self.columns[name][row]) for name, kind in self.schema.items()}
        return {name: value for name, value in out.items() if value is not None}

    def contains(self, name: str, tag: str) -> np.ndarray:
        """bool per row: string_list ``name`` holds ``tag`` — computed once per catalog and tag (rules
        search the same few tags on every request), and carried over by :meth:`changed`."""
        mask = self._contains.get((name, tag))
        if mask is None:
            wanted = f"{SEP}{tag}{SEP}"
            column = self.columns[name]
            mask = np.fromiter((wanted in value for value in column.tolist()), dtype=bool, count=len(column))
            self._contains[(name, tag)] = mask
        return mask

    def changed(self, n_rows: int, changes: Mapping[int, Mapping[str, object]]) -> Attributes:
        """A copy with ``n_rows`` rows (new rows missing) and ``changes`` (row → checked values) set."""
        columns = {}
        for name, kind in self.schema.items():
            base = np.asarray(self.columns[name])
            values = {row: encode(kind, fields[name]) for row, fields in changes.items() if name in fields}
            if kind in ("string", "string_list"):
                width = max([len(str(v)) for v in values.values()] + [base.dtype.itemsize // 4, 1])
                base = base.astype(f"<U{width}")
            out = np.full(n_rows, missing(kind), dtype=base.dtype)
            out[: len(base)] = base
            for row, value in values.items():
                out[row] = value
            columns[name] = out
        updated = Attributes(dict(self.schema), columns)
        for (name, tag), mask in list(self._contains.items()):  # the tag masks, with the changed rows redone
            grown = np.zeros(n_rows, dtype=bool)
            grown[: len(mask)] = mask
            rows = list(range(len(mask), n_rows)) + [row for row, f in changes.items() if name in f]
            wanted = f"{SEP}{tag}{SEP}"
            for row in rows:
                grown[row] = wanted in str(columns[name][row])
            updated._contains[(name, tag)] = grown
        return updated

    def take(self, rows: np.ndarray) -> Attributes:
        """These attributes of ``rows`` only (compaction drops deleted items)."""
        return Attributes(dict(self.schema), {name: np.asarray(c)[rows] for name, c in self.columns.items()})

    def save(self, items: Path) -> None:
        directory = Path(items) / ATTRIBUTES_DIRNAME
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SCHEMA_FILE).write_text(json.dumps(self.schema, indent=2, sort_keys=True) + "\n")
        for name, values in self.columns.items():
            np.save(directory / f"{name}.npy", np.asarray(values), allow_pickle=False)

    @classmethod
    def load(cls, items: Path, mmap_mode: str | None = "r") -> Attributes | None:
        """The attributes under ``items`` (None: the catalog declares none, or was indexed before them)."""
        directory = Path(items) / ATTRIBUTES_DIRNAME
        if not (directory / SCHEMA_FILE).exists():
            return None
        schema = json.loads((directory / SCHEMA_FILE).read_text())
        columns = {name: np.load(directory / f"{name}.npy", mmap_mode=mmap_mode, allow_pickle=False) for name in schema}
        return cls(schema, columns)
