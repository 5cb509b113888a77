"""perf.lib.proxy_catalog's pure pieces (the grown catalog, which given vectors to keep) and the feed
shoppers of perf.perf_analyzer.inputs for a catalog without a log. No server, no model."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from perf.lib import proxy_catalog
from perf.perf_analyzer import inputs


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
    grown = proxy_catalog.grow_catalog(source, 7, tmp_path / "grown.csv")
    with open(grown, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["item_id"] for r in rows] == ["1", "2", "1-v1", "2-v1", "1-v2", "2-v2", "1-v3"]
    assert (
        rows[2]["title"] == f"Tea - {proxy_catalog.VARIANTS[0]}"
        and rows[3]["title"] == f"Rice - {proxy_catalog.VARIANTS[1]}"
    )
    assert rows[6]["description"] == "Tata" and rows[6]["category"] == "Beverages"
    with pytest.raises(ValueError, match="already holds 2"):
        proxy_catalog.grow_catalog(source, 1, tmp_path / "small.csv")


def _unit(rows):
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_given_vectors_are_kept_only_when_the_tower_reproduces_them():
    given = _unit(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32))
    assert proxy_catalog.usable_rows(given, given[:3] * 2.0, 8) == 8  # cosine, not scale
    other = _unit(np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32))
    assert proxy_catalog.usable_rows(given, other, 8) == 0
    assert proxy_catalog.usable_rows(given, given[:3], 11) == 0  # fewer rows than asked for
    assert proxy_catalog.usable_rows(None, given[:3], 8) == 0
    assert proxy_catalog.usable_rows(given[:, :3], given[:3], 8) == 0  # another width


def test_the_tower_key_follows_the_graph_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.onnx").write_bytes(b"one graph")
    (tmp_path / "b" / "model.onnx").write_bytes(b"another graph")
    key = proxy_catalog.tower_key(tmp_path / "a")
    assert len(key) == 16 and key != proxy_catalog.tower_key(tmp_path / "b")
    assert key == proxy_catalog.tower_key(tmp_path / "a")


def test_category_shoppers_browse_one_category_in_time_order():
    ids = [f"i{n}" for n in range(60)]
    categories = ["tea"] * 30 + ["rice"] * 25 + ["salt"] * 5
    histories = inputs.category_histories(ids, categories, shoppers=12, seed=3)
    assert len(histories) == 12
    where = dict(zip(ids, categories))
    for history in histories.values():
        assert len({where[item] for item, _ in history}) == 1
        assert len({item for item, _ in history}) == len(history) == min(20, categories.count(where[history[0][0]]))
        times = [t for _, t in history]
        assert times == sorted(times) and len(set(times)) == len(times)
    assert histories == inputs.category_histories(ids, categories, shoppers=12, seed=3)
    feeds = inputs.feed_requests(histories, ["tea"], 4)
    assert all(5 <= len(f["history_ids"]) <= 20 for f in feeds)
    with pytest.raises(ValueError, match="no items"):
        inputs.category_histories([], [])


def test_derived_vectors_sit_at_the_measured_cosine_to_their_source_rows():
    from perf.lib.synthetic_catalog import turned

    rng = np.random.default_rng(3)
    head = rng.standard_normal((5, 32)).astype(np.float32)
    head /= np.linalg.norm(head, axis=1, keepdims=True)
    texts = [f"item {i}" for i in range(5)] + [f"item {i % 5} - Pack of 2 #{i}" for i in range(12)]
    source = {text: i % 5 for i, text in enumerate(texts[5:])}  # what grow_catalog's rows come from
    seen: list[str] = []

    def embed(sample: list[str]) -> np.ndarray:  # the item tower's stand-in: variants at cosine 0.9
        seen.extend(sample)
        return turned(head[[source[t] for t in sample]], 0.9, np.random.default_rng(0))

    vectors, cosine = proxy_catalog.derived_vectors(embed, head, texts, sample=4)
    assert len(seen) == 4 and set(seen) <= set(texts[5:])  # only a sample of the added rows embedded
    assert cosine == pytest.approx(0.9, abs=1e-5)
    assert vectors.shape == (17, 32) and np.array_equal(vectors[:5], head)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.sum(vectors[5:] * head[np.arange(12) % 5], axis=1), 0.9, atol=1e-5)
    assert not np.allclose(vectors[5], vectors[10])  # same source, different directions


def test_a_synthetic_catalog_is_written_as_a_catalog_aisle_index_reads(tmp_path):
    from aisle_export.data.catalog import read_catalog
    from perf.lib.synthetic_catalog import item_fields, title_queries, write_catalog

    fields = item_fields(300)
    catalog = read_catalog(write_catalog(fields, tmp_path / "synthetic.csv"))
    assert list(catalog.item_ids) == fields["item_ids"].tolist() and list(catalog.titles) == fields["titles"].tolist()
    assert list(catalog.categories) == fields["categories"].tolist()
    np.testing.assert_array_equal(catalog.in_stock, fields["in_stock"])
    np.testing.assert_allclose(catalog.created_at, fields["created_at"])
    np.testing.assert_allclose(catalog.popularity, fields["popularity"], rtol=1e-6)
    queries = title_queries(fields["titles"], count=20)
    assert len(queries) == 20 and all(len(q.split()) == 3 for q in queries)
    assert all(any(str(title).startswith(q + " ") for title in catalog.titles) for q in queries)
