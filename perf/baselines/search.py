"""What the baselines serve: the same query tower, catalog and ``recommend`` semantics for a search.

``SearchModel(repo)`` loads the query tower with sentence-transformers on PyTorch (CPU) — the
all-MiniLM-L6-v2 directory that ``aisle export`` exported (``aisle_export.core.towers``) — and the item
embeddings and ids of ``<repo>/rerank/1/index/`` (the very vectors Aisle's ``rerank`` searches).
``search(query, k)`` encodes the query (L2-normalized), scores every item by inner product and
returns the ``k`` best ids and scores with ``np.argpartition`` + a sort of the ``k``.

It is dense search only: no BM25 half, no freshness/popularity terms, no filters — less work per
request than Aisle's ``rerank``, so the comparison does not favour Aisle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aisle_server.index import ITEMS_DIRNAME


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores``, best first (ties: lower index first)."""
    k = max(0, min(int(k), len(scores)))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = np.lexsort((part, -scores[part]))
    return part[order]


class SearchModel:
    def __init__(self, repo: Path, tower: Path | None = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        from aisle_export.core.towers import default_tower_path

        index_dir = Path(repo) / "rerank" / "1" / "index"
        self.embeddings = np.load(index_dir / "embeddings.npy")
        self.item_ids = np.load(index_dir / ITEMS_DIRNAME / "item_ids.npy", allow_pickle=False).astype(str)
        self.model = SentenceTransformer(str(tower or default_tower_path()), device=device)

    def encode(self, query: str) -> np.ndarray:
        return self.model.encode([query], normalize_embeddings=True, convert_to_numpy=True)[0].astype(np.float32)

    def search(self, query: str, k: int = 10) -> tuple[list[str], list[float]]:
        scores = self.embeddings @ self.encode(query)
        best = top_k(scores, k)
        return self.item_ids[best].tolist(), scores[best].astype(float).tolist()
