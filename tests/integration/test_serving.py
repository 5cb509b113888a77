"""End to end through a real tritonserver: export → index MovieLens → serve → SDK over gRPC."""

from __future__ import annotations

import numpy as np
import pytest

from aisle import InvalidRequest, Recommendation
from aisle_export.build.repository import served_onnx_file
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import TextTokenizer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "title",
    ["Toy Story (1995)", "Usual Suspects, The (1995)", "Misérables, Les (1995)", "Star Wars (1977)", "Fargo (1996)"],
)
def test_searching_an_exact_title_returns_that_item_first(client, catalog, title):
    expected = {str(i) for i, t in zip(catalog.item_ids, catalog.titles) if t == title}
    assert expected, f"{title} is not in the catalog"
    recs = client.recommend(query=title, k=10)
    assert recs[0].item_id in expected
    assert all(isinstance(r, Recommendation) for r in recs)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_embed_matches_the_onnx_model_run_directly(client, repo):
    texts = ["red running shoes", "Toy Story (1995)", "crème brûlée ramekins", "a" * 5000]
    served = client.embed(texts)
    encoder_dir = repo / "query_encoder" / "1"
    graph = served_onnx_file(repo, "query_encoder")  # the graph the export chose (FP32 unless --query-precision)
    direct = OnnxEncoder(graph)(*TextTokenizer.from_directory(encoder_dir)(texts))
    assert served.shape == (4, 384) and served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    cosines = (served * direct).sum(1) / np.linalg.norm(served, axis=1) / np.linalg.norm(direct, axis=1)
    assert cosines.min() >= 0.9999


def test_query_encoder_answers_the_empty_text_as_onnx_does(raw, repo):
    """A feed call's empty query is answered from memory (``EmptyTextMemo``): same embedding as ONNX."""
    import tritonclient.grpc as grpcclient

    encoder_dir = repo / "query_encoder" / "1"
    ids, mask = TextTokenizer.from_directory(encoder_dir)(["", "red running shoes", ""])
    ids, mask = np.pad(ids, ((0, 0), (0, 16))), np.pad(mask, ((0, 0), (0, 16)))  # wider padding still matches
    inputs = []
    for name, array in (("input_ids", ids), ("attention_mask", mask)):
        inputs.append(grpcclient.InferInput(name, list(array.shape), "INT64"))
        inputs[-1].set_data_from_numpy(array)
    served = raw.infer("query_encoder", inputs, client_timeout=20).as_numpy("embedding")
    direct = OnnxEncoder(served_onnx_file(repo, "query_encoder"))(ids, mask)
    np.testing.assert_allclose(served, direct, atol=1e-5)


def test_embed_item_tower_and_more_than_one_batch(client):
    texts = [f"product number {i}" for i in range(150)]
    vectors = client.embed(texts, tower="item")
    assert vectors.shape == (150, 384)
    np.testing.assert_allclose(vectors[3], client.embed([texts[3]], tower="item")[0], atol=1e-5)


def test_the_same_request_gives_the_same_answer(client):
    history = [("50", 880000000.0), ("181", 880000500.0)]
    answers = {tuple(client.recommend(query="space battle", history=history, k=10, now=880001000.0)) for _ in range(5)}
    assert len(answers) == 1


def test_feed_from_history_excludes_the_history_and_follows_it(client, catalog):
    titles = dict(zip(catalog.item_ids.tolist(), catalog.titles.tolist()))
    star_wars = [
        i for i, t in titles.items() if t.startswith(("Star Wars", "Return of the Jedi", "Empire Strikes Back"))
    ]
    history = [(item, 880000000.0 + n) for n, item in enumerate(star_wars)]
    recs = client.recommend(history=history, k=10, now=880000100.0)
    assert len(recs) == 10 and recs.unknown_history == 0
    assert not {r.item_id for r in recs} & set(star_wars)
    assert any("Star Trek" in titles[r.item_id] or "Alien" in titles[r.item_id] for r in recs), [
        titles[r.item_id] for r in recs
    ]


def test_recent_history_outweighs_old_history(client, catalog):
    titles = dict(zip(catalog.item_ids.tolist(), catalog.titles.tolist()))
    by_title = {t: i for i, t in titles.items()}
    horror, kids = by_title["Nightmare on Elm Street, A (1984)"], by_title["Aladdin (1992)"]
    now = 900000000.0
    week = 7 * 24 * 3600.0
    recent_horror = client.recommend(history=[(kids, now - 8 * week), (horror, now - 60)], k=5, now=now)
    recent_kids = client.recommend(history=[(horror, now - 8 * week), (kids, now - 60)], k=5, now=now)
    assert [r.item_id for r in recent_horror] != [r.item_id for r in recent_kids]
    horror_vec, kids_vec = (client.embed([titles[i]], tower="query")[0] for i in (horror, kids))
    top_horror = client.embed([titles[recent_horror[0].item_id]])[0]
    top_kids = client.embed([titles[recent_kids[0].item_id]])[0]
    assert top_horror @ horror_vec > top_horror @ kids_vec
    assert top_kids @ kids_vec > top_kids @ horror_vec


def test_no_query_and_no_history_falls_back_to_popular_items(client, catalog):
    most_popular = str(catalog.item_ids[np.argmax(catalog.popularity)])
    for query in ("", "   \t\n", None):
        recs = client.recommend(query=query, k=5)
        assert len(recs) == 5
        assert recs[0].item_id == most_popular


def test_over_long_text_is_truncated_not_rejected(client):
    recs = client.recommend(query="toy story " * 2000, k=3)
    assert len(recs) == 3


def test_unknown_history_ids_are_ignored_and_counted(client):
    recs = client.recommend(query="comedy", history=[("no-such-item", 1.0), ("1", 2.0), ("nope", 3.0)], k=5)
    assert recs.unknown_history == 2
    assert "1" not in {r.item_id for r in recs}
    only_unknown = client.recommend(history=[("no-such-item", 1.0)], k=5)
    assert only_unknown.unknown_history == 1 and len(only_unknown) == 5


def test_k_is_validated_by_the_sdk_and_by_the_server(client, catalog):
    for bad in (0, -3, 1001, 2.5, True):
        with pytest.raises(InvalidRequest, match="k must be"):
            client.recommend(query="comedy", k=bad)
    recs = client.recommend(query="comedy", k=1000)
    assert len(recs) == 1000 == len({r.item_id for r in recs})


def test_unencodable_query_is_refused_before_the_network(client):
    with pytest.raises(InvalidRequest, match="query"):
        client.recommend(query="bad \ud800 surrogate", k=3)


def test_one_tower_on_both_sides_is_exported_once_and_each_encoder_keeps_its_own_entry_point(exported_repo):
    """The default pairs all-MiniLM-L6-v2 with itself: the item side is the query side's export, copied."""
    query, item = exported_repo / "query_encoder" / "1", exported_repo / "item_encoder" / "1"
    assert (item / "model.onnx").read_bytes() == (query / "model.onnx").read_bytes()
    assert (item / "parity.json").read_text() == (query / "parity.json").read_text()
    assert "`item_encoder`" in (item / "model.py").read_text()
    assert "`query_encoder`" in (query / "model.py").read_text()


def test_the_default_export_serves_both_towers_in_fp32(exported_repo):
    """FP32 is batch-invariant; the INT8 query graph is opt-in (``--query-precision``, test_int8_serving)."""
    import json

    chosen = json.loads((exported_repo / "export_report.json").read_text())["query_precision"]
    assert chosen == {"served": "model.onnx", "why": "the default, batch-invariant"}
    assert served_onnx_file(exported_repo, "query_encoder").name == "model.onnx"
    assert not (exported_repo / "query_encoder" / "1" / "model.int8.onnx").exists()
