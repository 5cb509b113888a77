"""Pick ``k`` of ``n`` ranked candidates, trading relevance for variety: MMR and greedy DPP MAP.

Both work on L2-normalized candidate embeddings, so item-item similarity is a dot product, and both
compute one similarity row per pick (``k`` matrix-vector products, never the ``n × n`` matrix):
ranking 1000 candidates down to 10 is a few hundred microseconds.

``diversity`` in [0, 1] is the per-request strength: 0 is pure relevance (no re-ordering), 1 ignores
relevance. Relevance is min-max scaled over the candidates first, so the same ``diversity`` means
the same trade-off whether a query's cosines spread over 0.2 or over 0.02.

An optional ``category_cap`` limits how many results share one category, for every method.

- MMR (Carbonell & Goldstein, 1998): next = argmax (1 − d)·rel_i − d·max_{j picked} sim(i, j).
- DPP (Chen, Zhang & Zhou, NeurIPS 2018, Algorithm 1): greedy MAP inference for the kernel
  L = diag(q)·S·diag(q) with quality q_i = exp(α·rel_i), α = θ / (2(1 − θ)), θ = 1 − d, maintaining
  the incremental Cholesky factors so each step costs O(n·t).
"""

from __future__ import annotations

import numpy as np

from aisle_contract import DIVERSITY_METHODS as METHODS

_EPS = 1e-10


def _scaled(relevance: np.ndarray) -> np.ndarray:
    low, high = float(relevance.min()), float(relevance.max())
    return (relevance - low) / (high - low) if high > low else np.zeros_like(relevance)


class _CategoryCap:
    """Which candidates are still allowed once some categories have reached their cap."""

    def __init__(self, categories: np.ndarray | None, cap: int | None, n: int):
        self.active = cap is not None and cap > 0 and categories is not None
        self.cap = cap or 0
        self.categories = categories
        self.counts: dict[str, int] = {}
        self.allowed = np.ones(n, dtype=bool)

    def take(self, row: int) -> None:
        if not self.active:
            return
        category = self.categories[row]  # type: ignore[index]  # active ⇒ categories is set
        self.counts[category] = self.counts.get(category, 0) + 1
        if self.counts[category] >= self.cap:
            self.allowed &= self.categories != category  # type: ignore[operator]  # active ⇒ categories is set


def by_relevance(
    relevance: np.ndarray, k: int, categories: np.ndarray | None = None, category_cap: int | None = None
) -> list[int]:
    """Top ``k`` by relevance (stable: ties keep candidate order), honouring the category cap."""
    if categories is None or not category_cap:
        return [int(row) for row in np.argsort(-relevance, kind="stable")[:k]]
    cap = _CategoryCap(categories, category_cap, len(relevance))
    picked: list[int] = []
    for row in np.argsort(-relevance, kind="stable"):
        if len(picked) == k:
            break
        if cap.allowed[row]:
            picked.append(int(row))
            cap.take(int(row))
    return picked


def mmr(
    relevance: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    diversity: float,
    categories: np.ndarray | None = None,
    category_cap: int | None = None,
) -> list[int]:
    """Maximal marginal relevance; returns candidate positions in pick order."""
    n = len(relevance)
    k = min(k, n)
    rel = _scaled(np.asarray(relevance, dtype=np.float64))
    max_sim = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    cap = _CategoryCap(categories, category_cap, n)
    picked: list[int] = []
    while len(picked) < k:
        redundancy = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = (1.0 - diversity) * rel - diversity * redundancy
        gain[~(available & cap.allowed)] = -np.inf
        row = int(np.argmax(gain))
        if not np.isfinite(gain[row]):
            break
        picked.append(row)
        available[row] = False
        cap.take(row)
        max_sim = np.maximum(max_sim, embeddings @ embeddings[row])
    return picked


def dpp(
    relevance: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    diversity: float,
    categories: np.ndarray | None = None,
    category_cap: int | None = None,
) -> list[int]:
    """Fast greedy MAP inference of a DPP (Chen et al. 2018); candidate positions in pick order.

    When the kernel is exhausted (more picks than the embedding rank allows) the remaining slots
    are filled by relevance, so a request always gets ``min(k, n)`` items.
    """
    n = len(relevance)
    k = min(k, n)
    if diversity >= 1.0:
        alpha = 0.0
    else:
        theta = 1.0 - diversity
        alpha = theta / (2.0 * (1.0 - theta)) if theta < 1.0 else np.inf
    if not np.isfinite(alpha):
        return by_relevance(np.asarray(relevance), k, categories, category_cap)
    rel = _scaled(np.asarray(relevance, dtype=np.float64))
    quality = np.exp(alpha * (rel - 1.0))  # scaled so the best candidate has quality 1
    vectors = np.asarray(embeddings, dtype=np.float64)
    gains = quality**2 * np.einsum("ij,ij->i", vectors, vectors)  # diag(L)
    factors = np.zeros((k, n))
    cap = _CategoryCap(categories, category_cap, n)
    available = np.ones(n, dtype=bool)
    picked: list[int] = []
    while len(picked) < k:
        masked = np.where(available & cap.allowed, gains, -np.inf)
        row = int(np.argmax(masked))
        if masked[row] <= _EPS:
            break
        t = len(picked)
        picked.append(row)
        available[row] = False
        cap.take(row)
        if len(picked) == k:
            break
        kernel_row = quality[row] * quality * (vectors @ vectors[row])  # L[row, :]
        e = (kernel_row - factors[:t, row] @ factors[:t]) / np.sqrt(gains[row])
        factors[t] = e
        gains = gains - e**2
    for row in np.argsort(-np.asarray(relevance), kind="stable"):  # kernel exhausted: fill by relevance
        if len(picked) == k:
            break
        if available[row] and cap.allowed[row]:
            picked.append(int(row))
            available[row] = False
            cap.take(int(row))
    return picked


def diversify(
    method: str,
    relevance: np.ndarray,
    embeddings: np.ndarray,
    k: int,
    diversity: float,
    categories: np.ndarray | None = None,
    category_cap: int | None = None,
) -> list[int]:
    if diversity <= 0.0 or len(relevance) == 0:
        return by_relevance(np.asarray(relevance), k, categories, category_cap)
    if method == "mmr":
        return mmr(relevance, embeddings, k, diversity, categories, category_cap)
    if method == "dpp":
        return dpp(relevance, embeddings, k, diversity, categories, category_cap)
    raise ValueError(f"unknown diversity method {method!r}; expected one of {METHODS}")
