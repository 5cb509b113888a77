"""Live catalog changes applied to an index (``aisle_server.live_catalog``), ranked as ``rerank`` ranks them."""

import numpy as np
import pytest

from aisle_contract import ItemChangeError, check_item_change, item_text
from aisle_server.ann import AnnIndex
from aisle_server.catalog_io import parse_changes
from aisle_server.cooccurrence import Cooccurrence
from aisle_server.errors import InvalidInput
from aisle_server.index import CatalogIndex, TextColumn
from aisle_server.lexical import LexicalIndex
from aisle_server.live_catalog import Change, Overlay, live_index, merge_state, needs_embedding
from aisle_server.ranking import RankingConfig, RankRequest, rank


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def base_index(n=6, dim=4, ann=False):
    rng = np.random.default_rng(0)
    vectors = np.stack([unit(v) for v in rng.normal(size=(n, dim))])
    titles = [f"red shoe {r}" if r % 2 else f"blue hat {r}" for r in range(n)]
    return CatalogIndex(
        item_ids=np.array([f"i{r}" for r in range(n)]),
        embeddings=vectors,
        titles=np.array(titles),
        categories=np.array(["shoes" if r % 2 else "hats" for r in range(n)]),
        created_at=np.full(n, np.nan),
        popularity=np.arange(n, dtype=np.float64),
        in_stock=np.ones(n, dtype=bool),
        descriptions=TextColumn.of([f"about {r}" for r in range(n)]),
        lexical=LexicalIndex.build(titles),
        ann=AnnIndex.build(vectors, nlist=2) if ann else None,
    )


def overlay(*changes):
    o = Overlay()
    o.apply([Change(*c) for c in changes])
    return o


def search(index, vector, k=3, **kw):
    request = RankRequest(unit(vector), [], np.zeros(0), k, 1000.0, RankingConfig(), **kw)
    return rank(index, request).item_ids


def test_no_changes_serves_the_base_itself():
    base = base_index()
    assert live_index(base, Overlay()) is base


def test_an_inserted_item_is_found_by_id_search_and_category():
    base = base_index()
    vector = unit([1, 1, 1, 1])
    live = live_index(base, overlay(("new", "upsert", {"title": "green scarf", "category": "scarves"}, vector)))
    assert len(live) == len(base) + 1
    assert live.rows_of(["new", "i0", "nope"]).tolist() == [len(base), 0, -1]
    assert search(live, vector, k=1) == ["new"]
    assert live.category_mask(["scarves"]).tolist() == [False] * len(base) + [True]
    assert search(live, vector, k=1, deny_categories=["scarves"]) != ["new"]
    assert live.lexical.scores("green scarf")[len(base)] == pytest.approx(1.0)  # term match, no BM25 rebuild
    mixed = live.lexical.scores("green shoe scarf")  # the best base match holds 1 of the 3 terms
    assert mixed[: len(base)].max() == pytest.approx(1 / 3) and mixed[len(base)] == pytest.approx(2 / 3)
    assert len(base) == 6 and base.rows_of(["new"]).tolist() == [-1]  # the base is untouched


def test_a_misspelled_query_reaches_inserted_items_through_the_base_speller():
    base = base_index()
    live = live_index(base, overlay(("new", "upsert", {"title": "green shoe"}, unit([1, 1, 1, 1]))))
    typo = live.lexical.scores("grren shooe")  # "shooe" → "shoe" (a base word); "grren" stays as typed
    assert typo[len(base)] == pytest.approx(0.5)  # the new item holds "shoe" of the two terms
    np.testing.assert_array_equal(live.lexical.scores("grren shoe"), typo)
    assert live.lexical.scores("grren shooe", correct_typos=False) is None


def test_hidden_out_of_stock_and_deleted_items_are_never_shown():
    base = base_index()
    target = np.asarray(base.embeddings[2])
    assert search(base, target, k=1) == ["i2"]
    for fields in ({"hidden": True}, {"in_stock": False}):
        live = live_index(base, overlay(("i2", "upsert", fields, None)))
        assert "i2" not in search(live, target, k=len(base))
        assert live.rows_of(["i2"]).tolist() == [2]  # still known: a history naming it still counts
    live = live_index(
        base, overlay(("i2", "upsert", {"hidden": True}, None), ("i2", "upsert", {"hidden": False}, None))
    )
    assert search(live, target, k=1) == ["i2"]
    live = live_index(base, overlay(("i2", "delete", {}, None)))
    assert "i2" not in search(live, target, k=len(base))
    assert live.rows_of(["i2"]).tolist() == [-1]


def test_a_field_change_edits_the_row_and_a_reinsert_after_delete_starts_fresh():
    base = base_index()
    live = live_index(base, overlay(("i1", "upsert", {"category": "hats", "popularity": 50.0}, None)))
    assert live.categories[1] == "hats" and live.category_mask(["hats"])[1]
    assert not live.category_mask(["shoes"])[1]
    assert live.popularity[1] == 50.0 and live.titles[1] == base.titles[1]
    live = live_index(
        base, overlay(("i1", "delete", {}, None), ("i1", "upsert", {"title": "again"}, unit([0, 0, 0, 1])))
    )
    assert live.rows_of(["i1"]).tolist() == [1] and live.titles[1] == "again"
    assert live.categories[1] == "" and live.popularity[1] == 0.0 and live.descriptions[1] == ""


def test_a_reembedded_row_is_searched_exactly_beside_the_ann_index():
    base = base_index(n=40, ann=True)
    far = -np.asarray(base.embeddings[0])
    live = live_index(
        base, overlay(("i3", "upsert", {"title": "moved"}, unit(far)), ("x", "upsert", {"title": "x"}, unit(far)))
    )
    assert live.exact_rows.tolist() == [3, 40]
    assert set(search(live, far, k=2)) == {"i3", "x"}


def test_cooccurrence_and_log_popularity_grow_with_the_catalog():
    base = base_index()
    base.cooccurrence = Cooccurrence(np.full((6, 2), -1, dtype=np.int32), np.zeros((6, 2), dtype=np.float32))
    base.log_popularity = np.ones(6)
    live = live_index(base, overlay(("new", "upsert", {"title": "t"}, unit([1, 0, 0, 0]))))
    assert live.cooccurrence.neighbors.shape == (7, 2) and live.log_popularity.tolist() == [1.0] * 6 + [0.0]


def test_merge_state_and_what_is_reembedded():
    assert merge_state(None, Change("a", "upsert", {"title": "t"})) == {"title": "t"}
    assert merge_state({"title": "t", "popularity": 1.0}, Change("a", "upsert", {"popularity": 2.0})) == {
        "title": "t",
        "popularity": 2.0,
    }
    assert merge_state({"title": "t"}, Change("a", "delete")) == {"deleted": True}
    assert merge_state({"deleted": True}, Change("a", "upsert", {"title": "u"})) == {"title": "u"}
    assert needs_embedding(Change("a", "upsert", {"in_stock": False}), known=False)
    assert not needs_embedding(Change("a", "upsert", {"in_stock": False}), known=True)
    assert needs_embedding(Change("a", "upsert", {"description": "d"}), known=True)
    assert not needs_embedding(Change("a", "delete"), known=True)


def test_a_change_round_trips_through_its_stream_form():
    vector = unit([1, 2, 3, 4])
    back = Change.from_stream("5-0", Change("a", "upsert", {"title": "t"}, vector).to_stream())
    assert (back.item_id, back.op, dict(back.fields), back.change_id) == ("a", "upsert", {"title": "t"}, "5-0")
    np.testing.assert_array_equal(back.embedding, vector)
    assert Change.from_stream("6-0", Change("a", "delete").to_stream()).embedding is None


@pytest.mark.parametrize(
    ("item_id", "op", "fields", "field"),
    [
        ("", "upsert", {"title": "t"}, "item_id"),
        ("a", "hide", {}, "op"),
        ("a", "upsert", {}, "fields"),
        ("a", "delete", {"title": "t"}, "fields"),
        ("a", "upsert", {"colour": "red"}, "colour"),
        ("a", "upsert", {"title": "  "}, "title"),
        ("a", "upsert", {"popularity": float("nan")}, "popularity"),
        ("a", "upsert", {"popularity": -1}, "popularity"),
        ("a", "upsert", {"in_stock": "yes"}, "in_stock"),
        ("a", "upsert", {"created_at": 1.7e12}, "created_at"),
        ("a", "upsert", {"category": 3}, "category"),
    ],
)
def test_a_bad_change_names_its_field(item_id, op, fields, field):
    with pytest.raises(ItemChangeError) as caught:
        check_item_change(item_id, op, fields)
    assert caught.value.field == field


def test_parse_changes_names_the_tensor_and_row():
    def column(*values):
        return np.array([[v.encode()] for v in values], dtype=object)

    ok = parse_changes(
        {"ITEM_ID": column("a", "b"), "OP": column("upsert", "delete"), "FIELDS": column('{"popularity": 3}', "{}")}
    )
    assert [(c.item_id, c.op, dict(c.fields)) for c in ok] == [
        ("a", "upsert", {"popularity": 3.0}),
        ("b", "delete", {}),
    ]
    with pytest.raises(InvalidInput, match=r"POPULARITY: row 1"):
        parse_changes(
            {
                "ITEM_ID": column("a", "b"),
                "OP": column("upsert", "upsert"),
                "FIELDS": column('{"hidden": true}', '{"popularity": -2}'),
            }
        )
    with pytest.raises(InvalidInput, match=r"FIELDS: row 0: not JSON"):
        parse_changes({"ITEM_ID": column("a"), "OP": column("upsert"), "FIELDS": column("{nope")})
    with pytest.raises(InvalidInput, match=r"^OP: required"):
        parse_changes({"ITEM_ID": column("a"), "FIELDS": column("{}")})


def test_item_text_is_the_indexing_text():
    assert item_text("Toy Story (1995)", "", "Animation") == "Toy Story (1995). Animation"
    assert item_text("That Darn Cat!", "A cat", "Comedy") == "That Darn Cat! A cat. Comedy"
    assert item_text("Hat", "a red hat", "hat") == "Hat. a red hat"
