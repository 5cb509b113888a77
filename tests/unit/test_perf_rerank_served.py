"""perf.bench_rerank_served's pure pieces: the grown catalog and the order of the load windows. No server."""

from __future__ import annotations

import csv

import pytest

from perf import bench_rerank_served as bench


def _catalog(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "title", "description", "category", "popularity"])
        writer.writerows(rows)
    return path


def test_a_grown_catalog_keeps_the_originals_and_adds_variants_with_new_ids(tmp_path):
    source = _catalog(
        tmp_path / "c.csv", [["1", "Tea", "Tata", "Beverages", "4"], ["2", "Rice", "", "Foodgrains", "0"]]
    )
    grown = bench.grow_catalog(source, 7, tmp_path / "grown.csv")
    with open(grown, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["item_id"] for r in rows] == ["1", "2", "1-v1", "2-v1", "1-v2", "2-v2", "1-v3"]
    assert rows[2]["title"] == f"Tea - {bench.VARIANTS[0]}" and rows[3]["title"] == f"Rice - {bench.VARIANTS[1]}"
    assert rows[6]["description"] == "Tata" and rows[6]["category"] == "Beverages"
    with pytest.raises(ValueError, match="already holds 2"):
        bench.grow_catalog(source, 1, tmp_path / "small.csv")


def test_every_window_runs_once_a_round_in_reversed_order_every_other_round():
    first = bench.window_order(["a", "b"], 0, fastapi=True)
    assert len(first) == 2 * len(bench.MODES) + 1 and len(set(first)) == len(first)
    assert first[-1] == (bench.FASTAPI, "") and first[0][0] == "a"
    assert bench.window_order(["a", "b"], 1, fastapi=True) == first[::-1]
    assert bench.window_order(["a"], 2) == [("a", mode) for mode in bench.MODES]
