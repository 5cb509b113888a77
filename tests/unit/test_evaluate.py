"""The evaluation loop: rank() is scored against held-out targets as intended (synthetic data)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from aisle_contract import RankingConfig
from aisle_export.data.catalog import Catalog
from aisle_export.data.movielens import Interactions
from aisle_export.data.splits import TemporalSplit
from aisle_export.judge import content_study as evaluate

N_ITEMS, DIM = 40, 8


@pytest.fixture()
def world() -> tuple[Catalog, np.ndarray, TemporalSplit, evaluate.Reference]:
    rng = np.random.default_rng(0)
    ids = np.array([f"i{j}" for j in range(N_ITEMS)])
    catalog = Catalog(
        item_ids=ids,
        titles=ids,
        descriptions=np.array(["Drama, Comedy" if j % 2 else "Action" for j in range(N_ITEMS)]),
        categories=np.array(["Drama" if j % 2 else "Action" for j in range(N_ITEMS)]),
        created_at=np.full(N_ITEMS, np.nan),
        popularity=np.arange(N_ITEMS, dtype=np.float32),
        in_stock=np.ones(N_ITEMS, dtype=bool),
    )
    embeddings = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    train = Interactions(
        np.array(["u", "u", "v"]), np.array(["i0", "i1", "i39"]), np.ones(3, np.float32), np.array([1.0, 2.0, 3.0])
    )
    split = TemporalSplit(
        cutoff=10.0,
        train=train,
        histories={"u": [("i0", 1.0), ("i1", 2.0)], "v": [("i39", 3.0)]},
        targets={"u": ["i5", "i6"], "v": ["i38"]},
    )
    return catalog, embeddings, split, evaluate.Reference.build(catalog, embeddings, split)


def test_popularity_baseline_ranks_by_training_popularity_without_history(world) -> None:
    catalog, embeddings, split, reference = world
    index = evaluate.build_index(catalog, embeddings)
    setting = evaluate.Setting("pop", "pretrained", RankingConfig(), popularity_only=True)
    result = evaluate.evaluate_setting(index, split, setting, reference)
    # v's history is i39 (the most popular); excluded, so i38 (next most popular) is its top-1: nDCG 1
    assert result["per_user"]["ndcg@10"][1] == pytest.approx(1.0)
    assert result["per_user"]["recall@10"][0] == 0.0  # u's targets i5, i6 are far down the popularity list
    assert result["rank_p50_ms"] > 0


def test_oracle_embeddings_find_the_targets(world) -> None:
    catalog, embeddings, split, reference = world
    # Put each user's targets right on top of their history: the feed must rank them first.
    oracle = embeddings.copy()
    oracle[[5, 6]] = oracle[0] + oracle[1]
    oracle[38] = oracle[39]
    oracle /= np.linalg.norm(oracle, axis=1, keepdims=True)
    setting = evaluate.Setting(
        "oracle", "pretrained", replace(evaluate.CONTENT_ONLY, recency_half_life_s=evaluate.NO_RECENCY)
    )
    result = evaluate.evaluate_setting(evaluate.build_index(catalog, oracle), split, setting, reference)
    assert result["recall@10"] == pytest.approx(1.0)
    assert result["ndcg@10"] == pytest.approx(1.0)
    random = evaluate.evaluate_setting(evaluate.build_index(catalog, embeddings), split, setting, reference)
    assert random["ndcg@10"] < 1.0
    assert 0.0 < result["genre_coverage@10"] <= 1.0 and reference.n_genres == 3


def test_tradeoff_finding_picks_the_most_diverse_setting_within_95_percent() -> None:
    base = {"ndcg@10": 0.2, "ild@10": 0.5}
    sweeps = {
        "dpp": {
            0.0: base,
            0.3: {"ndcg@10": 0.195, "ild@10": 0.55},
            0.6: {"ndcg@10": 0.19, "ild@10": 0.62},
            0.9: {"ndcg@10": 0.1, "ild@10": 0.9},
        }
    }
    finding = evaluate._tradeoff_finding(sweeps, base)["dpp"]
    assert finding["diversity"] == 0.6
    assert finding["ild_gain"] == pytest.approx(0.24)
    assert finding["meets_target"]


def test_bootstrap_delta_is_paired() -> None:
    a = np.linspace(0, 1, 50)
    delta = evaluate.bootstrap_delta(a, a + 0.1)
    assert delta["delta"] == pytest.approx(0.1)
    assert delta["ci95"][0] == pytest.approx(0.1) and delta["ci95"][1] == pytest.approx(0.1)


def test_a_clustered_bootstrap_resamples_whole_shoppers_so_repeated_pairs_do_not_narrow_the_interval() -> None:
    diff = np.random.default_rng(0).standard_normal(100)
    once = evaluate.bootstrap_delta(np.zeros(100), diff, clusters=np.arange(100))
    assert once == evaluate.bootstrap_delta(np.zeros(100), diff)  # one pair per shopper: the plain bootstrap
    named = [f"u{(37 * i) % 100}" for i in range(100)]  # whatever the keys' sort order
    assert evaluate.bootstrap_delta(np.zeros(100), diff, clusters=named) == once
    # every shopper judged at five cuts with the same difference: 500 pairs, still 100 shoppers' worth
    five = np.repeat(diff, 5)
    pooled = evaluate.bootstrap_delta(np.zeros(500), five, clusters=np.repeat(np.arange(100), 5))
    naive = evaluate.bootstrap_delta(np.zeros(500), five)
    width = lambda d: d["ci95"][1] - d["ci95"][0]
    assert pooled["delta"] == pytest.approx(once["delta"])
    assert width(pooled) == pytest.approx(width(once), rel=0.15) and width(naive) < 0.6 * width(once)
    with pytest.raises(ValueError, match="clusters"):
        evaluate.bootstrap_delta([0.0, 1.0], [1.0, 1.0], clusters=["a"])


def test_diversity_latency_reports_both_methods() -> None:
    result = evaluate.diversity_latency(n=200, k=5, dim=16, repeats=5)
    assert set(result) >= {"mmr", "dpp"} and result["dpp"]["p50_ms"] > 0
