"""``aisle index --hnsw-ef-search``: the graph's search breadth, saved with the index and served from it."""

from __future__ import annotations

import numpy as np
import pytest

from aisle_export.cli import build_parser
from aisle_export.data.catalog import read_catalog
from aisle_export.index.writing import write_index
from aisle_server.hnsw import DEFAULT_EF_SEARCH
from aisle_server.index import INDEX_DIRNAME, CatalogIndex

ITEMS, DIM = 120, 16


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "products.csv"
    path.write_text("item_id,title\n" + "".join(f"p{i},product number {i}\n" for i in range(ITEMS)))
    return read_catalog(path)


@pytest.mark.parametrize(("breadth", "saved"), [(None, DEFAULT_EF_SEARCH), (64, 64)])
def test_the_breadth_is_saved_with_the_graph(tmp_path, catalog, breadth, saved):
    vectors = np.random.default_rng(0).normal(size=(ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    repo = tmp_path / "repo"
    write_index(catalog, repo, progress=False, embeddings=vectors, dense_engine="hnsw", hnsw_ef_search=breadth)
    index = CatalogIndex.load(repo / "rerank" / "1" / INDEX_DIRNAME)
    assert index.hnsw is not None and index.hnsw.ef_search == saved
    assert index.hnsw.index.hnsw.efSearch == saved  # what a search walks with


def test_the_flag_reaches_the_index_and_a_bad_value_is_refused_naming_it(capsys):
    args = build_parser().parse_args(["index", "--catalog", "c.csv", "--hnsw-ef-search", "128"])
    assert args.hnsw_ef_search == 128
    assert build_parser().parse_args(["index", "--catalog", "c.csv"]).hnsw_ef_search is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["index", "--catalog", "c.csv", "--hnsw-ef-search", "0"])
    assert "--hnsw-ef-search" in capsys.readouterr().err
