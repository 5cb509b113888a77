"""read_interactions: one log in every format, timestamps, weights, errors with their locations."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aisle_export.data.catalog import MAX_SKIP_REASONS
from aisle_export.data.interactions import (
    DEFAULT_EVENT,
    DEFAULT_EVENT_WEIGHTS,
    InteractionLogError,
    Interactions,
    LogReport,
    parse_event_weights,
    read_interactions,
    user_sequences,
    write_interactions,
)

JAN_5_2024 = 1704412800.0
FIELDS = ("user_id", "item_id", "weight", "timestamp", "event_type")


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def log_csv(
    path: Path, rows: list[list[Any]], header: tuple[str, ...] = ("user_id", "item_id", "timestamp", "event_type")
) -> Path:
    return write_csv(path, [list(header), *rows])


def assert_same(a: Interactions, b: Interactions) -> None:
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.weight.dtype == b.weight.dtype == np.float32
    assert a.timestamp.dtype == b.timestamp.dtype == np.float64


def sample() -> Interactions:
    """A sorted log with a time tie, a negative time, fractional seconds, a zero weight,
    and ids a CSV writer must quote."""
    return Interactions(
        user_id=np.array(["u1", "Zoë", "u1", "u 2", "u1"]),
        item_id=np.array(["42", "sku,1", 'say "hi"', "42", "7"]),
        weight=np.array([1.0, 0.1, 2.5, 0.0, 0.05], dtype=np.float32),
        timestamp=np.array([-86400.5, 0.0, JAN_5_2024, JAN_5_2024, 1704412800.125]),
        event_type=np.array(["purchase", "view", "rated_4", "click", "view"]),
    )


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".ndjson", ".parquet"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    original = sample()
    path = write_interactions(original, tmp_path / f"log{suffix}")
    back, report = read_interactions(path)
    assert_same(back, original)
    assert (report.rows, report.kept, report.skipped, report.unknown_items) == (5, 5, 0, 0)
    assert report.event_counts == {"view": 2, "purchase": 1, "rated_4": 1, "click": 1}


def test_round_trip_with_custom_event_weights(tmp_path: Path) -> None:
    weights = {"view": 0.0, "rated_4": 3.0}
    first, _ = read_interactions(
        log_csv(tmp_path / "a.csv", [["u", "i", 1, "view"], ["u", "j", 2, "rated_4"]]), event_weights=weights
    )
    assert first.weight.tolist() == [0.0, 3.0]
    written = write_interactions(first, tmp_path / "b.csv", event_weights=weights)
    back, _ = read_interactions(written, event_weights=weights)
    assert_same(back, first)


def test_plain_log_is_written_without_weight_column(tmp_path: Path) -> None:
    plain = Interactions(np.array(["u", "v"]), np.array(["1", "2"]), np.ones(2, np.float32), np.array([10.0, 20.5]))
    path = write_interactions(plain, tmp_path / "plain.csv")
    assert path.read_text(encoding="utf-8").splitlines() == [
        "user_id,item_id,timestamp,event_type",
        f"u,1,10,{DEFAULT_EVENT}",
        f"v,2,20.5,{DEFAULT_EVENT}",
    ]
    assert_same(read_interactions(path)[0], plain)


def test_write_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unsupported extension '.tsv'"):
        write_interactions(sample(), tmp_path / "log.tsv")


# --------------------------------------------------------------------------- values


def test_timestamps_iso_and_unix(tmp_path: Path) -> None:
    path = log_csv(
        tmp_path / "t.csv",
        [
            ["u", "a", "1704412800", ""],
            ["u", "b", "2024-01-05", ""],
            ["u", "c", "2024-01-05T01:00:00Z", ""],
            ["u", "d", "2024-01-05T03:00:00+02:00", ""],
            ["u", "e", " 1704412800.5 ", ""],
            ["u", "f", "-86400", ""],
        ],
    )
    log, _ = read_interactions(path)
    got = dict(zip(log.item_id.tolist(), log.timestamp.tolist()))
    assert got == {
        "a": JAN_5_2024,
        "b": JAN_5_2024,
        "c": JAN_5_2024 + 3600,
        "d": JAN_5_2024 + 3600,
        "e": JAN_5_2024 + 0.5,
        "f": -86400.0,
    }


def test_ids_and_defaults_from_json(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"user_id": 17850, "item_id": 3.0, "timestamp": 5, "extra": [1, 2]},
                {"user_id": " u ", "item_id": " sku ", "timestamp": 6, "event_type": " view ", "weight": "2"},
            ]
        )
        + "\n\n",
        encoding="utf-8",
    )
    log, report = read_interactions(path)
    assert log.user_id.tolist() == ["17850", "u"]
    assert log.item_id.tolist() == ["3", "sku"]
    assert log.event_type.tolist() == [DEFAULT_EVENT, "view"]
    assert log.weight.tolist() == pytest.approx([1.0, 2 * 0.1])
    assert report.event_counts == {DEFAULT_EVENT: 1, "view": 1}


def test_parquet_timestamp_column(tmp_path: Path) -> None:
    table = pa.table(
        {"user_id": ["u"], "item_id": ["i"], "timestamp": pa.array([1_704_412_800_000], type=pa.timestamp("ms", "UTC"))}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    assert read_interactions(tmp_path / "t.parquet")[0].timestamp.tolist() == [JAN_5_2024]


def test_event_weights_applied(tmp_path: Path) -> None:
    path = log_csv(
        tmp_path / "w.csv",
        [
            ["u", "a", 1, "purchase", "2"],
            ["u", "b", 2, "add_to_cart", ""],
            ["u", "c", 3, "click", "1"],
            ["u", "d", 4, "view", "1"],
            ["u", "e", 5, "wishlist", "0.5"],
        ],
        header=("user_id", "item_id", "timestamp", "event_type", "weight"),
    )
    log, _ = read_interactions(path)
    assert log.weight.tolist() == pytest.approx([2.0, 0.5, 0.25, 0.1, 0.5])
    custom, _ = read_interactions(path, event_weights={"view": 1.0, "wishlist": 4.0})
    assert custom.weight.tolist() == pytest.approx([2.0, 0.5, 0.25, 1.0, 2.0])  # others: defaults
    with pytest.raises(ValueError, match="view"):
        read_interactions(path, event_weights={"view": -1.0})


def test_parse_event_weights() -> None:
    assert parse_event_weights(None) == DEFAULT_EVENT_WEIGHTS
    assert parse_event_weights("") == DEFAULT_EVENT_WEIGHTS
    assert parse_event_weights(" purchase=2 , view=0 ,wishlist=0.3,") == {
        **DEFAULT_EVENT_WEIGHTS,
        "purchase": 2.0,
        "view": 0.0,
        "wishlist": 0.3,
    }
    for bad, named in [
        ("view", "'view'"),
        ("=1", "'=1'"),
        ("view=x", "'view=x'"),
        ("view=-1", "'view=-1'"),
        ("view=nan", "'view=nan'"),
        ("view=inf", "'view=inf'"),
    ]:
        with pytest.raises(ValueError, match=named):
            parse_event_weights(f"purchase=1,{bad}")


def test_stable_sort_by_timestamp(tmp_path: Path) -> None:
    path = log_csv(
        tmp_path / "s.csv",
        [
            ["u", "late", 30, ""],
            ["u", "tie1", 10, ""],
            ["v", "early", 5, ""],
            ["u", "tie2", 10, ""],
            ["v", "tie3", "1970-01-01T00:00:10", ""],
        ],
    )
    log, _ = read_interactions(path)
    assert log.item_id.tolist() == ["early", "tie1", "tie2", "tie3", "late"]
    assert np.all(np.diff(log.timestamp) >= 0)
    # Many ties (an unstable sort reorders these): within a second, file order is all we know.
    many = log_csv(tmp_path / "m.csv", [["u", f"i{n}", n % 3, ""] for n in range(300)])
    items = read_interactions(many)[0].item_id.tolist()
    assert items == [f"i{n}" for t in range(3) for n in range(300) if n % 3 == t]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_chunked_read_equals_the_whole_read(tmp_path: Path, suffix: str) -> None:
    """Packing rows into arrays every few rows gives the very log (order, ties, widths, report) of one pack."""
    rng = np.random.default_rng(0)
    n = 103
    log = Interactions(
        user_id=np.array([f"u{int(u)}" * int(1 + u % 3) for u in rng.integers(0, 9, n)]),  # widths differ by chunk
        item_id=np.array([f"i{int(i)}" for i in rng.integers(0, 40, n)]),
        weight=rng.random(n).astype(np.float32),
        timestamp=np.sort(JAN_5_2024 + rng.integers(0, 20, n)).astype(np.float64),  # many ties
        event_type=np.array(["view", "purchase", "click"])[rng.integers(0, 3, n)],
    )
    path = write_interactions(log, tmp_path / f"log{suffix}")
    catalog = {f"i{i}" for i in range(30)}  # some rows dropped as unknown items
    whole, whole_report = read_interactions(path, catalog_ids=catalog, chunk_rows=10**6)
    for chunk_rows in (1, 7, 64):
        chunked, report = read_interactions(path, catalog_ids=catalog, chunk_rows=chunk_rows)
        assert_same(chunked, whole)
        assert chunked.user_id.dtype == whole.user_id.dtype
        assert report == whole_report
    assert 0 < whole_report.unknown_items < n


def test_user_sequences() -> None:
    log = Interactions(
        np.array(["b", "a", "b", "a", "c", "b"]),
        np.array(["x", "y", "z", "w", "q", "t"]),
        np.ones(6),
        np.array([5.0, 1.0, 3.0, 3.0, 9.0, 3.0]),
        np.array(["view", "buy", "buy", "view", "view", "click"]),
    )
    sequences = user_sequences(log)
    assert list(sequences) == ["a", "b", "c"]  # order of first interaction
    items, times, events = sequences["b"]
    assert items == ["z", "t", "x"]  # the tie at 3.0 keeps the given order
    assert times.dtype == np.float64 and times.tolist() == [3.0, 3.0, 5.0]
    assert events == ["buy", "click", "view"]
    assert list(user_sequences(log, min_len=2)) == ["a", "b"]


def test_subset_and_default_event_type() -> None:
    log = Interactions(np.array(["u", "v"]), np.array(["1", "2"]), np.ones(2), np.array([1.0, 2.0]))
    assert log.event_type.tolist() == [DEFAULT_EVENT, DEFAULT_EVENT]
    assert log.weight.dtype == np.float32
    part = sample().subset(np.array([False, True, False, False, True]))
    assert len(part) == 2
    assert part.event_type.tolist() == ["view", "view"]
    assert part.weight.tolist() == pytest.approx([0.1, 0.05])
    with pytest.raises(ValueError, match="length"):
        Interactions(np.array(["u"]), np.array(["1", "2"]), np.ones(2), np.zeros(2))


# --------------------------------------------------------------------------- catalog ids


def test_unknown_items_are_counted_not_raised(tmp_path: Path) -> None:
    rows = [["u", f"gone{i % 12}", i, ""] for i in range(30)] + [["u", "1", 100, ""]]
    log, report = read_interactions(log_csv(tmp_path / "c.csv", rows), catalog_ids=["1", "2"])
    assert log.item_id.tolist() == ["1"]
    assert (report.rows, report.kept, report.unknown_items) == (31, 1, 30)
    assert report.unknown_examples == [f"gone{i}" for i in range(10)]  # distinct, bounded
    assert report.to_dict()["unknown_items"] == 30


def test_no_interactions_left(tmp_path: Path) -> None:
    path = log_csv(tmp_path / "c.csv", [["u", "gone", 1, ""]])
    with pytest.raises(InteractionLogError, match=r"no interactions left.*1 with items not in"):
        read_interactions(path, catalog_ids={"1"})
    header_only = log_csv(tmp_path / "h.csv", [])
    with pytest.raises(InteractionLogError, match="no interactions left"):
        read_interactions(header_only)


# --------------------------------------------------------------------------- errors


def error_of(path: Path, **kwargs: Any) -> InteractionLogError:
    with pytest.raises(InteractionLogError) as info:
        read_interactions(path, **kwargs)
    return info.value


def test_missing_required_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["user_id", "item_id", "when"], ["u", "i", "1"]])
    error = error_of(path)
    assert error.field == "timestamp" and error.location is None
    assert "m.csv" in str(error) and "missing required column 'timestamp'" in str(error)
    pq.write_table(pa.table({"user_id": ["u"], "timestamp": [1.0]}), tmp_path / "m.parquet")
    assert error_of(tmp_path / "m.parquet").field == "item_id"


@pytest.mark.parametrize(
    "row, field, message",
    [
        (["", "i", "1", ""], "user_id", "user_id is empty"),
        (["u", "  ", "1", ""], "item_id", "item_id is empty"),
        (["u", "i", "", ""], "timestamp", "timestamp is missing"),
        (["u", "i", "nan", ""], "timestamp", "timestamp 'nan' is not a finite number"),
        (["u", "i", "inf", ""], "timestamp", "timestamp 'inf' is not a finite number"),
        (["u", "i", "yesterday", ""], "timestamp", "not unix seconds or ISO-8601"),
        (["u", "i", "1704412800000", ""], "timestamp", "past year 9999"),
        (["u", "i", "4102444800", ""], "timestamp", "2100-01-01T00:00:00+00:00) is more than a day"),
        (["u", "i", "1", "", "-1"], "weight", "weight '-1' is not a finite number >= 0"),
        (["u", "i", "1", "", "nan"], "weight", "weight 'nan'"),
        (["u", "i", "1"], None, "has 3 fields, the header has 5"),
    ],
)
def test_bad_row_names_line_and_field(tmp_path: Path, row: list[str], field: str | None, message: str) -> None:
    header = ("user_id", "item_id", "timestamp", "event_type", "weight")
    good = ["u", "i", "1", "", "1"]
    if len(row) == 4:
        row = [*row, ""]  # weight not given
    error = error_of(log_csv(tmp_path / "bad.csv", [good, row], header=header))
    assert error.location == "line 3" and error.field == field
    assert str(error).startswith("bad.csv line 3: ")
    assert message in str(error)


def test_far_future_is_relative_to_now(tmp_path: Path) -> None:
    soon = time.time() + 3600  # clocks drift: an hour ahead is fine
    log, _ = read_interactions(log_csv(tmp_path / "ok.csv", [["u", "i", soon, ""]]))
    assert log.timestamp[0] == pytest.approx(soon)
    error = error_of(log_csv(tmp_path / "f.csv", [["u", "i", time.time() + 3 * 86400, ""]]))
    assert error.field == "timestamp" and "in the future" in str(error)


def test_json_nan_timestamp_and_locations(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(
        '{"user_id": "u", "item_id": "i", "timestamp": 1}\n\n{"user_id": "u", "item_id": "i", "timestamp": NaN}\n',
        encoding="utf-8",
    )
    error = error_of(path)
    assert (error.location, error.field) == ("line 3", "timestamp")
    assert str(error) == "log.jsonl line 3: timestamp nan is not a finite number"
    table = pa.table({"user_id": ["u", "u"], "item_id": ["i", "i"], "timestamp": [1.0, 2.0], "weight": [1.0, -2.0]})
    pq.write_table(table, tmp_path / "w.parquet")
    error = error_of(tmp_path / "w.parquet")
    assert (error.location, error.field) == ("row 2", "weight")


def test_unknown_event_type_when_allowed_set_given(tmp_path: Path) -> None:
    path = log_csv(tmp_path / "e.csv", [["u", "i", 1, "purchase"], ["u", "i", 2, "purchse"]])
    assert len(read_interactions(path)[0]) == 2  # no allowed set: any type
    error = error_of(path, allowed_event_types={"purchase", "view"})
    assert (error.location, error.field) == ("line 3", "event_type")
    assert "'purchse' is not one of the allowed ['purchase', 'view']" in str(error)
    blank = log_csv(tmp_path / "b.csv", [["u", "i", 1, ""]])
    assert "(none given)" in str(error_of(blank, allowed_event_types=["purchase"]))
    log, _ = read_interactions(blank, allowed_event_types=[DEFAULT_EVENT])
    assert log.event_type.tolist() == [DEFAULT_EVENT]


def test_skip_bad_rows_counts(tmp_path: Path) -> None:
    rows = [["u", "i", "nan", ""] for _ in range(MAX_SKIP_REASONS + 5)]
    rows += [["u", "ok", "7", ""], ["", "i", "1", ""]]
    log, report = read_interactions(log_csv(tmp_path / "s.csv", rows), skip_bad_rows=True)
    assert log.item_id.tolist() == ["ok"]
    assert isinstance(report, LogReport)
    assert (report.rows, report.kept, report.skipped) == (len(rows), 1, MAX_SKIP_REASONS + 6)
    assert len(report.skip_reasons) == MAX_SKIP_REASONS
    assert report.skip_reasons[0] == "s.csv line 2: timestamp 'nan' is not a finite number"


def test_whole_file_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert "file is empty" in str(error_of(empty))
    with pytest.raises(InteractionLogError, match=r"unsupported interaction log extension '.txt'"):
        read_interactions(tmp_path / "log.txt")
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufeffuser_id,item_id,timestamp\nu,i,1\n", encoding="utf-8")
    assert read_interactions(bom)[0].user_id.tolist() == ["u"]
    assert not math.isnan(read_interactions(bom)[0].timestamp[0])
