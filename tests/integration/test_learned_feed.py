"""A store's log end to end: ``aisle finetune --interactions`` → ``aisle export --finetuned`` → serve.

The log is MovieLens-100K's ratings as a store's file (ratings as event types), trained briefly
(the point is the hand-off, not the quality: ``aisle evaluate`` measures that). The served user
encoder must give the offline torch model's user vector (cosine ≥ 0.9999), and the learned ranker
the offline ranker's scores, order and exact per-feature contributions, through a real tritonserver.
"""

from __future__ import annotations

import json
from dataclasses import replace

import aisle_cli
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aisle import InvalidRequest, RecClient
from aisle_export.data.movielens import movielens_files
from aisle_export.data.splits import load_log
from aisle_export.learn.ranker import RankerConfig, fit, split_groups
from aisle_export.learn.user_encoder import load_torch_model
from aisle_server.index import INDEX_DIRNAME, CatalogIndex
from aisle_server.learned import LEARNED_DIRNAME, RANKER_DIRNAME, USER_ENCODER_DIRNAME, attach_learned
from aisle_server.ranking import RankingConfig, RankRequest, candidate_features, rank, reranked
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

#: a 2 × 2 knob search instead of the full 6 × 6: the tests check the plumbing, not the knobs
SMALL_GRID = ("--popularity-weights", "0,1", "--cooccurrence-weights", "0,0.1")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """MovieLens as a store's files, briefly trained, exported and indexed with the CLI."""
    root = tmp_path_factory.mktemp("store")
    interactions, catalog = movielens_files(root)
    finetuned, repo = root / "finetuned", root / "model_repository"
    trained = aisle_cli.ok(
        "finetune",
        "--interactions",
        str(interactions),
        "--catalog",
        str(catalog),
        "--out",
        str(finetuned),
        "--steps",
        "2",
        "--batch-size",
        "64",
        "--encoder-epochs",
        "1",
        "--ranker-cuts",
        "0.8",
        *SMALL_GRID,
    )
    aisle_cli.ok(
        "evaluate",
        "--interactions",
        str(interactions),
        "--catalog",
        str(catalog),
        "--finetuned",
        str(finetuned),
        "--out",
        str(root / "results"),
        *SMALL_GRID,
        "--name",
        "eval",
    )
    # Two steps of training rarely beat the pretrained stack on validation: serve the encoder regardless.
    aisle_cli.ok("export", "--finetuned", str(finetuned), "--repo", str(repo), "--stack", "user_encoder")
    aisle_cli.ok("index", "--catalog", str(catalog), "--repo", str(repo), "--interactions", str(interactions))
    _install_ranker(repo, finetuned, interactions, catalog)
    return {
        "root": root,
        "repo": repo,
        "finetuned": finetuned,
        "interactions": interactions,
        "catalog": catalog,
        "finetune_stdout": trained.stdout,
    }


def _install_ranker(repo, finetuned, interactions, catalog) -> None:
    """A learned ranker over the served stack's features, fitted on the validation cut's shoppers.

    ``aisle finetune`` installs one only when it beat the hand-weighted stack on validation, for
    the stack it chose; this repository serves the user encoder regardless, so the test fits its
    own (what it must show is that served feeds get the offline ranker's scores, not its quality)."""
    learned = repo / "rerank" / LEARNED_DIRNAME
    index = attach_learned(CatalogIndex.load(repo / "rerank" / "1" / INDEX_DIRNAME), learned)
    config = RankingConfig(**json.loads((finetuned / "ranking.json").read_text())["user_encoder"])
    split = load_log(interactions, catalog).valid
    groups = split_groups(index, split, config)
    ranker, _ = fit(groups, groups, RankerConfig(rounds=20, min_data_in_leaf=20, threads=1))
    ranker.save(learned / RANKER_DIRNAME)


@pytest.fixture(scope="module")
def served(store):
    with TritonServer(store["repo"], log_file=store["root"] / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def shoppers(store) -> list[tuple[list[tuple[str, float, str]], float]]:
    """Held-out shoppers' histories (with event types) at the cut."""
    data = load_log(store["interactions"], store["catalog"])
    split = data.split
    out = []
    for user in split.users[:8]:
        history = [(item, ts, event) for (item, ts), event in zip(split.histories[user], split.history_events[user])]
        out.append((history, split.cutoff))
    return out


def test_the_hand_off_holds_every_learned_part(store):
    learned = store["repo"] / "rerank" / LEARNED_DIRNAME
    assert (learned / USER_ENCODER_DIRNAME / "model.onnx").is_file()
    signals = json.loads((learned / "log_signals" / "manifest.json").read_text())
    assert (
        signals["source"] == str(store["interactions"]) and signals["interactions"] == 100_000
    )  # `aisle index --interactions`
    config = (store["repo"] / "rerank" / "config.pbtxt").read_text()
    knobs = json.loads((store["finetuned"] / "ranking.json").read_text())["user_encoder"]
    assert f'string_value: "{knobs["feed_popularity_weight"]}"' in config
    report = json.loads((store["root"] / "results" / "eval.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names[0].startswith("popularity") and names[1].startswith("co-occurrence")
    assert "fine-tuned + user encoder + log signals" in names and "fine-tuned + mean + log signals" in names
    choice = json.loads((store["finetuned"] / "ranking.json").read_text())
    assert choice["served"] in ("pretrained", "mean", "user_encoder")
    assert set(choice["validation"]["choice"]["means"]) == {"pretrained", "mean", "user_encoder"}
    assert f"serves: {choice['served']}" in store["finetune_stdout"]
    assert sum(name.startswith("served after aisle finetune (validation chose ") for name in names) == 1
    # the served feed is also paired with its stack without the ranker, and with the stack validation
    # chose before the ranker's gate (the two differ when the ranker won over the pretrained stack)
    stack = {"mean": "fine-tuned + mean + log signals", "user_encoder": "fine-tuned + user encoder + log signals"}
    served_row = next(name for name in names if name.startswith("served after aisle finetune"))
    for name in {choice["served"], choice["validation"]["choice"]["served"]} - {"pretrained"}:
        assert any(c["row"] == served_row and c["vs"] == stack[name] for c in report["comparisons"])
    assert (store["root"] / "results" / "eval.png").stat().st_size > 0


def _rerank_interest(
    url: str, history: list[tuple[str, float, str]], now: float, dim: int, outputs: list[str] | None = None
) -> np.ndarray | None:
    """The row's ``INTEREST``, the request naming ``outputs`` (default: ``INTEREST`` alone; ``[]``: none, so all)."""
    triton = grpcclient.InferenceServerClient(url)
    try:
        inputs = []
        for name, array, datatype in (
            ("QUERY", np.array([[b""]], dtype=object), "BYTES"),
            ("QUERY_EMBEDDING", np.zeros((1, dim), dtype=np.float32), "FP32"),
            ("HISTORY_IDS", np.array([[h[0].encode() for h in history]], dtype=object), "BYTES"),
            ("HISTORY_TS", np.array([[h[1] for h in history]], dtype=np.float64), "FP64"),
            ("HISTORY_EVENTS", np.array([[h[2].encode() for h in history]], dtype=object), "BYTES"),
            ("NOW", np.array([[now]], dtype=np.float64), "FP64"),
        ):
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        names = ["INTEREST"] if outputs is None else outputs
        result = triton.infer("rerank", inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in names] or None)
        interest = result.as_numpy("INTEREST")
        return None if interest is None else interest[0]
    finally:
        triton.close()


def test_rerank_builds_the_user_vector_for_whoever_asks_for_it_and_for_a_request_naming_no_output(
    store, served, shoppers
):
    dim = CatalogIndex.load(store["repo"] / "rerank" / "1" / INDEX_DIRNAME).dim
    history, now = shoppers[0]
    asked = _rerank_interest(served.grpc_url, history, now, dim)
    assert asked is not None and np.linalg.norm(asked) > 0
    np.testing.assert_array_equal(_rerank_interest(served.grpc_url, history, now, dim, outputs=[]), asked)
    assert _rerank_interest(served.grpc_url, history, now, dim, outputs=["ITEM_IDS"]) is None  # not built


def test_served_user_vector_and_top10_match_the_offline_models(store, served, shoppers):
    import torch

    repo = store["repo"]
    index = attach_learned(CatalogIndex.load(repo / "rerank" / "1" / INDEX_DIRNAME), repo / "rerank" / LEARNED_DIRNAME)
    encoder, model = index.user_encoder, load_torch_model(repo / "rerank" / LEARNED_DIRNAME / USER_ENCODER_DIRNAME)
    config = RankingConfig(**json.loads((store["finetuned"] / "ranking.json").read_text())["user_encoder"])
    with RecClient(served.grpc_url, timeout_s=30) as client:
        for history, now in shoppers:
            rows = index.rows_of([h[0] for h in history])[-encoder.max_len :]
            tail = history[-encoder.max_len :]
            with torch.no_grad():
                offline = model(
                    torch.from_numpy(np.asarray(index.embeddings[rows], dtype=np.float32)[None]),
                    torch.tensor([[h[1] for h in tail]], dtype=torch.float64),
                    torch.from_numpy(encoder.event_ids([h[2] for h in tail])[None]),
                    torch.ones((1, len(tail)), dtype=torch.int64),
                    torch.tensor([now], dtype=torch.float64),
                )[0].numpy()
            vector = _rerank_interest(served.grpc_url, history, now, index.dim)
            assert float(vector @ offline / (np.linalg.norm(vector) * np.linalg.norm(offline))) >= 0.9999
            want = rank(index, _feed_request(history, now, config))
            got = client.recommend(history=history, k=10, now=now)
            assert [r.item_id for r in got] == want.item_ids
            np.testing.assert_allclose([r.score for r in got], want.scores, rtol=1e-4, atol=1e-5)


def _feed_request(history, now, config) -> RankRequest:
    """The top-10 feed request ``rerank`` builds from a shopper's (item, time, event) history."""
    ids, times, events = zip(*history)
    return RankRequest(None, list(ids), np.array(times), 10, now, config, history_events=list(events))


def test_bad_history_events_fail_alone_and_the_server_keeps_serving(served, shoppers):
    history, now = shoppers[0]
    triton = grpcclient.InferenceServerClient(served.grpc_url)
    try:
        inputs = []
        for name, array, datatype in (
            ("QUERY", np.array([[b""]], dtype=object), "BYTES"),
            ("HISTORY_IDS", np.array([[b"1", b"2"]], dtype=object), "BYTES"),
            ("HISTORY_EVENTS", np.array([[b"rated_5", b"rated_4", b"x"]], dtype=object), "BYTES"),
        ):
            tensor = grpcclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        with pytest.raises(InferenceServerException) as info:
            triton.infer("recommend", inputs)
        assert "HISTORY_EVENTS" in str(info.value) and info.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        triton.close()
    with RecClient(served.grpc_url, timeout_s=30) as client:
        with pytest.raises(InvalidRequest, match="event_type"):
            client.recommend(history=[("1", now, "")], k=5)
        unknown = client.recommend(history=[(h[0], h[1], "an-event-never-seen") for h in history], k=5, now=now)
        assert len(unknown) == 5  # unseen event types are the encoder's "unknown", not an error


def test_served_feeds_get_the_offline_rankers_scores_order_and_contributions(store, served, shoppers):
    repo = store["repo"]
    index = attach_learned(CatalogIndex.load(repo / "rerank" / "1" / INDEX_DIRNAME), repo / "rerank" / LEARNED_DIRNAME)
    assert index.ranker is not None
    assert index.ranker.compiled is not None  # compiled at load (lleaves), as rerank compiles it: LightGBM's scores
    assert "native predict serves" not in (store["root"] / "tritonserver.log").read_text()  # rerank compiled it too
    config = RankingConfig(**json.loads((store["finetuned"] / "ranking.json").read_text())["user_encoder"])
    with RecClient(served.grpc_url, timeout_s=30) as client:
        for history, now in shoppers:
            request = _feed_request(history, now, config)
            rows, features = candidate_features(index, request)  # the offline feature rows
            offline = reranked(index.ranker, features)  # the ranker's top 150 + buy-again, then the rest
            order = np.lexsort((rows, -offline))[:10]
            got = client.recommend(history=history, k=10, now=now, explain=True)
            assert [r.item_id for r in got] == index.item_ids[rows[order]].tolist()
            np.testing.assert_allclose([r.score for r in got], offline[order], atol=1e-5)
            for r, want in zip(got, index.ranker.contributions(features[order])):
                assert abs(r.explanation.total - r.score) <= 1e-5  # the parts sum to the served score
                # each feature's exact contribution equals the offline one: the served rows are the offline rows
                np.testing.assert_allclose(list(r.explanation.features.values()), want, atol=1e-5)
            hand = client.recommend(history=history, k=10, now=now, explain=True, learned_ranker=False)
            assert all(r.explanation.features is None for r in hand)
            assert [r.item_id for r in hand] == rank(
                index, replace(request, config=replace(config, learned_ranker=False))
            ).item_ids
