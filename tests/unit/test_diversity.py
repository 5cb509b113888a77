"""MMR and greedy DPP checked against brute-force re-implementations on small random cases."""

import numpy as np
import pytest

from aisle_server.diversity import by_relevance, diversify, dpp, mmr


def case(seed, n=9, d=5):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return rng.uniform(0.2, 0.9, size=n), emb


def scaled(rel):
    return (rel - rel.min()) / (rel.max() - rel.min())


def brute_mmr(rel, emb, k, lam):
    sim, r, picked = emb @ emb.T, scaled(rel), []
    while len(picked) < k:
        best, best_gain = None, -np.inf
        for i in range(len(rel)):
            if i in picked:
                continue
            gain = (1 - lam) * r[i] - lam * (max(sim[i, j] for j in picked) if picked else 0.0)
            if gain > best_gain:
                best, best_gain = i, gain
        picked.append(best)
    return picked


def brute_dpp(rel, emb, k, diversity):
    theta = 1 - diversity
    alpha = theta / (2 * (1 - theta))
    q = np.exp(alpha * (scaled(rel) - 1))
    kernel = q[:, None] * (emb @ emb.T) * q[None, :]
    picked = []
    while len(picked) < k:
        scores = {
            i: np.linalg.slogdet(kernel[np.ix_([*picked, i], [*picked, i])])[1]
            for i in range(len(rel))
            if i not in picked
        }
        picked.append(max(scores, key=scores.get))
    return picked


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lam", [0.1, 0.5, 0.9])
def test_mmr_matches_brute_force(seed, lam):
    rel, emb = case(seed)
    assert mmr(rel, emb, 6, lam) == brute_mmr(rel, emb, 6, lam)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("diversity", [0.2, 0.5, 0.8, 0.95])  # at 1.0 every first pick ties
def test_dpp_matches_brute_force_greedy_log_det(seed, diversity):
    rel, emb = case(seed)
    k = 5  # <= embedding rank, so the kernel is never exhausted
    assert dpp(rel, emb, k, diversity) == brute_dpp(rel, emb, k, diversity)


def test_zero_diversity_is_pure_relevance_for_every_method():
    rel, emb = case(1)
    expected = list(np.argsort(-rel, kind="stable")[:5])
    for method in ("mmr", "dpp"):
        assert diversify(method, rel, emb, 5, 0.0) == expected


def test_dpp_fills_k_past_the_kernel_rank():
    rel, emb = case(2, n=12, d=3)  # rank 3 kernel, ask for 8
    picked = dpp(rel, emb, 8, 0.9)
    assert len(picked) == 8 == len(set(picked))


def test_more_diversity_lowers_mean_pairwise_similarity():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16))
    emb = np.repeat(centers, 25, axis=0) + 0.1 * rng.normal(size=(100, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rel = emb @ (centers[0] / np.linalg.norm(centers[0]))

    def mean_sim(rows):
        s = emb[rows] @ emb[rows].T
        return (s.sum() - len(rows)) / (len(rows) * (len(rows) - 1))

    for method in ("mmr", "dpp"):
        sims = [mean_sim(diversify(method, rel, emb, 10, d)) for d in (0.0, 0.5, 0.9)]
        assert sims[0] > sims[1] > sims[2], (method, sims)


def test_category_cap_with_pure_relevance():
    rel = np.array([0.9, 0.8, 0.7, 0.6])
    cats = np.array(["a", "a", "a", "b"])
    assert by_relevance(rel, 3, cats, category_cap=2) == [0, 1, 3]


def test_unknown_method_is_an_error():
    rel, emb = case(0)
    with pytest.raises(ValueError, match="unknown diversity method"):
        diversify("random", rel, emb, 3, 0.5)
