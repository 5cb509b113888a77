"""A small synthetic served index for ranking and explanation tests: random unit vectors, a BM25
index over "red shoe"/"blue hat" titles, and a few co-occurrence neighbour lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from aisle_server.cooccurrence import Cooccurrence
from aisle_server.index import CatalogIndex
from aisle_server.lexical import LexicalIndex


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def tiny_index(
    n: int,
    dim: int,
    seed: int,
    created_at: np.ndarray,
    max_popularity: int,
    red_every: int,
    neighbors: Mapping[int, tuple[Sequence[int], Sequence[float]]],
) -> CatalogIndex:
    """``n`` items of ``dim``-d vectors; every ``red_every``-th title is a red shoe, the rest blue hats;
    ``neighbors``: row → (its co-occurrence neighbour rows, their weights)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = CatalogIndex(
        item_ids=np.array([f"i{r}" for r in range(n)]),
        embeddings=vectors,
        titles=np.array([f"title {r}" for r in range(n)]),
        categories=np.array([f"c{r % 3}" for r in range(n)]),
        created_at=created_at,
        popularity=rng.integers(0, max_popularity, size=n).astype(np.float32),
        in_stock=np.ones(n, dtype=bool),
    )
    lexical = LexicalIndex.build([f"red shoe {r}" if r % red_every == 0 else f"blue hat {r}" for r in range(n)])
    width = max(len(rows) for rows, _ in neighbors.values())
    table = np.full((n, width), -1, dtype=np.int32)
    weights = np.zeros((n, width), dtype=np.float32)
    for row, (rows, values) in neighbors.items():
        table[row, : len(rows)], weights[row, : len(values)] = rows, values
    return replace(index, lexical=lexical, cooccurrence=Cooccurrence(table, weights))
