"""Approximate inner-product retrieval with faiss for catalogs too large to scan per request.

Exact search is one matrix-vector product: below ``EXACT_MAX_ITEMS`` it is both faster and exact,
so ``aisle index`` only builds an ANN index above that size. Above it, an inverted-file index
(IVF, inner product) scans ``nprobe`` of ``nlist`` clusters: the recall/latency dial is
``nprobe``. Saved with ``faiss.write_index`` (faiss's own binary format, no pickle) plus
``ann.json`` (kind, nprobe, refine; and the calibration's recall when the build chose ``nprobe``).

How many lists a query needs depends on how the catalog's vectors spread, not on the catalog's size
alone: clustered synthetic vectors need a small share of the lists, real sentence embeddings a
large one (``python -m perf.bench_ivf_nprobe`` → perf/results/bench_ivf_nprobe.md). No fixed share of
``nlist`` fits both, so IVF-Flat's default ``nprobe`` is measured at build time
(:func:`calibrate_nprobe`): the smallest step of :func:`nprobe_ladder` whose recall@200 against the
exact scan reaches :data:`NPROBE_RECALL` on sample queries drawn from the catalog itself.

Three kinds:

- ``ivf_fp16`` (default): the lists hold the vectors in float16. A probe reads half the bytes of
  float32, and scanning the lists is bound by those reads: at the same ``nprobe`` it is about 1.8×
  faster than ``ivf_flat`` with the same recall (the float16 rounding moves a score by about 1e-3,
  which only decides ties at the 200th candidate; ``rerank`` scores the candidates it gets exactly).
  RAM ≈ N·d·2 bytes (0.77 GB per million 384-d items). Figures: docs/results.md ("`rerank` over
  1,000,000 items served").
- ``ivf_flat``: full float32 vectors in the lists, exact scores within the probed lists.
  RAM ≈ N·d·4 bytes (1.5 GB per million 384-d items).
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
KINDS = ("ivf_fp16", "ivf_flat", "ivf_pq")
DEFAULT_KIND = "ivf_fp16"
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
#: IVF-Flat's calibrated ``nprobe`` keeps recall@``CALIBRATION_K`` of its sample queries at least
#: this: issue #26's floor of 0.98 for ``rank_many``'s 200 dense candidates, plus a margin for
#: queries unlike the sample (real search queries: perf/results/bench_ivf_nprobe.md).
NPROBE_RECALL = 0.99
CALIBRATION_K = 200  # ranking's dense candidates per request
CALIBRATION_QUERIES = 200
EXACT_CHUNK = 65_536


#: IVF-PQ trains 256 centroids per sub-quantizer (8-bit codes): fewer items cannot train it.
PQ_MIN_ITEMS = 256


def default_nlist(n: int, kind: str = DEFAULT_KIND) -> int:
    nlist = min(max(1, int(4 * math.sqrt(n))), max(1, n))  # k-means needs an item per list
    return min(nlist, PQ_MAX_NLIST) if kind == "ivf_pq" else nlist


def default_nprobe(nlist: int) -> int:
    """IVF-PQ's ``nprobe`` (and IVF-Flat's before calibration): its recall is set by ``refine``,
    flat in ``nprobe`` from 16 to 128 (perf/results/index_scale.md), so probing is not calibrated."""
    return max(1, nlist // 32)


def nprobe_ladder(nlist: int) -> list[int]:
    """The ``nprobe`` values calibration tries, in order: 1, 2, 3, 4, 6, 8, 12, … (steps of about
    √2, so the choice overshoots the smallest sufficient value by less than 1.5×), and ``nlist``."""
    steps, base = [], 1
    while base < nlist:
        steps += [base] if base < 2 else [base, base * 3 // 2]
        base *= 2
    return sorted({s for s in steps if s < nlist} | {nlist})


def smallest_reaching(recalls: dict[int, float], target: float) -> int:
    """The smallest ``nprobe`` whose recall reaches ``target``; the largest tried if none does."""
    good = [nprobe for nprobe, recall in sorted(recalls.items()) if recall >= target]
    return good[0] if good else max(recalls)


def sample_queries(embeddings: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Query vectors drawn from the catalog: the mean of three random items plus noise, so they fall
    between the lists (a shopper's interest mixes items). On BigBasket they chose the same
    ``nprobe`` as the real search queries did (perf/results/bench_ivf_nprobe.md)."""
    rng = np.random.default_rng(seed)
    n, dim = embeddings.shape
    picks = np.sort(rng.integers(0, n, count * 3))
    rows = np.asarray(embeddings[picks], dtype=np.float32)[rng.permutation(count * 3)].reshape(count, 3, dim)
    queries = rows.mean(axis=1) + 0.5 * rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
    return queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)


def exact_top(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(queries, k) rows of each query's ``k`` best items by inner product, reading the catalog (an
    array or a memory-mapped ``.npy``) in chunks of :data:`EXACT_CHUNK` rows."""
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(embeddings), EXACT_CHUNK):
        chunk = np.asarray(embeddings[start : start + EXACT_CHUNK], dtype=np.float32)
        scores = queries @ chunk.T
        top = np.argpartition(-scores, min(k, chunk.shape[0]) - 1, axis=1)[:, :k]
        best_rows = np.concatenate([best_rows, top + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        keep = np.argpartition(-best_scores, min(k, best_scores.shape[1]) - 1, axis=1)[:, :k]
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
    return best_rows


def calibrate_nprobe(
    index: object, embeddings: np.ndarray, target: float = NPROBE_RECALL, queries: int = CALIBRATION_QUERIES
) -> tuple[int, float, dict[int, float]]:
    """(the smallest ``nprobe`` of :func:`nprobe_ladder` whose recall@``CALIBRATION_K`` against the
    exact scan reaches ``target`` on :func:`sample_queries`, its recall, every step's recall).
    ``index``: an IVF-Flat or IVF-FP16 faiss index of ``embeddings`` (its scores are exact, or
    nearly: recall is the probing's, and float16's rounding at the 200th candidate). The steps stop
    at the first that reaches ``target``; probing every list is the exact scan, so one always does."""
    import faiss

    n = len(embeddings)
    k = min(CALIBRATION_K, n)
    sample = sample_queries(embeddings, queries)
    truth = exact_top(embeddings, sample, k)
    ivf = faiss.extract_index_ivf(index)
    own, recalls = ivf.nprobe, {}
    try:
        for nprobe in nprobe_ladder(ivf.nlist):
            ivf.nprobe = nprobe
            _, found = index.search(sample, k)  # type: ignore[attr-defined]
            recalls[nprobe] = float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth)]))
            if recalls[nprobe] >= target:
                break
    finally:
        ivf.nprobe = own
    chosen = smallest_reaching(recalls, target)
    return chosen, recalls[chosen], recalls


def default_pq_m(dim: int) -> int:
    """Sub-quantizers for IVF-PQ: one per 8 dimensions (48 for 384-d), a divisor of ``dim``."""
    m = max(1, dim // 8)
    while dim % m:
        m -= 1
    return m


class AnnIndex:
    def __init__(
        self,
        index: object,
        nprobe: int,
        kind: str = "ivf_flat",
        refine: int = 0,
        vectors: np.ndarray | None = None,
        nprobe_recall: float | None = None,
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
        #: calibration's recall@200 at ``nprobe`` on sample queries (None: ``nprobe`` was given or not calibrated)
        self.nprobe_recall = nprobe_recall
        faiss.extract_index_ivf(index).nprobe = nprobe

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        nlist: int | None = None,
        nprobe: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
        kind: str = DEFAULT_KIND,
        pq_m: int | None = None,
        refine: int | None = None,
        progress: bool = False,
    ) -> AnnIndex:
        """IVF over inner product; ``nlist`` ≈ 4·√N clusters (IVF-PQ: at most ``PQ_MAX_NLIST``)
        trained on a sample (IVF-Flat/FP16: 100,000 rows; IVF-PQ: at least 40 per list, as faiss asks).
        ``embeddings`` may be a memory-mapped array: it is read in chunks. ``nprobe``: given, or
        IVF-Flat/FP16's calibrated on the catalog (:func:`calibrate_nprobe`), IVF-PQ's :func:`default_nprobe`."""
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
                f"{n}: use ivf_fp16 or ivf_flat (or no ANN index: exact search is faster at this size)"
            )
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_flat":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivf_fp16":
            fp16 = faiss.ScalarQuantizer.QT_fp16
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m or default_pq_m(dim), 8, faiss.METRIC_INNER_PRODUCT)
        train_size = train_size or (100_000 if kind != "ivf_pq" else max(100_000, 40 * nlist))
        picks = np.sort(np.random.default_rng(seed).choice(n, size=min(n, train_size), replace=False))
        index.train(np.ascontiguousarray(embeddings[picks], dtype=np.float32))
        for start in range(0, n, ADD_CHUNK):
            index.add(np.ascontiguousarray(embeddings[start : start + ADD_CHUNK], dtype=np.float32))
            if progress:
                print(f"  ann: added {min(n, start + ADD_CHUNK):,}/{n:,}", flush=True)
        if refine is None:
            refine = DEFAULT_REFINE if kind == "ivf_pq" else 0
        recall = None
        if nprobe:
            nprobe = min(nprobe, nlist)
        elif kind != "ivf_pq":
            nprobe, recall, _ = calibrate_nprobe(index, embeddings)
            if progress:
                print(f"  ann: nprobe {nprobe} of {nlist} lists (recall@{CALIBRATION_K} {recall:.3f})", flush=True)
        else:
            nprobe = default_nprobe(nlist)
        return cls(index, nprobe, kind, refine, embeddings if refine else None, recall)

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(Path(directory) / ANN_FILE))
        meta: dict[str, object] = {"nprobe": self.nprobe, "kind": self.kind, "refine": self.refine}
        if self.nprobe_recall is not None:
            meta["nprobe_recall"] = round(self.nprobe_recall, 4)
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
        return cls(
            faiss.read_index(str(path)),
            meta["nprobe"],
            kind,
            refine if vectors is not None else 0,
            vectors,
            meta.get("nprobe_recall"),  # absent from indexes built before calibration, and where nprobe was given
        )

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
