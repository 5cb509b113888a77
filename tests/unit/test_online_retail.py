"""convert_online_retail: every cleaning decision on a synthetic raw file, then the real sample."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from aisle_export.data.catalog import read_catalog
from aisle_export.data.interactions import read_interactions
from aisle_export.data.online_retail import RetailConversion, convert_online_retail, main

# The shared data sits beside the repository (CI: a copy of shared/ next to the fresh clone).
REAL_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online_retail" / "transactions.csv"

HEADER = ["invoice_no", "stock_code", "description", "quantity", "invoice_date", "unit_price", "customer_id", "country"]
RAW = [
    # a purchase; the customer id as a dataframe export writes it
    ["536365", "71053", "WHITE METAL LANTERN", "6", "2010-12-01T08:26:00", "3.39", "17850.0", "UK"],
    # the same code under a second description, once
    ["536366", "71053", " WHITE MOROCCAN METAL LANTERN ", "1", "2010-12-02T09:00:00", "3.39", "13047", "UK"],
    # no customer: not an interaction, but its description and (earlier) date count
    ["536367", "71053", "WHITE METAL LANTERN", "2", "2010-11-30T10:00:00", "3.39", "", "UK"],
    # a cancellation, and a stock adjustment (quantity <= 0 on a normal invoice)
    ["C536368", "71053", "WHITE METAL LANTERN", "-1", "2010-12-03T10:00:00", "3.39", "17850", "UK"],
    ["536369", "71053", "WHITE METAL LANTERN", "0", "2010-12-03T11:00:00", "0", "17850", "UK"],
    # postage and a discount: not products
    ["536370", "POST", "POSTAGE", "1", "2010-12-04T10:00:00", "18", "12583", "France"],
    ["C536371", "D", "Discount", "-1", "2010-12-04T10:00:00", "5", "12583", "France"],
    # a bulk buy under a lower-case code: one interaction of weight 1, code upper-cased
    ["536372", "85123a", "CREAM HANGING HEART", "1000", "2010-12-05T10:00:00", "2.55", "12583", "France"],
    # a code that never has a description: excluded from both files
    ["536373", "22222", "", "5", "2010-12-05T11:00:00", "1", "13047", "UK"],
    ["536374", "22222", "  ", "-5", "2010-12-05T12:00:00", "0", "", "UK"],
    # a product only ever sold without a customer: in the catalog, without interactions
    ["536375", "33333", "RED SPOTTY BAG", "3", "2010-12-06T10:00:00", "1", "", "UK"],
    # a tie between two descriptions: the first seen wins
    ["536376", "44444", "B NAME", "1", "2010-12-07T10:00:00", "1", "13047", "UK"],
    ["536377", "44444", "A NAME", "1", "2010-12-07T10:00:00", "1", "13047", "UK"],
    # unreadable quantity
    ["536378", "44444", "", "lots", "2010-12-08T10:00:00", "1", "13047", "UK"],
]


@pytest.fixture()
def conversion(tmp_path: Path) -> RetailConversion:
    raw = tmp_path / "raw.csv"
    with raw.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([HEADER, *RAW])
    return convert_online_retail(raw, tmp_path / "out")


def test_report_counts_every_decision(conversion: RetailConversion) -> None:
    report = conversion.report
    assert report["raw_rows"] == len(RAW)
    assert report["non_product_rows"] == 2 and report["non_product_codes"] == ["D", "POST"]
    assert report["no_description_codes"] == 1 and report["no_description_rows"] == 2
    assert report["cancellation_rows"] == 2
    assert report["no_customer_rows"] == 2
    assert report["malformed_rows"] == 1
    assert report["malformed_examples"] == ["line 15: quantity 'lots' is not a number"]
    assert report["stock_codes_normalized"] == 1
    assert report["codes_with_several_descriptions"] == 2  # 71053 and 44444
    assert report["kept_interactions"] == 5
    assert report["customers"] == 3
    assert report["items_in_catalog"] == 4 and report["items_with_interactions"] == 3
    dropped = sum(
        report[k]
        for k in ("non_product_rows", "no_description_rows", "malformed_rows", "cancellation_rows", "no_customer_rows")
    )
    assert dropped + report["kept_interactions"] == report["raw_rows"]  # each row counted once


def test_catalog(conversion: RetailConversion) -> None:
    assert conversion.catalog_path.name == "catalog.csv"
    catalog = read_catalog(conversion.catalog_path)
    assert catalog.skipped == 0
    assert catalog.item_ids.tolist() == ["71053", "85123A", "33333", "44444"]
    assert catalog.titles.tolist() == ["WHITE METAL LANTERN", "CREAM HANGING HEART", "RED SPOTTY BAG", "B NAME"]
    assert catalog.popularity.tolist() == [0.0] * 4  # no leakage of the evaluation period
    assert catalog.in_stock.all()
    assert catalog.categories.tolist() == [""] * 4 and catalog.descriptions.tolist() == [""] * 4
    first = dt.datetime(2010, 11, 30, 10, tzinfo=dt.UTC).timestamp()
    assert catalog.created_at[0] == first  # earliest appearance, from the no-customer row


def test_interactions(conversion: RetailConversion) -> None:
    assert conversion.interactions_path.name == "interactions.csv"
    log, report = read_interactions(
        conversion.interactions_path,
        allowed_event_types={"purchase"},
        catalog_ids=set(read_catalog(conversion.catalog_path).item_ids),
    )
    assert report.unknown_items == 0 and report.event_counts == {"purchase": 5}
    assert list(zip(log.user_id.tolist(), log.item_id.tolist())) == [
        ("17850", "71053"),
        ("13047", "71053"),
        ("12583", "85123A"),
        ("13047", "44444"),
        ("13047", "44444"),
    ]
    assert log.weight.tolist() == [1.0] * 5  # the 1,000-unit buy is one choice
    assert log.timestamp[0] == dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.UTC).timestamp()
    assert np.all(np.diff(log.timestamp) >= 0)


def test_missing_raw_column(tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    raw.write_text("invoice_no,stock_code,quantity\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"missing column.*description"):
        convert_online_retail(raw, tmp_path / "out")


def test_main_prints_the_report(
    conversion: RetailConversion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw.csv"
    assert main([str(raw), str(tmp_path / "again")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kept_interactions"] == 5
    assert Path(printed["catalog"]).is_file() and Path(printed["interactions"]).is_file()


@pytest.mark.skipif(not REAL_CSV.is_file(), reason="needs ../shared/data/online_retail")
def test_real_sample(tmp_path: Path) -> None:
    conversion = convert_online_retail(REAL_CSV, tmp_path)
    report = conversion.report
    assert report["raw_rows"] == 40_000
    dropped = sum(
        report[k]
        for k in ("non_product_rows", "no_description_rows", "malformed_rows", "cancellation_rows", "no_customer_rows")
    )
    assert dropped + report["kept_interactions"] == report["raw_rows"]
    assert {"POST", "M", "DOT"} <= set(report["non_product_codes"])
    assert report["cancellation_rows"] >= 600 and 9_000 < report["no_customer_rows"] < 11_000
    assert 3_000 < report["customers"] < 4_000 and 2_500 < report["items_in_catalog"] < 3_500
    catalog = read_catalog(conversion.catalog_path)
    assert len(catalog) == report["items_in_catalog"] and catalog.skipped == 0
    log, log_report = read_interactions(conversion.interactions_path, catalog_ids=set(catalog.item_ids.tolist()))
    assert log_report.unknown_items == 0 and len(log) == report["kept_interactions"]
    assert not any("." in user for user in np.unique(log.user_id).tolist())
