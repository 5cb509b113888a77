"""Approximate inner-product retrieval with faiss for catalogs too large to scan per request.

Exact search is one matrix-vector product: below ``EXACT_MAX_ITEMS`` it is both faster and exact,
so ``aisle index`` only builds an ANN index above that size. Above it, an inverted-file index
(IVF, inner product) scans ``nprobe`` of ``nlist`` clusters: the recall/latency dial is
``nprobe``. Saved with ``faiss.write_index`` (faiss's own binary format, no pickle) plus
``ann.json`` (kind, nprobe, refine).

Two kinds:

- ``ivf_flat`` (default): full float32 vectors in the lists, exact scores within the probed lists.
  RAM ≈ N·d·4 bytes (1.5 GB per million 384-d items) — fine up to a few million items.
- ``ivf_pq``: product-quantized lists (``pq_m`` bytes per item, 48 for 384-d), for catalogs of
  10M+ items: RAM ≈ N·(pq_m + 8) bytes (≈ 0.56 GB for 10M). PQ scores are approximate, so the
  search asks faiss for ``refine``·n candidates and re-scores them exactly against the
  memory-mapped ``embeddings.npy`` beside the index (only the touched rows are read).

Both kinds build from an in-memory array or a memory-mapped ``.npy`` alike: training uses a
sample, and vectors are added in chunks, so building never holds more than one chunk in float32.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

EXACT_MAX_ITEMS = 100_000
ANN_FILE = "ann.faiss"
ANN_META = "ann.json"
EMBEDDINGS_FILE = "embeddings.npy"  # written by aisle_server.index beside the ANN index
KINDS = ("ivf_flat", "ivf_pq")
#: IVF-PQ: cap on the number of lists. Assigning N vectors costs N·nlist·d; past a few thousand
#: lists the build time grows faster than the probe savings on a CPU build host.
PQ_MAX_NLIST = 4096
#: IVF-PQ: exact re-scoring of ``refine``·n PQ candidates. PQ's approximate ranking, not the
#: probing, is what loses neighbours: in the sweep recall rises with ``refine`` and stays flat in
#: ``nprobe``. 16 wins back nearly all of what PQ loses at 10M synthetic items, and each doubling
#: doubles the rows re-scored from the memory-mapped vectors. Figures: perf/results/index_scale.md
#: (``python -m perf.bench_index_scale``) and docs/results.md ("Design measurements behind code decisions").
DEFAULT_REFINE = 16
ADD_CHUNK = 262_144


#: IVF-PQ trains 256 centroids per sub-quantizer (8-bit codes): fewer items cannot train it.
PQ_MIN_ITEMS = 256


def default_nlist(n: int, kind: str = "ivf_flat") -> int:
    nlist = min(max(1, int(4 * math.sqrt(n))), max(1, n))  # k-means needs an item per list
    return min(nlist, PQ_MAX_NLIST) if kind == "ivf_pq" else nlist


def default_pq_m(dim: int) -> int:
    """Sub-quantizers for IVF-PQ: one per 8 dimensions (48 for 384-d), a divisor of ``dim``."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


class AnnIndex:
    def __init__(
        self, index: object, nprobe: int, kind: str = "ivf_flat", refine: int = 0, vectors: np.ndarray | None = None
    ):
        import faiss

        if kind not in KINDS:
            raise ValueError(f"unknown ANN kind {kind!r}; expected one of {KINDS}")
        self.index = index
        self.nprobe = nprobe
        self.kind = kind
        self.refine = int(refine)
        #: float32 (N, d) rows for exact re-scoring of PQ candidates (memory-mapped when loaded)
        self.vectors = vectors
        faiss.extract_index_ivf(index).nprobe = nprobe

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        nlist: int | None = None,
        nprobe: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
        kind: str = "ivf_flat",
        pq_m: int | None = None,
        refine: int | None = None,
        progress: bool = False,
    ) -> AnnIndex:
        """IVF over inner product; ``nlist`` ≈ 4·√N clusters (IVF-PQ: at most ``PQ_MAX_NLIST``)
        trained on a sample (IVF-Flat: 100,000 rows; IVF-PQ: at least 40 per list, as faiss asks).
        ``embeddings`` may be a memory-mapped array: it is read in chunks."""
        import faiss

        if kind not in KINDS:
            raise ValueError(f"unknown ANN kind {kind!r}; expected one of {KINDS}")
        n, dim = embeddings.shape
        nlist = nlist or default_nlist(n, kind)
        if not 1 <= nlist <= n:
            raise ValueError(f"an IVF index of {nlist} lists needs at least as many items; the catalog has {n}")
        if kind == "ivf_pq" and n < PQ_MIN_ITEMS:
            raise ValueError(
                f"ivf_pq needs at least {PQ_MIN_ITEMS} items to train its codebooks; the catalog has "
                f"{n}: use ivf_flat (or no ANN index: exact search is faster at this size)"
            )
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m or default_pq_m(dim), 8, faiss.METRIC_INNER_PRODUCT)
        train_size = train_size or (100_000 if kind == "ivf_flat" else max(100_000, 40 * nlist))
        picks = np.sort(np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False))
        index.train(np.ascontiguousarray(embeddings[picks], dtype=np.float32))
        for start in range(0, n, ADD_CHUNK):
            index.add(np.ascontiguousarray(embeddings[start : start + ADD_CHUNK], dtype=np.float32))
            if progress:
                print(f"  ann: added {min(n, start + ADD_CHUNK):,}/{n:,}", flush=True)
        if refine is None:
            refine = DEFAULT_REFINE if kind == "ivf_pq" else 0
        nprobe = min(nprobe or max(1, nlist // 32), nlist)
        return cls(index, nprobe, kind, refine, embeddings if refine else None)

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(Path(directory) / ANN_FILE))
        meta = {"nprobe": self.nprobe, "kind": self.kind, "refine": self.refine}
        (Path(directory) / ANN_META).write_text(json.dumps(meta, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path, vectors: np.ndarray | None = None) -> AnnIndex | None:
        """``vectors``: the index's ``embeddings.npy`` when the caller has it mapped already (one
        mapping, so its pages are counted once); else it is mapped here when re-scoring needs it."""
        import faiss

        directory = Path(directory)
        path = directory / ANN_FILE
        if not path.exists():
            return None
        meta = json.loads((directory / ANN_META).read_text())
        kind, refine = meta.get("kind", "ivf_flat"), int(meta.get("refine", 0))
        if not refine:
            vectors = None
        elif vectors is None and (directory / EMBEDDINGS_FILE).exists():
            vectors = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
        return cls(faiss.read_index(str(path)), meta["nprobe"], kind, refine if vectors is not None else 0, vectors)

    @property
    def nbytes(self) -> int:
        """Bytes of the faiss index in memory (codes, ids, centroids; not the mapped vectors)."""
        import faiss

        return int(faiss.serialize_index(self.index).size)

    def search(self, vector: np.ndarray, n: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """Rows of (about) the ``n`` best items by inner product, best first; fewer if clusters are
        small or ``allowed`` (a boolean mask over the catalog) rules many out.

        IVF-PQ drops the disallowed PQ candidates *before* re-scoring, so the exact (memory-bound)
        step reads only rows that can be returned; IVF-Flat asks faiss for ``2·n`` when filtering.
        """
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        refining = bool(self.refine) and self.vectors is not None
        wanted = n * self.refine if refining else (2 * n if allowed is not None else n)
        _, rows = self.index.search(query, wanted)
        rows = rows[0]
        rows = rows[rows >= 0]
        if allowed is not None:
            rows = rows[allowed[rows]]
        if not refining or len(rows) == 0:
            return rows[:n]
        rows = np.sort(rows)  # ascending rows: sequential-ish reads from the mapped file
        scores = np.asarray(self.vectors[rows], dtype=np.float32) @ query[0]
        keep = min(n, len(rows))
        best = np.argpartition(-scores, keep - 1)[:keep]
        return rows[best[np.argsort(-scores[best], kind="stable")]]
