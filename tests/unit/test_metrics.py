"""Ranking metrics: against ranx (a maintained IR-metrics library) and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aisle_export.judge import metrics


def test_recall_and_ndcg_hand_computed() -> None:
    ranked = ["a", "b", "c", "d"]
    relevant = {"b", "d", "z"}
    assert metrics.recall_at_k(ranked, relevant, 2) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(ranked, relevant, 4) == pytest.approx(2 / 3)
    # hits at ranks 2 and 4; ideal: 3 relevant in the first 3 ranks
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg_at_k(ranked, relevant, 4) == pytest.approx(dcg / ideal)
    # the ideal is capped at k: one relevant item at rank 1 of a k=1 list is perfect
    assert metrics.ndcg_at_k(["b"], relevant, 1) == pytest.approx(1.0)
    assert metrics.ndcg_at_k(ranked, set(), 10) == 0.0
    assert metrics.recall_at_k(ranked, set(), 10) == 0.0


def test_recall_and_ndcg_match_ranx() -> None:
    import ranx  # the dev extra installs it

    rng = np.random.default_rng(7)
    catalog = [f"i{j}" for j in range(60)]
    qrels, run, ours = {}, {}, {"recall@10": [], "recall@50": [], "ndcg@10": [], "hit_rate@20": [], "mrr@50": []}
    for q in range(40):
        relevant = set(rng.choice(catalog, size=int(rng.integers(1, 12)), replace=False).tolist())
        ranked = rng.permutation(catalog).tolist()[:50]
        qrels[f"q{q}"] = dict.fromkeys(relevant, 1)
        run[f"q{q}"] = {item: float(50 - r) for r, item in enumerate(ranked)}
        ours["recall@10"].append(metrics.recall_at_k(ranked, relevant, 10))
        ours["recall@50"].append(metrics.recall_at_k(ranked, relevant, 50))
        ours["ndcg@10"].append(metrics.ndcg_at_k(ranked, relevant, 10))
        ours["hit_rate@20"].append(metrics.hit_rate_at_k(ranked, relevant, 20))
        ours["mrr@50"].append(metrics.reciprocal_rank(ranked, relevant, 50))
    theirs = ranx.evaluate(
        ranx.Qrels(qrels), ranx.Run(run), ["recall@10", "recall@50", "ndcg@10", "hit_rate@20", "mrr@50"]
    )
    for name, values in ours.items():
        assert np.mean(values) == pytest.approx(theirs[name], abs=1e-9), name


def test_hit_rate_and_reciprocal_rank_hand_computed() -> None:
    ranked = ["a", "b", "c", "d"]
    assert metrics.hit_rate_at_k(ranked, {"c"}, 2) == 0.0 and metrics.hit_rate_at_k(ranked, {"c"}, 3) == 1.0
    assert metrics.reciprocal_rank(ranked, {"c", "d"}) == pytest.approx(1 / 3)
    assert metrics.reciprocal_rank(ranked, {"d"}, 3) == 0.0 and metrics.reciprocal_rank(ranked, set()) == 0.0


def test_intra_list_diversity() -> None:
    assert metrics.intra_list_diversity(np.eye(4)) == pytest.approx(1.0)
    assert metrics.intra_list_diversity(np.ones((3, 5))) == pytest.approx(0.0)
    # pairs: cos(a,b)=0, cos(a,c)=cos(b,c)=1/sqrt(2) → 1 − (0 + 2/sqrt(2)) / 3
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # unnormalized on purpose
    assert metrics.intra_list_diversity(vectors) == pytest.approx(1 - (2 / math.sqrt(2)) / 3)
    assert metrics.intra_list_diversity(np.ones((1, 3))) == 0.0


def test_category_coverage_and_novelty() -> None:
    assert metrics.category_coverage([("Action", "Drama"), ("Drama",), ()], 4) == pytest.approx(0.5)
    counts = {"hit": 99, "niche": 0}
    # p(hit) = 100/100 → 0 bits; p(niche) = 1/100 → log2(100) bits
    assert metrics.novelty(["hit"], counts, 99) == pytest.approx(0.0)
    assert metrics.novelty(["niche", "unknown"], counts, 99) == pytest.approx(math.log2(100))
    assert metrics.novelty(["hit", "niche"], counts, 99) == pytest.approx(math.log2(100) / 2)
    with pytest.raises(ValueError):
        metrics.category_coverage([], 0)


def test_percentile_ms() -> None:
    assert metrics.percentile_ms([0.001, 0.002, 0.003], 50) == pytest.approx(2.0)
