"""perf.bench_finetune_scale's synthetic store and its checks (the benchmark itself is not run here)."""

from __future__ import annotations

import csv
from collections import Counter

from perf.bench_finetune_scale import Case, checks
from perf.synthetic_log import write_store


def test_synthetic_store_is_a_readable_log_of_popular_items_and_repeat_shoppers(tmp_path) -> None:
    log, catalog, info = write_store(tmp_path, items=2000, events=5000)
    items = {row["item_id"] for row in csv.DictReader(catalog.open())}
    rows = list(csv.DictReader(log.open()))
    assert len(items) == 2000 and len(rows) == 5000 and info["users"] == 100
    assert {row["item_id"] for row in rows} <= items  # every event's item is in the catalog
    counts = Counter(row["item_id"] for row in rows)
    assert sum(n for _, n in counts.most_common(20)) > 0.2 * len(rows)  # 1% of the items: a fifth of the events
    pairs = Counter((row["user_id"], row["item_id"]) for row in rows)
    assert sum(n - 1 for n in pairs.values()) > 0.4 * len(rows)  # most events buy again
    assert write_store(tmp_path, items=2000, events=5000)[2].get("reused")  # written once per size


def test_checks_compare_the_longest_log_with_the_shortest() -> None:
    cases = [
        Case("this tree", 100, 1000, wall_s=10.0, peak_rss_mb=900.0, finished=True),
        Case("this tree", 100, 10_000, wall_s=60.0, peak_rss_mb=5000.0, finished=True),
        Case("main", 100, 1000, wall_s=500.0, peak_rss_mb=100.0, finished=True),  # another code: not compared
    ]
    result = checks(cases)
    assert result["events_ratio"] == 10 and result["time_ratio"] == 6
    assert result["time_grows_no_faster_than_events"] and not result["peak_rss_within_4gb"]


def test_the_4_gb_bound_is_read_in_decimal_gigabytes() -> None:
    """3,864 MiB is 3.77 GiB but 4.05 × 10⁹ bytes: over the bound; 3,800 MiB (3.98 × 10⁹) is within."""
    small = Case("this tree", 100, 1000, wall_s=10.0, peak_rss_mb=900.0, finished=True)
    over = checks([small, Case("this tree", 100, 10_000, wall_s=60.0, peak_rss_mb=3864.0, finished=True)])
    within = checks([small, Case("this tree", 100, 10_000, wall_s=60.0, peak_rss_mb=3800.0, finished=True)])
    assert not over["peak_rss_within_4gb"] and over["peak_rss_gb_at_10000"] == 4.05
    assert within["peak_rss_within_4gb"] and within["peak_rss_gb_at_10000"] == 3.98
