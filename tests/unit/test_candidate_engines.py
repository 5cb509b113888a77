"""Candidates from the top-k engines (HNSW graph, BM25 postings, per-row filters) against the exact
scan of every item (``exact_retrieval``): the same pages, through filters, live changes and deletes."""

from dataclasses import replace

import numpy as np
import pytest

from aisle_server.cooccurrence import Cooccurrence
from aisle_server.hnsw import HnswIndex
from aisle_server.index import CatalogIndex, TextColumn
from aisle_server.lexical import STOPWORDS, LexicalIndex, tokenize
from aisle_server.live_catalog import Change, Overlay, live_index
from aisle_server.ranking import RankingConfig, RankRequest, allowed_mask, rank, rank_groups, rank_many
from aisle_server.row_filter import RowFilter

N, DIM = 1500, 16
WORDS = ["red", "blue", "green", "shoe", "hat", "scarf", "wool", "cotton", "linen", "silk"]


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def base():
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(12, DIM))
    vectors = centers[rng.integers(0, 12, N)] + 0.6 * rng.normal(size=(N, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    titles = [" ".join(rng.choice(WORDS, 3)) + f" {r}" for r in range(N)]
    in_stock = rng.random(N) > 0.1
    return CatalogIndex(
        item_ids=np.array([f"i{r}" for r in range(N)]),
        embeddings=vectors,
        titles=np.array(titles),
        categories=np.array([f"c{r % 7}" for r in range(N)]),
        created_at=rng.uniform(0, 1000, N),
        popularity=rng.integers(0, 50, N).astype(np.float64),
        in_stock=in_stock,
        descriptions=TextColumn.of([""] * N),
        lexical=LexicalIndex.build(titles),
        # "flat" storage and a wide search: on 1,500 items the graph finds the exact neighbours,
        # so any difference from the exact path is the candidate path's, not the graph's recall
        hnsw=HnswIndex.build(vectors, ef_search=256, storage="flat"),
        cooccurrence=Cooccurrence(rng.integers(-1, N, (N, 8)).astype(np.int32), rng.random((N, 8)).astype(np.float32)),
    )


def query(seed):
    return unit(np.random.default_rng(seed).normal(size=DIM))


def both(index, request):
    """The page through the engines and through the exact scan (same request otherwise)."""
    fast = rank(index, request)
    exact = rank(index, replace(request, config=replace(request.config, exact_retrieval=True)))
    return fast, exact


def assert_same(index, request):
    fast, exact = both(index, request)
    assert fast.item_ids == exact.item_ids
    np.testing.assert_allclose(fast.scores, exact.scores, rtol=1e-5)
    return fast.item_ids


CASES = {
    "dense": {"config": RankingConfig(search_mode="dense")},
    "hybrid": {"query_text": "red wool shoe"},
    "hybrid with a typo": {"query_text": "red wol shoe"},
    "lexical": {"query_text": "silk scarf", "config": RankingConfig(search_mode="lexical")},
    "lexical, few matches": {"query_text": "linen 42", "config": RankingConfig(search_mode="lexical")},
    "allow categories": {"query_text": "blue hat", "allow_categories": ["c1", "c3"]},
    "deny categories": {"query_text": "blue hat", "deny_categories": ["c0", "c2", "c4"]},
    "exclude ids": {"exclude_ids": [f"i{r}" for r in range(0, N, 3)]},
    "one small category (over-fetch runs out: exact fallback)": {"allow_categories": ["c5"], "exclude_ids": ["i5"]},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_search_gets_the_exact_scans_page(base, case):
    kw = dict(CASES[case])
    config = kw.pop("config", RankingConfig())
    for seed in range(5):
        request = RankRequest(query(seed), [], np.zeros(0), 20, 2000.0, config, **kw)
        page = assert_same(base, request)
        assert len(page) == 20
        rows = base.rows_of(page)
        assert base.in_stock[rows].all()
        if "allow_categories" in kw:
            assert set(base.categories[rows]) <= set(kw["allow_categories"])
        if "deny_categories" in kw:
            assert not set(base.categories[rows]) & set(kw["deny_categories"])
        assert not set(page) & set(kw.get("exclude_ids", ()))


def test_a_feed_excludes_its_history_as_the_exact_scan_does(base):
    history = [f"i{r}" for r in range(10, 400, 13)]
    request = RankRequest(None, history, np.arange(len(history), dtype=np.float64), 30, 2000.0, RankingConfig())
    page = assert_same(base, request)
    assert not set(page) & set(history)
    keep = replace(request, config=RankingConfig(exclude_history=False))
    assert_same(base, keep)


def test_a_feed_with_cooccurrence_gets_the_exact_scans_page(base):
    history = [f"i{r}" for r in range(5, 300, 37)]
    times = np.arange(len(history), dtype=np.float64)
    for config in (
        RankingConfig(cooccurrence_weight=0.7),
        RankingConfig(cooccurrence_weight=0.7, exclude_history=False, diversity=0.3),
        RankingConfig(cooccurrence_weight=0.2, popular_candidates=0),
    ):
        request = RankRequest(None, history, times, 25, 2000.0, config, deny_categories=["c3"])
        page = assert_same(base, request)
        assert not {base.categories[r] for r in base.rows_of(page)} & {"c3"}


def test_live_inserts_updates_hides_and_deletes_reach_the_engines_page(base):
    target = query(11)
    row_near = int(np.argmax(base.embeddings @ target))  # the base item the query finds first
    changes = [
        Change("new-near", "upsert", {"title": "green silk scarf", "category": "c1"}, target),
        Change("new-far", "upsert", {"title": "zebra wool hat", "category": "c2"}, -target),
        Change(f"i{row_near}", "delete"),
        Change("i20", "upsert", {"title": "green silk scarf deluxe"}, unit(target + 0.05)),  # re-embedded
        Change("i21", "upsert", {"hidden": True}),
        Change("i22", "upsert", {"in_stock": False}),
    ]
    overlay = Overlay()
    overlay.apply(changes)
    live = live_index(base, overlay)
    assert live.hnsw is base.hnsw and live.exact_rows is not None
    for kw in ({}, {"query_text": "green silk scarf"}, {"allow_categories": ["c1"]}):
        request = RankRequest(target, [], np.zeros(0), 15, 2000.0, RankingConfig(), **kw)
        page = assert_same(live, request)
        assert "new-near" in page[:3]
        if "allow_categories" not in kw:  # i20 is in c6
            assert ("i20" in page) == bool(base.in_stock[20])  # re-embedded next to the query
        assert not {f"i{row_near}", "i21", "i22"} & set(page)
    lexical = RankRequest(target, [], np.zeros(0), 5, 2000.0, RankingConfig(search_mode="lexical"), "zebra hat")
    assert "new-far" in assert_same(live, lexical)


def test_bm25_postings_give_the_dense_scores(base):
    for text in ("red wool shoe", "silk", "blue blue hat", "nothing here", "scraf"):
        dense = base.lexical.scores(text)
        sparse = base.lexical.matches(text)
        if dense is None:
            assert sparse is None
            continue
        np.testing.assert_array_equal(sparse.dense(), dense)
        rows = np.arange(N)
        np.testing.assert_array_equal(sparse[rows], dense)


def test_the_row_filter_answers_as_its_whole_catalog_mask(base):
    history = np.array([3, 4, 5, 700])
    request = RankRequest(
        None, [], np.zeros(0), 5, 0.0, RankingConfig(), exclude_ids=["i9", "i10", "nope"], deny_categories=["c2"]
    )
    allowed = allowed_mask(base, request, history)
    assert isinstance(allowed, RowFilter)
    rows = np.random.default_rng(0).integers(0, N, 500)
    lazy = allowed[rows]
    mask = np.asarray(allowed)
    np.testing.assert_array_equal(lazy, mask[rows])
    assert not mask[[3, 4, 5, 700, 9, 10]].any()
    assert not mask[base.categories == "c2"].any()
    assert (mask == (base.in_stock & (base.categories != "c2") & ~np.isin(np.arange(N), [3, 4, 5, 700, 9, 10]))).all()
    exact = allowed_mask(base, replace(request, config=RankingConfig(exact_retrieval=True)), history)
    np.testing.assert_array_equal(exact, mask)


def test_the_graph_is_saved_with_the_index_and_loaded_back(base, tmp_path):
    base.save(tmp_path / "index")
    loaded = CatalogIndex.load(tmp_path / "index")
    assert loaded.hnsw is not None and len(loaded.hnsw) == N
    assert (loaded.hnsw.ef_search, loaded.hnsw.storage) == (256, "flat")
    request = RankRequest(query(3), [], np.zeros(0), 10, 2000.0, RankingConfig(), "red hat")
    assert rank(loaded, request).item_ids == rank(base, request).item_ids


def test_query_terms_are_bm25s_own_tokens():
    import bm25s

    texts = ["Amul Taaza Toned Milk, 500 ml", "", "the and of", "Café crème brûlée x2 a-b c_d", "ÜBER straße 42x"]
    assert tokenize(texts) == bm25s.tokenize(texts, stopwords=STOPWORDS, return_ids=False, show_progress=False)


def _cold_catalog(n, seed):
    """Popularity with many ties (zeros among them), creation times with gaps and in the future."""
    rng = np.random.default_rng(seed)
    created = rng.uniform(0, 1000, n)
    created[rng.random(n) < 0.2] = np.nan
    created[:5] = 2000.0  # "now" is 1500: items from the future count as brand new
    return CatalogIndex(
        item_ids=np.array([f"i{r}" for r in range(n)]),
        embeddings=np.eye(n, 4, dtype=np.float32),
        titles=np.array([f"t{r}" for r in range(n)]),
        categories=np.array([f"c{r % 5}" for r in range(n)]),
        created_at=created,
        popularity=rng.integers(0, 6, n).astype(np.float64),
        in_stock=rng.random(n) > 0.15,
        descriptions=TextColumn.of([""] * n),
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("weight", [0.0, 0.3, 5.0])
def test_the_cold_fallback_reads_its_candidates_off_two_orders_and_gets_the_full_scans(seed, weight):
    index = _cold_catalog(3000, seed)
    config = RankingConfig(fallback_freshness_weight=weight, freshness_half_life_s=300.0)
    cases = [
        ({}, 10),
        ({}, 2500),  # deeper than the first read: the search goes on down both orders
        ({"allow_categories": ["c3"]}, 40),
        ({"deny_categories": ["c0", "c1", "c2", "c4"]}, 700),  # past what the category holds: every allowed row
        ({"exclude_ids": [f"i{r}" for r in range(0, 3000, 2)]}, 30),
    ]
    for filters, k in cases:
        request = RankRequest(None, [], np.zeros(0), k, 1500.0, replace(config, candidates=k), **filters)
        fast, exact = both(index, request)
        assert fast.item_ids == exact.item_ids
        np.testing.assert_array_equal(fast.scores, exact.scores)
        assert len(fast.item_ids) == min(k, int(np.asarray(allowed_mask(index, request, np.zeros(0, np.int64))).sum()))


def _tied_catalog(n):
    """BigBasket's shape: no creation times, the top of the popularity ties far past a page."""
    index = _cold_catalog(n, 3)
    index.created_at = np.full(n, np.nan)
    index.popularity_prior = np.where(np.arange(n) % 3 == 0, 1.0, 0.5)
    return index


@pytest.mark.parametrize("catalog", [lambda: _cold_catalog(50_000, 9), lambda: _tied_catalog(50_000)])
def test_the_cold_fallback_reads_only_as_deep_as_its_answer_needs(catalog):
    index = catalog()
    config = RankingConfig(fallback_freshness_weight=0.3, freshness_half_life_s=300.0, candidates=20)
    request = RankRequest(None, [], np.zeros(0), 20, 1500.0, config)
    read = []
    original = index.popular_rows

    class Counted(np.ndarray):
        def __getitem__(self, key):
            if isinstance(key, slice):
                read.append(key.stop)
            return super().__getitem__(key)

    index.__dict__["popular_rows"] = original.view(Counted)
    fast = rank(index, request)
    assert read and max(read) < len(index) // 10  # never near the catalog's end
    index.__dict__["popular_rows"] = original
    assert fast.item_ids == rank(index, replace(request, config=replace(config, exact_retrieval=True))).item_ids


def test_a_dynamic_batch_ranked_together_answers_each_request_as_alone(base):
    """``rank_groups`` (``rerank``'s dynamic batch): the graph searched for every row at once, the
    exact scan batched within a request only — each request's page and scores bitwise its own."""
    exact = RankingConfig(exact_retrieval=True)
    groups = [
        [RankRequest(query(1), [], np.zeros(0), 5, 2000.0, query_text="red wool shoe")],
        [
            RankRequest(query(2), [], np.zeros(0), 5, 2000.0, allow_categories=["c5"]),  # the filter widens its search
            RankRequest(query(3), [], np.zeros(0), 7, 2000.0, RankingConfig(search_mode="lexical"), "silk scarf"),
        ],
        [
            RankRequest(query(4), [], np.zeros(0), 5, 2000.0, exact),
            RankRequest(query(5), [], np.zeros(0), 5, 2000.0, exact),
        ],
        [RankRequest(None, ["i3", "i40"], np.array([1000.0, 1500.0]), 6, 2000.0)],  # a feed
        [RankRequest(query(6), [], np.zeros(0), 4, 2000.0, exact)],
    ]
    together = rank_groups(base, groups)
    for group, answers in zip(groups, together):
        for alone, answer in zip(rank_many(base, group), answers, strict=True):
            assert answer.item_ids == alone.item_ids
            np.testing.assert_array_equal(answer.scores, alone.scores)


def test_merged_postings_sum_each_item_in_term_order_bitwise():
    from aisle_server.lexical import _merged_postings

    rng = np.random.default_rng(4)
    terms = [np.sort(rng.choice(5_000, size, replace=False)).astype(np.int32) for size in (900, 40, 2_500, 900)]
    terms[3] = terms[0]  # a repeated query term: the same postings twice
    values = [rng.random(len(t)).astype(np.float32) * 3 for t in terms]
    rows, sums = _merged_postings(np.concatenate(terms), np.concatenate(values))
    expected: dict[int, np.float32] = {}
    for docs, vals in zip(terms, values):  # bm25s' order: term by term, each sum in float32
        for doc, value in zip(docs.tolist(), vals):
            expected[doc] = np.float32(expected.get(doc, np.float32(0)) + value)
    assert rows.tolist() == sorted(expected)
    assert sums.dtype == np.float32 and sums.tolist() == [expected[r] for r in rows.tolist()]
