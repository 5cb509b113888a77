"""The served catalog index on disk: every item field and lookup memory-mapped, rows found by id
through the sorted-id lookup (no per-item dict), ranking unchanged by the round trip, and indexes
written before that layout (items.npz) still served."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from aisle_server.index import ITEMS_DIRNAME, LEGACY_ITEMS_FILE, CatalogIndex, ItemLookups
from aisle_server.ranking import RankRequest, rank


def make_index(n: int = 300) -> CatalogIndex:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 16)).astype(np.float32)
    ids = rng.permutation([f"sku-{i}" for i in range(n)])  # not in sorted order
    return CatalogIndex(
        item_ids=ids,
        embeddings=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        titles=np.array([f"title number {i}" for i in range(n)]),
        categories=rng.choice(["shoes", "bags", "hats", "é-cat"], n),
        created_at=rng.uniform(0, 1000, n),
        popularity=rng.pareto(1.5, n),
        in_stock=rng.random(n) > 0.1,
    )


def test_rows_of_matches_a_dict_and_marks_unknown_ids():
    index = make_index()
    row_of = {item: row for row, item in enumerate(index.item_ids.tolist())}
    wanted = ["sku-17", "nope", "sku-299", "sku-0", "", "sku-17", "sku-2999999999999999"]  # repeats, longer than any id
    expected = [row_of.get(item, -1) for item in wanted]
    assert index.rows_of(wanted).tolist() == expected
    assert index.rows_of([]).dtype == np.int64 and len(index.rows_of([])) == 0
    assert ItemLookups.of(np.array([], dtype=str), np.array([], dtype=str)).rows_of(["x"]).tolist() == [-1]


def test_category_mask_matches_the_strings():
    index = make_index()
    mask = index.category_mask(["bags", "é-cat", "unknown"])
    np.testing.assert_array_equal(mask, np.isin(index.categories, ["bags", "é-cat"]))


def test_saved_index_is_memory_mapped_and_ranks_the_same(tmp_path):
    index = make_index()
    index.save(tmp_path)
    loaded = CatalogIndex.load(tmp_path)
    for name in ("item_ids", "titles", "categories", "created_at", "popularity", "in_stock", "embeddings"):
        assert isinstance(getattr(loaded, name), np.memmap), name
        np.testing.assert_array_equal(getattr(loaded, name), getattr(index, name))
    assert isinstance(loaded.lookups.sorted_ids, np.memmap) and isinstance(loaded.lookups.category_codes, np.memmap)
    assert loaded.manifest["count"] == len(index)
    history = [str(index.item_ids[r]) for r in (3, 50, 7)] + ["gone"]
    for request in (
        RankRequest(index.embeddings[5], [], np.zeros(0), 10, 1000.0),
        RankRequest(
            None,
            history,
            np.array([900.0, 950.0, 990.0, 999.0]),
            10,
            1000.0,
            exclude_ids=["sku-1"],
            deny_categories=["hats"],
        ),
    ):
        expected, got = rank(index, request), rank(loaded, request)
        assert got.item_ids == expected.item_ids and got.unknown_history == expected.unknown_history
        np.testing.assert_allclose(got.scores, expected.scores)
    assert rank(loaded, RankRequest(None, history, np.array([1.0, 2.0, 3.0, 4.0]), 5, 10.0)).unknown_history == 1


def test_an_index_in_the_old_layout_still_loads_and_ranks_the_same(tmp_path):
    index = make_index()
    index.save(tmp_path)
    np.savez(
        tmp_path / LEGACY_ITEMS_FILE,
        **{
            name: getattr(index, name)
            for name in ("item_ids", "titles", "categories", "created_at", "popularity", "in_stock")
        },
    )
    shutil.rmtree(tmp_path / ITEMS_DIRNAME)
    legacy = CatalogIndex.load(tmp_path)
    request = RankRequest(None, [str(index.item_ids[3])], np.array([990.0]), 10, 1000.0, deny_categories=["bags"])
    assert rank(legacy, request).item_ids == rank(index, request).item_ids
    (tmp_path / LEGACY_ITEMS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="items is missing"):
        CatalogIndex.load(tmp_path)


def test_ivf_pq_rescoring_reads_the_index_own_mapping(tmp_path):
    from aisle_server.ann import AnnIndex

    index = make_index(2000)
    index.ann = AnnIndex.build(index.embeddings, kind="ivf_pq", nlist=8, nprobe=8, pq_m=4)
    index.save(tmp_path)
    loaded = CatalogIndex.load(tmp_path)
    assert loaded.ann.kind == "ivf_pq" and loaded.ann.vectors is loaded.embeddings, "one mapping of embeddings.npy"
    query = index.embeddings[11]
    assert rank(loaded, RankRequest(query, [], np.zeros(0), 5, 0.0)).item_ids[0] == str(index.item_ids[11])
