"""Offline ranking metrics for one recommendation list at a time (averaged by the caller).

Relevance is binary (the user interacted with the item in the test period). Recall and nDCG follow
the standard definitions used by ranx and trec_eval (``tests/unit/test_metrics.py`` checks them
against ranx); the beyond-accuracy metrics follow Ziegler et al. 2005 (intra-list diversity) and
Zhou et al. 2010 (novelty as self-information).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def recall_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """|top-k ∩ relevant| / |relevant| (0 when nothing is relevant)."""
    relevant = set(relevant)
    if not relevant:
        return 0.0
    return len(set(list(ranked)[:k]) & relevant) / len(relevant)


def ndcg_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Binary nDCG@k: Σ_hits 1/log2(rank+1) over the ideal Σ_{i ≤ min(k, |relevant|)} 1/log2(i+1)."""
    relevant = set(relevant)
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(list(ranked)[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return dcg / ideal


def hit_rate_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1 when any of the top ``k`` is relevant, else 0 (averaged over users: the share of users hit)."""
    relevant = set(relevant)
    return float(any(item in relevant for item in list(ranked)[:k]))


def reciprocal_rank(ranked: Sequence[str], relevant: Iterable[str], k: int | None = None) -> float:
    """1 / rank of the first relevant item within the top ``k`` (all of ``ranked`` when None), else 0."""
    relevant = set(relevant)
    for rank, item in enumerate(list(ranked)[:k]):
        if item in relevant:
            return 1.0 / (rank + 1)
    return 0.0


def intra_list_diversity(embeddings: np.ndarray) -> float:
    """1 − mean pairwise cosine similarity of the list's items (rows need not be normalized).

    0 for a list of identical items; about 1 for mutually orthogonal ones. Lists of fewer than two
    items have no pairs: 0.
    """
    vectors = np.asarray(embeddings, dtype=np.float64)
    n = len(vectors)
    if n < 2:
        return 0.0
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    sims = unit @ unit.T
    mean_pairwise = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(1.0 - mean_pairwise)


def category_coverage(item_categories: Sequence[Iterable[str]], n_categories: int) -> float:
    """Share of the catalog's ``n_categories`` that the list's items cover (an item may have several)."""
    if n_categories <= 0:
        raise ValueError("n_categories must be positive")
    covered = set()
    for categories in item_categories:
        covered.update(c for c in categories if c)
    return len(covered) / n_categories


def novelty(items: Sequence[str], interactions_per_item: Mapping[str, int], n_users: int) -> float:
    """Mean self-information −log2 p(i) of the list, p(i) = (users who had i + 1) / (users + 1).

    Higher means less popular, more surprising items. The +1 smoothing keeps items nobody
    interacted with in training finite (they get the maximum, log2(users + 1)).
    """
    if not items:
        return 0.0
    if n_users <= 0:
        raise ValueError("n_users must be positive")
    return float(np.mean([-math.log2((interactions_per_item.get(item, 0) + 1) / (n_users + 1)) for item in items]))


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds, dtype=np.float64) * 1000.0, q))
