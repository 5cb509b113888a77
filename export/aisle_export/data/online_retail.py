"""The raw UCI Online Retail invoices → an Aisle catalog and a purchase log.

Input: the invoice lines of a UK online gift shop (UCI "Online Retail", Chen et al., CC BY 4.0),
columns ``invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id,
country``. Output: ``catalog.csv`` (read by :func:`aisle_export.data.catalog.read_catalog`) and
``interactions.csv`` (read by :func:`aisle_export.data.interactions.read_interactions`). The data is
not shipped with Aisle: this module converts a copy the user has.

What happens to each kind of raw row, and why (each count goes to the report):

* **Non-product stock codes** — postage, fees, manual entries, discounts, bank charges,
  samples, charity, gift vouchers (``POST``, ``M``, ``DOT``, ``D``, ``C2``, ``BANK CHARGES``,
  ``AMAZONFEE``, ``S``, ``PADS``, ``CRUK``, ``B``…): every real product code starts with a
  digit, these do not. Recommending postage is useless, and as "items" bought on most invoices
  they would dominate any popularity or co-purchase signal: excluded from the catalog and the
  log (``non_product_rows``, ``non_product_codes``).
* **Stock codes** are stripped and upper-cased: the raw file spells some suffixes in lower case
  (``85123a`` beside ``85123A``), which are the same product (``stock_codes_normalized``).
* **Titles**: the most frequent non-empty description of the code, stripped; ties go to the one
  seen first. Some codes carry several (a renamed or misspelt product); the usual one is the
  name shoppers saw (``codes_with_several_descriptions``). A code with no description at all
  has nothing to embed or show: excluded from both files (``no_description_codes`` and its
  ``no_description_rows``). Every row counts toward titles, including rows without customer.
* **Catalog columns**: ``category`` and ``description`` are empty (the data has neither);
  ``created_at`` is the code's first appearance in the raw file (an upper bound on its listing
  date; the freshness feature needs one); ``in_stock`` true; ``popularity`` 0 for every item —
  counts over the whole file would leak the evaluation period into the ranker, so popularity
  is computed from the log's training period by the evaluation, as for MovieLens.
* **Cancellations** (``invoice_no`` starting with ``C``) and other lines with quantity <= 0
  (stock adjustments): not purchases, so not interactions (``cancellation_rows``). A
  cancelled purchase still was a choice, but keeping it would need matching each cancellation
  to its purchase, which the data does not link.
* **No customer_id**: a sale that cannot be attributed to a shopper builds no history, so it
  is not an interaction (``no_customer_rows``); its product still enters the catalog.
* **Unreadable rows** (bad quantity or date) are skipped (``malformed_rows``, with the first
  few reasons in ``malformed_examples``).

Each row is counted once, under the first of: non-product code, no description, malformed,
cancellation, no customer. What remains is one interaction per invoice line: ``user_id`` =
customer_id as an integer string (``"17850"``, also when the source wrote ``17850.0``),
``item_id`` = the normalized stock code, ``timestamp`` = invoice_date (naive, read as UTC: one
time zone for the whole log keeps its order), ``event_type`` = ``"purchase"``, weight 1. The
quantity is deliberately not a weight: a bulk buyer of 1,000 units made one choice, and
weighting by units would let a few wholesalers outvote every other shopper.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aisle_export.data.interactions import Interactions, write_interactions
from aisle_export.data.movielens import CATALOG_COLUMNS

RAW_COLUMNS = ("invoice_no", "stock_code", "description", "quantity", "invoice_date", "customer_id")
PURCHASE = "purchase"
_MAX_EXAMPLES = 10


@dataclass
class RetailConversion:
    catalog_path: Path
    interactions_path: Path
    report: dict  # counts of every kind of dropped or changed row, and of what was kept


@dataclass
class _Line:
    """One raw invoice line, normalized: ``when`` None if the date is unreadable."""

    number: int  # physical line where the record starts
    invoice_no: str
    code: str
    description: str
    quantity: str
    when: dt.datetime | None
    customer: str


@dataclass
class _Product:
    first_seen: dt.datetime | None = None
    descriptions: Counter = field(default_factory=Counter)


def convert_online_retail(raw_csv: Path, out_dir: Path) -> RetailConversion:
    """Write ``out_dir/catalog.csv`` and ``out_dir/interactions.csv`` (see the module docstring)."""
    raw_csv, out_dir = Path(raw_csv), Path(out_dir)
    report: Counter = Counter()
    lines = list(_read_raw(raw_csv, report))
    products = _collect_products(lines, report)
    titles = _titles(products, report)
    interactions, examples = _purchases(lines, titles, report)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog_path = _write_catalog(out_dir / "catalog.csv", products, titles)
    interactions_path = write_interactions(interactions, out_dir / "interactions.csv")
    summary = {
        "raw_rows": report["raw_rows"],
        "non_product_rows": report["non_product_rows"],
        "non_product_codes": sorted({line.code for line in lines if not _is_product(line.code)}),
        "stock_codes_normalized": report["stock_codes_normalized"],
        "codes_with_several_descriptions": report["codes_with_several_descriptions"],
        "no_description_codes": report["no_description_codes"],
        "no_description_rows": report["no_description_rows"],
        "malformed_rows": report["malformed_rows"],
        "malformed_examples": examples,
        "cancellation_rows": report["cancellation_rows"],
        "no_customer_rows": report["no_customer_rows"],
        "kept_interactions": len(interactions),
        "customers": len(np.unique(interactions.user_id)),
        "items_in_catalog": len(titles),
        "items_with_interactions": len(np.unique(interactions.item_id)),
    }
    return RetailConversion(catalog_path, interactions_path, summary)


# --------------------------------------------------------------------------- reading


def _read_raw(path: Path, report: Counter) -> Iterator[_Line]:
    """The raw rows, normalized; a missing column stops everything (wrong file)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in RAW_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path.name}: missing column(s) {missing} (columns: {', '.join(reader.fieldnames or [])})"
            )
        number = reader.line_num + 1
        for record in reader:
            report["raw_rows"] += 1
            raw_code = record["stock_code"] or ""
            code = raw_code.strip().upper()
            report["stock_codes_normalized"] += code != raw_code
            yield _Line(
                number,
                (record["invoice_no"] or "").strip(),
                code,
                (record["description"] or "").strip(),
                (record["quantity"] or "").strip(),
                _parse_date(record["invoice_date"]),
                (record["customer_id"] or "").strip(),
            )
            number = reader.line_num + 1


def _parse_date(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat((text or "").strip())
    except ValueError:
        return None


def _is_product(code: str) -> bool:
    """Every real product code starts with a digit; postage, fees and the like do not."""
    return code[:1].isdigit()


def _collect_products(lines: list[_Line], report: Counter) -> dict[str, _Product]:
    """Product code → descriptions seen and first appearance, in order of first appearance."""
    products: dict[str, _Product] = {}
    for line in lines:
        if not _is_product(line.code):
            report["non_product_rows"] += 1
            continue
        product = products.setdefault(line.code, _Product())
        if line.description:
            product.descriptions[line.description] += 1
        if line.when is not None and (product.first_seen is None or line.when < product.first_seen):
            product.first_seen = line.when
    return products


def _titles(products: dict[str, _Product], report: Counter) -> dict[str, str]:
    """Code → title for the codes that have one (most frequent description, first on ties)."""
    titles: dict[str, str] = {}
    for code, product in products.items():
        if not product.descriptions:
            report["no_description_codes"] += 1
            continue
        report["codes_with_several_descriptions"] += len(product.descriptions) > 1
        titles[code] = product.descriptions.most_common(1)[0][0]
    return titles


# --------------------------------------------------------------------------- outputs


def _purchases(lines: list[_Line], titles: dict[str, str], report: Counter) -> tuple[Interactions, list[str]]:
    """The lines that are attributable purchases of catalog products, as an interaction log."""
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    examples: list[str] = []
    for line in lines:
        if not _is_product(line.code):
            continue  # counted in _collect_products
        reason = _drop_reason(line, titles)
        if reason is not None:
            report[reason] += 1
            if reason == "malformed_rows" and len(examples) < _MAX_EXAMPLES:
                examples.append(f"line {line.number}: {_malformed_detail(line)}")
            continue
        assert line.when is not None
        users.append(_customer_id(line.customer))
        items.append(line.code)
        times.append(line.when.replace(tzinfo=dt.UTC).timestamp())
    if not users:
        raise ValueError("no purchases left after cleaning: is this the Online Retail file?")
    timestamp = np.array(times, dtype=np.float64)
    order = np.argsort(timestamp, kind="stable")
    interactions = Interactions(
        np.array(users, dtype=str)[order],
        np.array(items, dtype=str)[order],
        np.ones(len(users), dtype=np.float32),
        timestamp[order],
        np.full(len(users), PURCHASE),
    )
    return interactions, examples


def _drop_reason(line: _Line, titles: dict[str, str]) -> str | None:
    """The report counter a (product) line is dropped under, or None to keep it."""
    if line.code not in titles:
        return "no_description_rows"
    quantity = _quantity(line.quantity)
    if line.when is None or quantity is None:
        return "malformed_rows"
    if line.invoice_no.upper().startswith("C") or quantity <= 0:
        return "cancellation_rows"
    if not line.customer:
        return "no_customer_rows"
    return None


def _malformed_detail(line: _Line) -> str:
    if line.when is None:
        return "invoice_date is not ISO-8601"
    return f"quantity {line.quantity!r} is not a number"


def _quantity(text: str) -> float | None:
    """The quantity, or None when it is not a finite number."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _customer_id(text: str) -> str:
    """``"17850.0"`` (how dataframe exports write an id column with gaps) → ``"17850"``."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _write_catalog(path: Path, products: dict[str, _Product], titles: dict[str, str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CATALOG_COLUMNS)
        for code, title in titles.items():
            first = products[code].first_seen
            writer.writerow([code, title, "", "", first.isoformat() if first else "", "0", "true"])
    return path


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aisle_export.data.online_retail",
        description="Convert the raw UCI Online Retail CSV into an Aisle catalog and "
        "interaction log; prints what was dropped or changed, as JSON.",
    )
    parser.add_argument("raw_csv", type=Path, help="the raw invoice lines (transactions.csv)")
    parser.add_argument("out_dir", type=Path, help="where catalog.csv and interactions.csv go")
    args = parser.parse_args(argv)
    if not args.raw_csv.is_file():
        parser.error(f"{args.raw_csv} not found")
    try:
        conversion = convert_online_retail(args.raw_csv, args.out_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "catalog": str(conversion.catalog_path),
                "interactions": str(conversion.interactions_path),
                **conversion.report,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
