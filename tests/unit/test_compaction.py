"""``aisle catalog compact``'s pure part: base + live changes → the next base version."""

import numpy as np

from aisle_export.ops.compaction import compacted
from aisle_server.index import CatalogIndex, TextColumn
from aisle_server.lexical import LexicalIndex
from aisle_server.live_catalog import Change, Overlay, live_index


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def base_index():
    titles = ["red shoe", "blue hat", "green scarf", "yellow sock"]
    return CatalogIndex(
        item_ids=np.array(["a", "b", "c", "d"]),
        embeddings=np.eye(4, dtype=np.float32),
        titles=np.array(titles),
        categories=np.array(["shoes", "hats", "scarves", "socks"]),
        created_at=np.full(4, np.nan),
        popularity=np.array([1.0, 2.0, 3.0, 4.0]),
        in_stock=np.ones(4, dtype=bool),
        descriptions=TextColumn.of(["leather", "", "wool", ""]),
        lexical=LexicalIndex.build(titles),
        manifest={"catalog": "c.csv"},
    )


def test_compaction_drops_deleted_keeps_hidden_and_matches_the_live_index(tmp_path):
    base = base_index()
    overlay = Overlay()
    overlay.apply(
        [
            Change("b", "delete", {}, None, "1-0"),
            Change("c", "upsert", {"hidden": True}, None, "2-0"),
            Change("new", "upsert", {"title": "purple umbrella", "description": "folding"}, unit([1, 1, 0, 0]), "3-0"),
            Change("d", "upsert", {"popularity": 9.0}, None, "4-0"),
        ]
    )
    index = compacted(base, overlay, "4-0", base_version=1)
    assert index.item_ids.tolist() == ["a", "c", "d", "new"]
    assert index.hidden.tolist() == [False, True, False, False]
    assert index.popularity.tolist() == [1.0, 3.0, 9.0, 0.0]
    assert index.descriptions.tolist() == ["leather", "wool", "", "folding"]
    assert index.manifest["overlay_through"] == "4-0" and index.manifest["compacted_from"] == 1
    assert index.ann is None and index.rows_of(["b"]).tolist() == [-1]
    lexical = index.lexical.scores("purple umbrella")  # a real BM25 over the new texts
    assert int(np.argmax(lexical)) == 3
    live = live_index(base, overlay)  # what rerank served before compaction, minus the deleted row
    np.testing.assert_array_equal(index.embeddings, np.asarray(live.embeddings)[[0, 2, 3, 4]])

    back = CatalogIndex.load(index.save(tmp_path / "index"))
    assert back.hidden.tolist() == index.hidden.tolist()
    assert back.descriptions.tolist() == index.descriptions.tolist()
    assert back.available.tolist() == [True, False, True, True]
