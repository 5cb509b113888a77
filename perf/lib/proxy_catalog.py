"""A served repository over the BigBasket search proxy's catalog, grown to a catalog of any size (or
over a synthetic catalog: :func:`build_synthetic_repository`).

The product catalog at ``../shared/data/bigbasket`` (never copied into the project) holds 27,554
searchable items; the benchmarks that compare Aisle with another system at shop scale need more.
:func:`grow_catalog` adds pack variants of its rows — as a larger shop lists the same goods in more
sizes — and :func:`build_repository` indexes the result beside the exported towers of a repository,
every row embedded by that repository's own item tower.

Embedding ~27,000 added titles takes minutes on two cores, so :func:`catalog_vectors` caches them
under ``build/`` (:data:`VECTOR_CACHE`), keyed by the item tower's bytes and the texts: a second run
embeds nothing, and a changed tower or catalog embeds afresh. The proxy's own rows come from
``embeddings`` (``aisle evaluate``'s ``build/search_eval/embeddings.npy``) when a sample of them
matches the tower, and are embedded too otherwise.

Used by ``perf.bench`` (``make bench``'s FastAPI side by side) and ``perf.bench_rerank_served``.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from perf.lib.repository import ROOT

#: the search proxy's product list (``aisle_export.judge.search.DEFAULT_CSV``: ``../shared/data/bigbasket``)
PRODUCTS = ROOT.parent / "shared" / "data" / "bigbasket" / "products.csv"
PROXY_ITEMS = 27_554  # the proxy catalog as is (what ``aisle evaluate``'s embeddings hold)
VARIANTS = ("Pack of 2", "Value Pack", "Combo Pack", "Pack of 3")  # what a grown catalog's extra titles add
VECTOR_CACHE = ROOT / "build" / "bench_catalog" / "vectors"
EMBEDDINGS = ROOT / "build" / "search_eval" / "embeddings.npy"
#: rows of ``embeddings`` re-embedded to check that they are the item tower's (cosine at least SAME)
SAMPLE, SAME = 8, 0.999
#: added rows embedded to measure how close a variant's vector sits to its source's (:func:`derived_vectors`)
DERIVE_SAMPLE = 256
NOTE = "the BigBasket proxy catalog and pack variants of its rows (perf.lib.proxy_catalog.grow_catalog)"


class Served(NamedTuple):
    """What :func:`build_repository` wrote."""

    repo: Path
    queries: dict[str, list[str]]  # the search proxy's queries → their relevant item ids
    items: int  # the items indexed
    catalog_csv: Path  # the catalog indexed


def grow_catalog(catalog_csv: Path, items: int, out_csv: Path) -> Path:
    """``catalog_csv`` grown to ``items`` rows: the originals, then each row again (cycling) as a pack
    variant — a new id, one of :data:`VARIANTS` appended to its title — as a larger shop lists the same
    goods in more sizes. A stand-in for a catalog of that size: this machine holds none."""
    with open(catalog_csv, newline="", encoding="utf-8") as src:
        reader = csv.reader(src)
        header, rows = next(reader), list(reader)
    if items < len(rows):
        raise ValueError(f"--items {items}: the catalog already holds {len(rows)} items")
    id_col, title_col = header.index("item_id"), header.index("title")
    with open(out_csv, "w", newline="", encoding="utf-8") as dst:
        writer = csv.writer(dst)
        writer.writerow(header)
        writer.writerows(rows)
        for i in range(items - len(rows)):
            row = list(rows[i % len(rows)])
            row[id_col] = f"{row[id_col]}-v{i // len(rows) + 1}"
            row[title_col] = f"{row[title_col]} - {VARIANTS[i % len(VARIANTS)]}"
            writer.writerow(row)
    return out_csv


def tower_key(encoder_dir: Path) -> str:
    """The first 16 hex digits of the sha256 of ``encoder_dir/model.onnx``: what a cached vector was made by."""
    digest = hashlib.sha256()
    with open(Path(encoder_dir) / "model.onnx", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def usable_rows(given: np.ndarray | None, sample: np.ndarray, rows: int) -> int:
    """How many leading rows of ``given`` to keep: all of the first ``rows`` when ``sample`` (the tower's
    own vectors of ``given``'s first ``len(sample)`` rows) agrees with them (cosine ≥ :data:`SAME`), else 0."""
    if given is None or len(given) < rows or given.shape[1:] != sample.shape[1:]:
        return 0
    head = given[: len(sample)]
    cosine = np.sum(head * sample, axis=1) / (np.linalg.norm(head, axis=1) * np.linalg.norm(sample, axis=1) + 1e-12)
    return rows if bool(np.all(cosine >= SAME)) else 0


def catalog_vectors(
    encoder_dir: Path,
    texts: list[str],
    embeddings: Path | None = None,
    given_rows: int = PROXY_ITEMS,
    cache: Path = VECTOR_CACHE,
) -> tuple[np.ndarray, int]:
    """The item tower's vectors of ``texts``; (the vectors, how many were taken from ``embeddings``).

    The first ``given_rows`` come from ``embeddings`` when its rows are the tower's (checked on
    :data:`SAMPLE` rows); the rest are embedded, cached under ``cache/<tower key>/``."""
    from aisle_export.distill.gate import onnx_vectors

    cache_dir = Path(cache) / tower_key(encoder_dir)
    given = np.load(embeddings) if embeddings is not None and Path(embeddings).is_file() else None
    kept = 0
    if given is not None and len(texts) >= given_rows:
        kept = usable_rows(given, onnx_vectors(encoder_dir, texts[:SAMPLE]), given_rows)
    rest = onnx_vectors(encoder_dir, texts[kept:], cache_dir=cache_dir)
    head = given[:kept].astype(np.float32) if given is not None else np.zeros((0, rest.shape[1]), np.float32)
    return np.concatenate([head, rest.astype(np.float32)]), kept


def derived_vectors(
    embed: Callable[[list[str]], np.ndarray],
    head: np.ndarray,
    texts: list[str],
    sample: int = DERIVE_SAMPLE,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Vectors of ``texts`` — the catalog :func:`grow_catalog` wrote, ``head`` its first rows' vectors —
    with the added rows not embedded: each is its source row's vector turned by a random direction
    to the median cosine between a source and its variant, measured on ``sample`` added rows
    embedded by ``embed`` (the item tower). (The vectors, that cosine.)

    For catalogs whose added rows would take hours to embed here (1M items: ~970,000 titles); the
    grown rows then sit as close to their source as a real variant's embedding does, so the graph
    or IVF walks a neighbourhood of the same density."""
    from perf.lib.synthetic_catalog import turned

    rows, added = len(head), len(texts) - len(head)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(added, min(sample, added), replace=False))
    real = embed([texts[rows + i] for i in picks])
    cosine = float(np.median(np.sum(real * head[picks % rows], axis=1)))
    out = np.empty((len(texts), head.shape[1]), dtype=np.float32)
    out[:rows] = head
    for start in range(0, added, rows):
        stop = min(added, start + rows)
        out[rows + start : rows + stop] = turned(head[np.arange(start, stop) % rows], cosine, rng)
    return out, cosine


def with_template(towers: Path, repo: Path) -> Path:
    """``repo``, afresh: ``towers``' exported models (no index) with this checkout's template (configs, adapters)."""
    from aisle_export.build.repository import copy_template

    repo = Path(repo)
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(towers, repo, ignore=shutil.ignore_patterns("__pycache__", "index", ".*"))
    copy_template(repo)
    return repo


def build_synthetic_repository(towers: Path, repo: Path, items: int) -> Served:
    """``towers``' exported models with this checkout's template in ``repo`` and a synthetic catalog of
    ``items`` (``perf.lib.synthetic_catalog``: clustered vectors, ``wordN`` titles, 500 categories)
    indexed as ``aisle index`` indexes a catalog of that size; its queries are title words (no
    relevant items: for timing only)."""
    from aisle_export.data.catalog import read_catalog
    from aisle_export.distill.gate import onnx_vectors
    from aisle_export.index.writing import write_index
    from perf.lib.synthetic_catalog import item_fields, synthetic, title_queries, write_catalog

    repo = with_template(towers, repo)
    fields = item_fields(items)
    catalog_csv = write_catalog(fields, repo.parent / f"synthetic_catalog_{items}.csv")
    dim = onnx_vectors(repo / "item_encoder" / "1", [fields["titles"][0]]).shape[1]  # the towers' width
    vectors = synthetic(items, dim, clusters=max(16, items // 1000))
    write_index(read_catalog(catalog_csv), repo, source=catalog_csv, progress=True, embeddings=vectors)
    return Served(repo, {text: [] for text in title_queries(fields["titles"])}, items, catalog_csv)


def build_repository(
    towers: Path,
    repo: Path,
    items: int = 0,
    embeddings: Path | None = EMBEDDINGS,
    cache: Path = VECTOR_CACHE,
    progress: bool = False,
    derive: bool = False,
) -> Served:
    """``towers``' exported models with this checkout's template (configs, adapters) in ``repo``, and
    the proxy catalog — grown to ``items`` by :func:`grow_catalog` when more than it holds — indexed
    with the dense engine ``aisle index`` chooses for its size (the graph up to
    ``HNSW_MAX_ITEMS``, IVF above). ``derive``: the added rows' vectors from
    :func:`derived_vectors`, not embedded."""
    from aisle_export.data.catalog import read_catalog
    from aisle_export.distill.gate import onnx_vectors
    from aisle_export.index.writing import write_index
    from aisle_export.judge.search import write_proxy_catalog

    if not PRODUCTS.is_file():
        raise FileNotFoundError(f"{PRODUCTS}: the BigBasket product list is not on this machine")
    repo = with_template(towers, repo)
    catalog_csv, queries = write_proxy_catalog(PRODUCTS, repo.parent / "bigbasket_catalog.csv")
    proxy_rows = len(read_catalog(catalog_csv).titles)
    if items > proxy_rows:
        catalog_csv = grow_catalog(catalog_csv, items, repo.parent / f"bigbasket_catalog_{items}.csv")
    catalog = read_catalog(catalog_csv)
    texts, tower = catalog.texts(), repo / "item_encoder" / "1"
    if derive and len(texts) > proxy_rows:
        head, _ = catalog_vectors(tower, texts[:proxy_rows], embeddings, proxy_rows, cache)
        vectors, cosine = derived_vectors(lambda sample: onnx_vectors(tower, sample), head, texts)
        print(f"added rows' vectors derived at cosine {cosine:.4f} to their source rows", flush=True)
    else:
        vectors, _ = catalog_vectors(tower, texts, embeddings, proxy_rows, cache)
    write_index(catalog, repo, source=catalog_csv, progress=progress, embeddings=vectors)
    return Served(repo, queries, len(vectors), catalog_csv)
