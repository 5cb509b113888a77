"""read_catalog: the same catalog in every format, value parsing, and error locations."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aisle_export.data.catalog import MAX_SKIP_REASONS, Catalog, CatalogError, read_catalog

COLUMNS = [
    "item_id",
    "title",
    "description",
    "category",
    "created_at",
    "popularity",
    "in_stock",
    "price",
]  # "price" is an unknown column: ignored

# One catalog, written to every format. Exercises commas, quotes, a multi-line description,
# non-ASCII text, padding whitespace and every optional column left empty.
RECORDS: list[dict[str, Any]] = [
    {
        "item_id": "1",
        "title": "Toy Story (1995)",
        "description": "Animation, Children's",
        "category": "Animation",
        "created_at": "788918400",
        "popularity": "452",
        "in_stock": "true",
        "price": "9.99",
    },
    {
        "item_id": " sku-2 ",
        "title": 'The "Best" Mug, Blue',
        "description": "Holds tea.\nAnd coffee.",
        "category": "Kitchen",
        "created_at": "2024-01-05",
        "popularity": "3.5",
        "in_stock": "no",
        "price": "",
    },
    {
        "item_id": "3",
        "title": "Misérables, Les",
        "description": "",
        "category": "",
        "created_at": "",
        "popularity": "",
        "in_stock": "",
        "price": "",
    },
]
EXPECTED = {
    "item_ids": ["1", "sku-2", "3"],
    "titles": ["Toy Story (1995)", 'The "Best" Mug, Blue', "Misérables, Les"],
    "descriptions": ["Animation, Children's", "Holds tea.\nAnd coffee.", ""],
    "categories": ["Animation", "Kitchen", ""],
    "created_at": [788918400.0, 1704412800.0, math.nan],
    "popularity": [452.0, 3.5, 0.0],
    "in_stock": [True, False, True],
}


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def write_records_csv(path: Path, records: list[dict[str, Any]]) -> Path:
    columns = list(records[0])
    return write_csv(path, [columns] + [[record[c] for c in columns] for record in records])


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


WRITERS = {".csv": write_records_csv, ".jsonl": write_jsonl, ".ndjson": write_jsonl, ".parquet": write_parquet}


def catalog_in(tmp_path: Path, suffix: str, records: list[dict[str, Any]]) -> Path:
    return WRITERS[suffix](tmp_path / f"catalog{suffix}", records)


def csv_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.csv"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(path: Path, **kwargs: Any) -> CatalogError:
    with pytest.raises(CatalogError) as info:
        read_catalog(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_every_format_reads_the_expected_values(tmp_path: Path, suffix: str) -> None:
    catalog = read_catalog(catalog_in(tmp_path, suffix, RECORDS))

    assert len(catalog) == 3
    for name in ("item_ids", "titles", "descriptions", "categories"):
        array = getattr(catalog, name)
        assert array.dtype.kind == "U", name
        assert array.tolist() == EXPECTED[name], name
    assert catalog.created_at.dtype == np.float64
    np.testing.assert_array_equal(catalog.created_at, EXPECTED["created_at"])  # NaN == NaN here
    assert catalog.popularity.dtype == np.float32
    assert catalog.popularity.tolist() == EXPECTED["popularity"]
    assert catalog.in_stock.dtype == np.bool_
    assert catalog.in_stock.tolist() == EXPECTED["in_stock"]
    assert catalog.skipped == 0 and catalog.skip_reasons == []


def test_all_formats_give_identical_arrays(tmp_path: Path) -> None:
    catalogs = {suffix: read_catalog(catalog_in(tmp_path, suffix, RECORDS)) for suffix in WRITERS}
    reference = catalogs.pop(".csv")
    for suffix, catalog in catalogs.items():
        for name in ("item_ids", "titles", "descriptions", "categories", "created_at", "popularity", "in_stock"):
            expected, actual = getattr(reference, name), getattr(catalog, name)
            assert actual.dtype == expected.dtype, (suffix, name)
            np.testing.assert_array_equal(actual, expected, err_msg=f"{suffix} {name}")


def test_extension_is_case_insensitive(tmp_path: Path) -> None:
    path = write_records_csv(tmp_path / "CATALOG.CSV", RECORDS)
    assert read_catalog(path).item_ids.tolist() == EXPECTED["item_ids"]


def test_unsupported_extension_is_named(tmp_path: Path) -> None:
    path = tmp_path / "catalog.xlsx"
    path.write_bytes(b"")
    error = error_for(path)
    assert "'.xlsx'" in str(error)
    assert ".parquet" in str(error)  # says what would work


def test_numeric_ids_in_json_and_parquet_become_strings(tmp_path: Path) -> None:
    records = [{"item_id": 7, "title": "a"}, {"item_id": 12.0, "title": "b"}]
    from_json = read_catalog(write_jsonl(tmp_path / "c.jsonl", records))
    assert from_json.item_ids.tolist() == ["7", "12"]
    ints = [{"item_id": 7, "title": "a"}, {"item_id": 12, "title": "b"}]
    from_parquet = read_catalog(write_parquet(tmp_path / "c.parquet", ints))
    assert from_parquet.item_ids.tolist() == ["7", "12"]


@pytest.mark.parametrize("bad_id", [True, 1.5, [1], {"id": 1}])
def test_non_id_json_values_are_rejected(tmp_path: Path, bad_id: Any) -> None:
    error = error_for(write_jsonl(tmp_path / "c.jsonl", [{"item_id": bad_id, "title": "a"}]))
    assert error.field == "item_id"
    assert error.location == "line 1"


def test_jsonl_skips_blank_lines_and_counts_them_in_locations(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"item_id": "a", "title": "A"}\n\n   \n{"item_id": "b", "title": ""}\n')
    error = error_for(path)
    assert (error.location, error.field) == ("line 4", "title")
    assert str(error) == "c.jsonl line 4: title is empty"


@pytest.mark.parametrize(
    "line, reason", [("{not json", "is not valid JSON"), ('["a", "b"]', "is a JSON list, expected an object")]
)
def test_jsonl_malformed_lines(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"item_id": "a", "title": "A"}\n' + line + "\n")
    error = error_for(path)
    assert error.location == "line 2" and error.field is None
    assert reason in str(error)


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    records = [{"item_id": "a", "title": "A", "popularity": 1.0}, {"item_id": "b", "title": "B", "popularity": -2.0}]
    error = error_for(write_parquet(tmp_path / "c.parquet", records))
    assert (error.location, error.field) == ("row 2", "popularity")
    assert str(error) == "c.parquet row 2: popularity -2.0 is not a finite number >= 0"


def test_parquet_timestamp_and_date_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "item_id": ["a", "b"],
            "title": ["A", "B"],
            "created_at": pa.array([dt.datetime(2024, 1, 5, 12), None], pa.timestamp("us")),
        }
    )
    pq.write_table(table, tmp_path / "ts.parquet")
    created = read_catalog(tmp_path / "ts.parquet").created_at
    assert created[0] == 1704412800.0 + 12 * 3600
    assert math.isnan(created[1])

    dates = pa.table({"item_id": ["a"], "title": ["A"], "created_at": pa.array([dt.date(2024, 1, 5)], pa.date32())})
    pq.write_table(dates, tmp_path / "d.parquet")
    assert read_catalog(tmp_path / "d.parquet").created_at.tolist() == [1704412800.0]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    "raw, seconds",
    [
        ("1700000000", 1700000000.0),
        ("1700000000.25", 1700000000.25),
        ("-86400", -86400.0),  # before 1970: old movies
        ("2024-01-05", 1704412800.0),  # date only: midnight UTC
        ("2024-01-05T12:00:00", 1704456000.0),  # naive: UTC
        ("2024-01-05 12:00:00", 1704456000.0),
        ("2024-01-05T12:00:00Z", 1704456000.0),
        ("2024-01-05T14:00:00+02:00", 1704456000.0),
        ("  2024-01-05  ", 1704412800.0),
    ],
)
def test_created_at_accepts_unix_seconds_and_iso_8601(tmp_path: Path, raw: str, seconds: float) -> None:
    path = write_csv(tmp_path / "c.csv", [["item_id", "title", "created_at"], ["a", "A", raw]])
    assert read_catalog(path).created_at.tolist() == [seconds]


def test_created_at_as_json_numbers(tmp_path: Path) -> None:
    records = [
        {"item_id": "a", "title": "A", "created_at": 1700000000},
        {"item_id": "b", "title": "B", "created_at": 1700000000.5},
        {"item_id": "c", "title": "C", "created_at": None},
    ]
    created = read_catalog(write_jsonl(tmp_path / "c.jsonl", records)).created_at
    assert created[:2].tolist() == [1700000000.0, 1700000000.5]
    assert math.isnan(created[2])


@pytest.mark.parametrize("raw", ["yesterday", "nan", "inf", "2024-13-01", "1700000000000"])
def test_bad_created_at_is_reported_with_file_line_and_field(tmp_path: Path, raw: str) -> None:
    path = write_csv(tmp_path / "catalog.csv", [["item_id", "title", "created_at"], ["a", "A", "1"], ["b", "B", raw]])
    error = error_for(path)
    assert isinstance(error, ValueError)
    assert (error.location, error.field) == ("line 3", "created_at")
    assert str(error).startswith(f"catalog.csv line 3: created_at {raw!r} ")


def test_bad_created_at_message(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "catalog.csv", [["item_id", "title", "created_at"], ["b", "B", "yesterday"]])
    assert str(error_for(path)) == ("catalog.csv line 2: created_at 'yesterday' is not unix seconds or ISO-8601")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Y", True),
        (" y ", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("N", False),
        ("", True),  # not tracked: in stock
    ],
)
def test_in_stock_words(tmp_path: Path, raw: str, expected: bool) -> None:
    path = write_csv(tmp_path / "c.csv", [["item_id", "title", "in_stock"], ["a", "A", raw]])
    assert read_catalog(path).in_stock.tolist() == [expected]


def test_in_stock_json_values(tmp_path: Path) -> None:
    records = [
        {"item_id": "a", "title": "A", "in_stock": False},
        {"item_id": "b", "title": "B", "in_stock": True},
        {"item_id": "c", "title": "C", "in_stock": 0},
        {"item_id": "d", "title": "D"},
    ]
    in_stock = read_catalog(write_jsonl(tmp_path / "c.jsonl", records)).in_stock
    assert in_stock.tolist() == [False, True, False, True]


@pytest.mark.parametrize("raw", ["maybe", "2", "t"])
def test_bad_in_stock(tmp_path: Path, raw: str) -> None:
    path = write_csv(tmp_path / "c.csv", [["item_id", "title", "in_stock"], ["a", "A", raw]])
    error = error_for(path)
    assert (error.location, error.field) == ("line 2", "in_stock")


@pytest.mark.parametrize("raw", ["-1", "inf", "nan?", "lots"])
def test_bad_popularity(tmp_path: Path, raw: str) -> None:
    path = write_csv(tmp_path / "c.csv", [["item_id", "title", "popularity"], ["a", "A", raw]])
    assert error_for(path).field == "popularity"


@pytest.mark.parametrize("row, field", [([" ", "A"], "item_id"), (["a", "  "], "title")])
def test_blank_required_values(tmp_path: Path, row: list[str], field: str) -> None:
    path = write_csv(tmp_path / "c.csv", [["item_id", "title"], row])
    error = error_for(path)
    assert error.field == field
    assert str(error) == f"c.csv line 2: {field} is empty"


# --------------------------------------------------------------------------- errors


def test_csv_line_numbers_count_quoted_multiline_fields(tmp_path: Path) -> None:
    path = csv_catalog(
        tmp_path,
        (
            "item_id,title,description,popularity\n"  # line 1
            'a,A,"first line\n'  # line 2
            "second line, with comma\n"  # line 3
            'third ""quoted"" line",1\n'  # line 4
            "\n"  # line 5: blank, ignored
            "b,B,plain,-5\n"  # line 6: bad
        ),
    )
    error = error_for(path)
    assert (error.location, error.field) == ("line 6", "popularity")
    assert str(error).startswith("catalog.csv line 6: popularity '-5'")


def test_csv_row_starting_on_a_multiline_field_reports_its_first_line(tmp_path: Path) -> None:
    path = csv_catalog(tmp_path, 'item_id,title,in_stock\na,A,yes\nb,"B\nB",perhaps\n')
    assert error_for(path).location == "line 3"


def test_csv_line_numbers_with_crlf_endings(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b'item_id,title\r\na,"A\r\nA"\r\nb,\r\n')
    assert error_for(path).location == "line 4"


def test_csv_wrong_field_count(tmp_path: Path) -> None:
    path = csv_catalog(tmp_path, "item_id,title\na,A\nb,B,extra\n")
    error = error_for(path)
    assert (error.location, error.field) == ("line 3", None)
    assert "has 3 fields, the header has 2" in str(error)


def test_csv_header_bom_and_padding_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffitem_id , title\na,A\n".encode("utf-8"))
    assert read_catalog(path).titles.tolist() == ["A"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("missing", ["item_id", "title"])
def test_missing_required_column_is_named(tmp_path: Path, suffix: str, missing: str) -> None:
    records = [{k: v for k, v in record.items() if k != missing} for record in RECORDS]
    error = error_for(catalog_in(tmp_path, suffix, records))
    assert error.field == missing
    assert f"missing required column {missing!r}" in str(error)
    assert error.location is None


def test_missing_required_key_in_jsonl_is_a_row_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"item_id": "a"}])
    error = error_for(path)
    assert (error.location, error.field) == ("line 1", "title")
    assert str(error) == "c.jsonl line 1: title is missing"


@pytest.mark.parametrize("skip_bad_rows", [False, True])
def test_duplicate_ids_name_both_lines(tmp_path: Path, skip_bad_rows: bool) -> None:
    path = csv_catalog(tmp_path, 'item_id,title\nx,X\ny,"Y\nY"\n x ,Another X\n')
    error = error_for(path, skip_bad_rows=skip_bad_rows)
    assert (error.location, error.field) == ("line 5", "item_id")
    assert str(error) == "catalog.csv line 5: duplicate item_id 'x' (first seen at line 2)"


def test_duplicate_ids_in_parquet_name_both_rows(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "c.parquet", [{"item_id": i, "title": "t"} for i in "abca"])
    assert str(error_for(path)) == "c.parquet row 4: duplicate item_id 'a' (first seen at row 1)"


def test_skip_bad_rows_counts_and_keeps_reasons(tmp_path: Path) -> None:
    path = csv_catalog(
        tmp_path,
        (
            "item_id,title,created_at,in_stock\n"
            "a,A,,\n"
            "b,,,\n"  # line 3: no title
            "c,C,tomorrow,\n"  # line 4
            "d,D,,perhaps\n"  # line 5
            "e,E,1,no\n"
        ),
    )
    with pytest.raises(CatalogError):
        read_catalog(path)
    catalog = read_catalog(path, skip_bad_rows=True)
    assert catalog.item_ids.tolist() == ["a", "e"]
    assert catalog.in_stock.tolist() == [True, False]
    assert catalog.skipped == 3
    assert catalog.skip_reasons == [
        "catalog.csv line 3: title is empty",
        "catalog.csv line 4: created_at 'tomorrow' is not unix seconds or ISO-8601",
        "catalog.csv line 5: in_stock 'perhaps' is not true/false/1/0/yes/no/y/n",
    ]


def test_skip_reasons_are_capped_but_all_bad_rows_counted(tmp_path: Path) -> None:
    rows = [["item_id", "title"], ["ok", "OK"]] + [[f"bad{i}", ""] for i in range(25)]
    catalog = read_catalog(write_csv(tmp_path / "c.csv", rows), skip_bad_rows=True)
    assert len(catalog) == 1
    assert catalog.skipped == 25
    assert len(catalog.skip_reasons) == MAX_SKIP_REASONS
    assert catalog.skip_reasons[0] == "c.csv line 3: title is empty"


def test_empty_catalogs_are_errors(tmp_path: Path) -> None:
    header_only = write_csv(tmp_path / "header.csv", [["item_id", "title"]])
    assert "no valid rows (0 skipped)" in str(error_for(header_only))

    all_bad = write_csv(tmp_path / "bad.csv", [["item_id", "title"], ["a", ""], ["b", ""]])
    assert "no valid rows (2 skipped)" in str(error_for(all_bad, skip_bad_rows=True))

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in str(error_for(empty))

    blank_jsonl = tmp_path / "blank.jsonl"
    blank_jsonl.write_text("\n\n")
    assert "no valid rows" in str(error_for(blank_jsonl))


# --------------------------------------------------------------------------- texts


def _catalog(titles: list[str], descriptions: list[str], categories: list[str]) -> Catalog:
    n = len(titles)
    return Catalog(
        item_ids=np.array([str(i) for i in range(n)]),
        titles=np.array(titles),
        descriptions=np.array(descriptions),
        categories=np.array(categories),
        created_at=np.full(n, np.nan),
        popularity=np.zeros(n, np.float32),
        in_stock=np.ones(n, bool),
    )


def test_texts_format() -> None:
    catalog = _catalog(
        ["Toy Story (1995)", "Mug", "Mug", "That Darn Cat!", "Plain"],
        ["Animation, Children's, Comedy", "Holds tea", "", "", ""],
        ["Animation", "Kitchen", "Kitchen", "comedy", ""],
    )
    assert catalog.texts() == [
        "Toy Story (1995). Animation, Children's, Comedy",  # category already in description
        "Mug. Holds tea. Kitchen",
        "Mug. Kitchen",
        "That Darn Cat! comedy",  # no ". " after "!"
        "Plain",
    ]
