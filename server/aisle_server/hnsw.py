"""Dense candidates from an HNSW graph (faiss), so a request reads a few thousand vectors, not all.

The exact scan reads every embedding once per request: memory-bound, it grows with the catalog
(``perf.bench_rerank_profile`` found it owning most of ``rerank``'s time on BigBasket).
An HNSW graph walks from an entry point towards the query and touches about ``ef_search`` × M
vectors whatever the catalog's size. ``aisle index`` builds it (``--dense-engine``), beside
``embeddings.npy``, as ``hnsw.faiss`` (faiss's own format, no pickle) plus ``hnsw.json``.

Why these settings: the graph stores 8-bit scalar-quantized vectors (``sq8``: a quarter of
float32's bytes to read per hop), M = 32 links per node, and searches with ``ef_search`` = 300 —
the smallest breadth of ``perf.bench_rerank_engines``' served sweep whose candidate recall@200
against the exact scan, as ``ranking.dense_scored`` serves it (the graph's neighbours re-scored
exactly), stayed at or above 0.98 on the BigBasket catalog for both the proxy's real query vectors
and mixed-item vectors; a search's time grows with the breadth, not with the catalog (figures:
docs/results.md, "Candidates from top-k engines"). The quantized scores only choose candidates:
every candidate's cosine is computed again from the float32 embeddings (``scoring.cosine``), so the
page's scores are the exact scan's. An index keeps the breadth it was built with (``hnsw.json``).

Filters (out of stock, hidden, exclusions, categories) are applied by over-fetching: a search
returns ``max(ef_search, n)`` neighbours for the cost of ``ef_search``, the disallowed ones are
dropped, and if fewer than ``n`` are left the search is repeated four times wider; past
:data:`MAX_FETCH_FACTOR` × ``n`` the caller falls back to the exact scan of the allowed rows
(correctness over speed for a filter that rules out nearly everything).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HNSW_FILE = "hnsw.faiss"
HNSW_META = "hnsw.json"
STORAGES = ("sq8", "fp16", "flat")
DEFAULT_STORAGE = "sq8"
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 300
#: ``--dense-engine auto`` builds the graph from this many items: below it the exact scan of a
#: few MB is as fast and has nothing to build.
HNSW_MIN_ITEMS = 5_000
#: ``--dense-engine auto`` above this many items builds faiss IVF instead (``aisle_server.ann``),
#: as before: on the synthetic 1M catalog the graph a two-core build host could afford (M 16,
#: ef_construction 40; the defaults' build would take hours there) kept a fraction of the exact
#: scan's candidates, while IVF keeps nearly all of them (docs/results.md, "Retrieval at scale").
HNSW_MAX_ITEMS = 100_000
#: The widest over-fetch, as a multiple of the candidates wanted, before the exact fallback.
MAX_FETCH_FACTOR = 64
ADD_CHUNK = 100_000


def serve_single_threaded() -> None:
    """One OpenMP thread for faiss in this process. A single query gains nothing from more, and
    on a loaded machine faiss's threads wait for each other at every search (a several-fold
    slower request: docs/results.md, "Design measurements behind code decisions"). A ``rerank``
    instance is one process (Triton runs more instances for more cores), as OpenBLAS is set to
    one thread there too."""
    import faiss

    faiss.omp_set_num_threads(1)


def _quantizer(storage: str) -> int:
    import faiss

    return {"sq8": faiss.ScalarQuantizer.QT_8bit, "fp16": faiss.ScalarQuantizer.QT_fp16}[storage]


class HnswIndex:
    """An inner-product HNSW graph over the catalog's rows (row = faiss id)."""

    def __init__(self, index: object, ef_search: int = DEFAULT_EF_SEARCH, storage: str = DEFAULT_STORAGE):
        if storage not in STORAGES:
            raise ValueError(f"unknown HNSW storage {storage!r}; expected one of {STORAGES}")
        self.index = index
        self.ef_search = int(ef_search)
        self.storage = storage
        index.hnsw.efSearch = self.ef_search  # type: ignore[attr-defined]  # faiss ships no type hints

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        m: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        storage: str = DEFAULT_STORAGE,
        progress: bool = False,
    ) -> HnswIndex:
        """The graph over ``embeddings`` (may be memory-mapped: added in chunks)."""
        import faiss

        if storage not in STORAGES:
            raise ValueError(f"unknown HNSW storage {storage!r}; expected one of {STORAGES}")
        n, dim = embeddings.shape
        if storage == "flat":
            index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(dim, _quantizer(storage), m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        if not index.is_trained:  # the 8-bit quantizer's per-dimension ranges, from a sample
            picks = np.sort(np.random.default_rng(0).choice(n, size=min(n, 100_000), replace=False))
            index.train(np.ascontiguousarray(embeddings[picks], dtype=np.float32))
        for start in range(0, n, ADD_CHUNK):
            index.add(np.ascontiguousarray(embeddings[start : start + ADD_CHUNK], dtype=np.float32))
            if progress:
                print(f"  hnsw: added {min(n, start + ADD_CHUNK):,}/{n:,}", flush=True)
        return cls(index, ef_search, storage)

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(Path(directory) / HNSW_FILE))
        meta = {"ef_search": self.ef_search, "storage": self.storage}
        (Path(directory) / HNSW_META).write_text(json.dumps(meta, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> HnswIndex | None:
        """The saved graph (None: none built). Serving searches one query at a time on one thread
        (see :func:`serve_single_threaded`)."""
        import faiss

        path = Path(directory) / HNSW_FILE
        if not path.exists():
            return None
        serve_single_threaded()
        meta = json.loads((Path(directory) / HNSW_META).read_text())
        return cls(faiss.read_index(str(path)), int(meta["ef_search"]), str(meta["storage"]))

    def __len__(self) -> int:
        return int(self.index.ntotal)  # type: ignore[attr-defined]

    def search(self, vector: np.ndarray, n: int, keep: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Rows of (about) the ``n`` best items by inner product that ``keep`` allows (``keep(rows)``:
        a boolean per row), best first by the graph's approximate scores; fewer than ``n`` when the
        filters leave fewer within :data:`MAX_FETCH_FACTOR` × ``n`` neighbours (the caller then
        scans exactly)."""
        return self.search_many(np.asarray(vector, dtype=np.float32).reshape(1, -1), n, [keep])[0]

    def search_many(
        self, vectors: np.ndarray, n: int, keeps: Sequence[Callable[[np.ndarray], np.ndarray] | None]
    ) -> list[np.ndarray]:
        """:meth:`search` for each of ``vectors`` (with its ``keeps`` filter): one faiss call for
        them all (a dynamic batch's searches, the same walks less the per-call overhead), then
        wider searches, one vector at a time, for those its filter left short."""
        total = len(self)
        first = min(total, max(self.ef_search, n))
        found = self._neighbours(np.asarray(vectors, dtype=np.float32).reshape(len(keeps), -1), first)
        out = []
        for vector, rows, keep in zip(vectors, found, keeps):
            fetch = first
            while True:
                rows = rows[rows >= 0].astype(np.int64)
                if keep is not None:
                    rows = rows[keep(rows)]
                if len(rows) >= n or fetch >= total or fetch >= MAX_FETCH_FACTOR * n:
                    break
                fetch = min(total, 4 * fetch)
                rows = self._neighbours(np.asarray(vector, dtype=np.float32).reshape(1, -1), fetch)[0]
            out.append(rows)
        return out

    def _neighbours(self, vectors: np.ndarray, fetch: int) -> np.ndarray:
        """(vectors, ``fetch``) graph rows, best first (-1 where the graph found fewer)."""
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, fetch)
        _, found = self.index.search(np.ascontiguousarray(vectors), fetch, params=params)  # type: ignore[attr-defined]
        return found
