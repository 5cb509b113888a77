"""Synthetic catalogs shaped like a store's, for the benchmarks that need more items than a real one.

- :func:`synthetic` / :func:`write_vectors`: clustered, L2-normalized vectors (in memory, or written
  to a ``.npy`` in chunks so a 10M-item catalog never sits in RAM); clusters overlap;
- :func:`item_fields`: ``sku-`` ids, 6–10-word titles over a 5,000-word vocabulary, 500 categories,
  times, a heavy-tailed popularity, 5% out of stock; :func:`write_catalog` writes them as the
  catalog CSV ``aisle index`` reads, :func:`title_queries` gives search texts over them;
- :func:`queries_for`: queries that mix three catalog items, so they fall between clusters;
- :func:`query_like`: one item moved off the catalog, as far as a text query sits from its best item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from aisle_server.index import CatalogIndex
from aisle_server.lexical import LexicalIndex

CHUNK = 250_000


def synthetic(items: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    vectors = np.empty((items, dim), dtype=np.float32)
    for start in tqdm(range(0, items, 100_000), desc="vectors", unit="100k"):
        stop = min(items, start + 100_000)
        assign = rng.integers(0, clusters, stop - start)
        block = centers[assign] + rng.standard_normal((stop - start, dim), dtype=np.float32)
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors


def write_vectors(path: Path, items: int, dim: int, clusters: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(items, dim))
    for start in range(0, items, CHUNK):
        stop = min(items, start + CHUNK)
        block = centers[rng.integers(0, clusters, stop - start)] + rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    out.flush()
    del out


def item_fields(items: int, seed: int = 2) -> dict[str, np.ndarray]:
    """Synthetic item fields shaped like a store's: ``sku-`` ids, 6–10-word titles, 500 categories."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"word{i}" for i in range(5000)]
    titles = np.empty(items, dtype=f"U{10 * 9}")
    for start in range(0, items, CHUNK):  # chunked: 10M titles' words at once would be ~10 GB of str objects
        stop = min(items, start + CHUNK)
        words = rng.integers(0, len(vocabulary), (stop - start, 10)).tolist()
        lengths = rng.integers(6, 11, stop - start).tolist()
        titles[start:stop] = [" ".join(vocabulary[w] for w in row[:n]) for row, n in zip(words, lengths)]
    return {
        "item_ids": np.array([f"sku-{i}" for i in range(items)]),  # as wide as the longest, like a real catalog
        "titles": titles,
        "categories": np.array([f"category-{c}" for c in rng.integers(0, 500, items).tolist()]),
        "created_at": rng.uniform(1.6e9, 1.7e9, items),
        "popularity": rng.pareto(1.5, items),
        "in_stock": rng.random(items) > 0.05,
    }


def write_catalog(fields: dict[str, np.ndarray], path: Path) -> Path:
    """``fields`` (:func:`item_fields`) as a catalog CSV ``aisle index`` reads (``aisle_export.data.catalog``)."""
    import csv

    columns = ("item_ids", "titles", "categories", "created_at", "popularity", "in_stock")
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["item_id", "title", "category", "created_at", "popularity", "in_stock"])
        for start in range(0, len(fields["item_ids"]), CHUNK):
            chunk = [fields[name][start : start + CHUNK].tolist() for name in columns]
            writer.writerows(zip(*chunk))
    return path


def title_queries(titles: np.ndarray, count: int = 400, seed: int = 5) -> list[str]:
    """``count`` search texts: the first three words of random titles."""
    rng = np.random.default_rng(seed)
    return [" ".join(title.split()[:3]) for title in titles[rng.integers(0, len(titles), count)].tolist()]


def catalog_index(vectors: np.ndarray, fields: dict[str, np.ndarray], **engines: object) -> CatalogIndex:
    """A ``CatalogIndex`` as ``rerank`` serves one, over synthetic ``fields`` (``item_fields``) and
    ``vectors``, with BM25 over the titles; ``engines``: the dense engines (``ann``, ``hnsw``) built."""
    return CatalogIndex(
        item_ids=fields["item_ids"],
        embeddings=vectors,
        titles=fields["titles"],
        categories=fields["categories"],
        created_at=fields["created_at"],
        popularity=fields["popularity"].astype(np.float32),
        in_stock=fields["in_stock"],
        lexical=LexicalIndex.build(fields["titles"].tolist()),
        **engines,  # type: ignore[arg-type]
    )


def queries_for(vectors: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.integers(0, len(vectors), count * 3))
    rows = np.asarray(vectors[picks], dtype=np.float32)[rng.permutation(count * 3)].reshape(count, 3, -1)
    dim = rows.shape[-1]
    queries = rows.mean(axis=1) + 0.5 * rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def query_like(vectors: np.ndarray, count: int, cosine: float, seed: int = 1) -> np.ndarray:
    """Queries shaped like a search query's vector: one catalog item moved off the catalog, at
    ``cosine`` to that item (a random direction orthogonal to it). A text query's embedding sits
    farther from its best item than an item does from its neighbours; ``cosine`` is measured on
    real queries (``perf.bench_ivf_nprobe``: BigBasket's median cosine to the nearest item)."""
    if not 0 < cosine <= 1:
        raise ValueError(f"cosine must be in (0, 1]; got {cosine}")
    rng = np.random.default_rng(seed)
    items = np.asarray(vectors[np.sort(rng.integers(0, len(vectors), count))], dtype=np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    return turned(items, cosine, rng)


def turned(rows: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Each of ``rows`` (unit vectors) turned in a random direction, to ``cosine`` from where it was."""
    noise = rng.standard_normal(rows.shape, dtype=np.float32)
    noise -= np.sum(noise * rows, axis=1, keepdims=True) * rows  # orthogonal to its row
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    out = cosine * rows + np.sqrt(max(0.0, 1 - cosine**2)) * noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)
