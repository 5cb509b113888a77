"""Approximate inner-product retrieval with faiss for catalogs too large to scan per request.

Exact search is one matrix-vector product: below ``EXACT_MAX_ITEMS`` it is both faster and exact,
so ``aisle index`` only builds an ANN index above that size. Above it, an inverted-file index
(IVF, inner product) scans ``nprobe`` of ``nlist`` clusters: the recall/latency dial is
``nprobe``. Saved with ``faiss.write_index`` (faiss's own binary format, no pickle).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

EXACT_MAX_ITEMS = 100_000
ANN_FILE = "ann.faiss"


class AnnIndex:
    def __init__(self, index: object, nprobe: int):
        import faiss  # noqa: PLC0415

        self.index = index
        self.nprobe = nprobe
        faiss.extract_index_ivf(index).nprobe = nprobe

    @classmethod
    def build(cls, embeddings: np.ndarray, nlist: int | None = None, nprobe: int | None = None,
              train_size: int = 100_000, seed: int = 0) -> "AnnIndex":
        """IVF-Flat over inner product; ``nlist`` ≈ 4·√N clusters trained on a sample."""
        import faiss  # noqa: PLC0415

        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, dim = vectors.shape
        nlist = nlist or max(1, int(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False)]
        index.train(sample)
        index.add(vectors)
        return cls(index, nprobe or max(1, nlist // 32))

    def save(self, directory: Path) -> None:
        import faiss  # noqa: PLC0415

        faiss.write_index(self.index, str(Path(directory) / ANN_FILE))
        (Path(directory) / "ann.json").write_text(f'{{"nprobe": {self.nprobe}}}\n')

    @classmethod
    def load(cls, directory: Path) -> "AnnIndex | None":
        import json  # noqa: PLC0415

        import faiss  # noqa: PLC0415

        path = Path(directory) / ANN_FILE
        if not path.exists():
            return None
        nprobe = json.loads((Path(directory) / "ann.json").read_text())["nprobe"]
        return cls(faiss.read_index(str(path)), nprobe)

    def search(self, vector: np.ndarray, n: int) -> np.ndarray:
        """Rows of (about) the ``n`` best items by inner product, best first; fewer if clusters are small."""
        _, rows = self.index.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), n)
        rows = rows[0]
        return rows[rows >= 0]
