"""The large-catalog index kinds of ``aisle_server.ann``: IVF-FP16 (the default), IVF-PQ with exact
re-scoring, saved and loaded as IVF-Flat is (faiss's format + ann.json, no pickle), and old
ann.json files still load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aisle_server.ann import ANN_META, DEFAULT_KIND, DEFAULT_REFINE, AnnIndex, default_nlist, default_pq_m


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((50, 64), dtype=np.float32)
    x = centers[rng.integers(0, 50, 10_000)] + 0.5 * rng.standard_normal((10_000, 64), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(vectors: np.ndarray, query: np.ndarray, n: int) -> set[int]:
    return set(np.argsort(-(vectors @ query))[:n].tolist())


def test_defaults():
    assert default_pq_m(384) == 48 and 384 % default_pq_m(384) == 0 and 100 % default_pq_m(100) == 0
    assert default_nlist(10_000_000, "ivf_pq") == 4096 and default_nlist(1_000_000) == 4000


def test_ivf_pq_round_trip_rescoring_from_mapped_vectors(vectors, tmp_path):
    np.save(tmp_path / "embeddings.npy", vectors)
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    built = AnnIndex.build(mapped, kind="ivf_pq", nprobe=16, nlist=64)
    built.save(tmp_path)
    assert json.loads((tmp_path / ANN_META).read_text()) == {"kind": "ivf_pq", "nprobe": 16, "refine": DEFAULT_REFINE}
    loaded = AnnIndex.load(tmp_path)
    assert loaded.kind == "ivf_pq" and loaded.refine == DEFAULT_REFINE and isinstance(loaded.vectors, np.memmap)
    queries = vectors[:20]

    def recall(index: AnnIndex) -> float:
        return float(np.mean([len(set(index.search(q, 50).tolist()) & exact(vectors, q, 50)) / 50 for q in queries]))

    codes_only = AnnIndex(loaded.index, 16, "ivf_pq", refine=0)
    assert recall(loaded) >= 0.7 and recall(loaded) > recall(codes_only) + 0.1, "exact re-scoring lifts PQ recall"
    rows = loaded.search(queries[0], 50)
    scores = vectors[rows] @ queries[0]
    assert rows[0] == 0 and np.all(np.diff(scores) <= 1e-6), "best first, exact scores"
    # PQ codes are far smaller than the vectors they stand for
    assert loaded.nbytes < vectors.nbytes / 8


def test_ivf_flat_unchanged_and_old_metadata_loads(vectors, tmp_path):
    built = AnnIndex.build(vectors, nprobe=8, nlist=64, kind="ivf_flat")
    assert built.kind == "ivf_flat" and built.refine == 0
    built.save(tmp_path)
    (tmp_path / ANN_META).write_text('{"nprobe": 8}\n')  # written before kinds existed
    loaded = AnnIndex.load(tmp_path)
    assert loaded.kind == "ivf_flat" and loaded.nprobe == 8 and loaded.vectors is None
    np.testing.assert_array_equal(loaded.search(vectors[3], 10), built.search(vectors[3], 10))


def test_ivf_fp16_is_the_default_finds_what_ivf_flat_finds_in_half_the_bytes(vectors, tmp_path):
    fp16 = AnnIndex.build(vectors, nprobe=8, nlist=64)
    flat = AnnIndex.build(vectors, nprobe=8, nlist=64, kind="ivf_flat")
    assert fp16.kind == DEFAULT_KIND == "ivf_fp16" and fp16.refine == 0 and fp16.vectors is None
    queries = vectors[np.random.default_rng(2).integers(0, len(vectors), 50)]
    same = [len(set(fp16.search(q, 100).tolist()) & set(flat.search(q, 100).tolist())) / 100 for q in queries]
    assert np.mean(same) >= 0.99  # the same lists probed; float16 rounding only moves the last ties
    assert fp16.nbytes < 0.6 * vectors.nbytes < flat.nbytes
    fp16.save(tmp_path)
    loaded = AnnIndex.load(tmp_path)
    assert loaded.kind == "ivf_fp16" and loaded.nprobe == 8
    np.testing.assert_array_equal(loaded.search(vectors[3], 10), fp16.search(vectors[3], 10))


def test_unknown_kind_is_refused(vectors):
    with pytest.raises(ValueError, match="unknown ANN kind"):
        AnnIndex.build(vectors[:1000], kind="hnsw")


def test_small_catalogs_get_a_clear_error_or_a_fitting_index(vectors):
    small = vectors[:12]
    flat = AnnIndex.build(small, nprobe=50)  # nlist and nprobe fit the 12 items
    assert flat.index.nlist == 12 and flat.nprobe == 12
    assert set(flat.search(small[3], 12).tolist()) == set(range(12))
    with pytest.raises(ValueError, match="ivf_pq needs at least 256 items"):
        AnnIndex.build(small, kind="ivf_pq")
    with pytest.raises(ValueError, match="20 lists needs at least as many items; the catalog has 12"):
        AnnIndex.build(small, nlist=20)


def test_filtered_search_returns_only_allowed_rows_best_first(vectors):
    pq = AnnIndex.build(vectors, kind="ivf_pq", nprobe=16, nlist=64)
    flat = AnnIndex.build(vectors, nprobe=16, nlist=64, kind="ivf_flat")
    fp16 = AnnIndex.build(vectors, nprobe=16, nlist=64)
    allowed = np.random.default_rng(1).random(len(vectors)) < 0.8
    query = vectors[7]
    exact_allowed = [r for r in np.argsort(-(vectors @ query)).tolist() if allowed[r]][:50]
    for ann in (pq, flat, fp16):
        rows = ann.search(query, 50, allowed)
        assert allowed[rows].all() and len(rows) == 50, ann.kind
        assert len(set(rows.tolist()) & set(exact_allowed)) >= 40, ann.kind
        scores = vectors[rows] @ query
        if ann.kind == "ivf_pq":
            assert np.all(np.diff(scores) <= 1e-6), "re-scored exactly, best first"
    only_three = np.zeros(len(vectors), dtype=bool)
    only_three[[7, 8, 9]] = True
    assert set(pq.search(query, 50, only_three).tolist()) <= {7, 8, 9}  # fewer than n: the caller falls back


def test_aisle_index_offers_the_server_s_kinds_and_default():
    from aisle_export.cli.index import ANN_KINDS, DEFAULT_ANN_KIND
    from aisle_server.ann import KINDS

    assert ANN_KINDS == KINDS and DEFAULT_ANN_KIND == DEFAULT_KIND
