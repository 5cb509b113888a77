"""Embed a catalog through the item tower and write the index the ``rerank`` model serves.

The item tower is the exported ``<repo>/item_encoder/1/model.onnx`` run with the server's own
tokenization code, so offline item vectors and online query vectors come from the same graphs.
Texts are embedded longest-first in batches: similar lengths share padding, which is most of the
cost of a batch.

The index is written to a temporary directory beside its destination and renamed into place, so
a server never sees half an index.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from aisle_export.build.repository import TEMPLATE_DIR
from aisle_export.core.encoding import embed_texts
from aisle_export.core.files import replace_directory, sha256_file
from aisle_export.core.spaces import read_space
from aisle_export.data.catalog import Catalog
from aisle_export.index.remote import embed_remote
from aisle_server.ann import DEFAULT_KIND, EXACT_MAX_ITEMS, AnnIndex
from aisle_server.attributes import Attributes
from aisle_server.hnsw import DEFAULT_EF_SEARCH, HNSW_MAX_ITEMS, HNSW_MIN_ITEMS, HnswIndex
from aisle_server.index import INDEX_DIRNAME, CatalogIndex, TextColumn, rerank_versions
from aisle_server.learned import LogSignals
from aisle_server.lexical import LexicalIndex

#: ``aisle index --dense-engine``: where dense candidates come from (``use_hnsw_for``).
DENSE_ENGINES = ("auto", "hnsw", "exact")


def catalog_index(catalog: Catalog, embeddings: np.ndarray, **extra: object) -> CatalogIndex:
    """The served index of ``catalog`` with its item embeddings (``extra``: manifest, lexical, ann)
    and its declared attributes (``aisle_server.attributes``), when it declares any."""
    attributes = None
    if catalog.attribute_schema:
        attributes = Attributes.of(catalog.attribute_schema, catalog.attribute_values)
    return CatalogIndex(
        item_ids=catalog.item_ids,
        embeddings=embeddings,
        titles=catalog.titles,
        categories=catalog.categories,
        created_at=catalog.created_at,
        popularity=catalog.popularity,
        in_stock=catalog.in_stock,
        descriptions=TextColumn.of(catalog.descriptions.tolist()),
        attributes=attributes,
        **extra,
    )


def resolve_version(repo: Path, version: str) -> str:
    """``"next"`` → one above the newest version directory (``"1"`` if none); a number → itself."""
    version = str(version)
    if version == "next":
        return str(max(rerank_versions(repo), default=0) + 1)
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"--version must be a positive integer or 'next', got {version!r}")
    return str(int(version))


def write_index(
    catalog: Catalog,
    repo: Path,
    version: str = "1",
    batch_size: int = 64,
    progress: bool = True,
    source: Path | None = None,
    ann: str = "auto",
    server: str | None = None,
    checkpoint: Path | None = None,
    concurrency: int = 8,
    chunk_size: int = 4096,
    ann_kind: str = DEFAULT_KIND,
    ann_nprobe: int | None = None,
    ann_refine: int | None = None,
    embeddings: np.ndarray | None = None,
    dense_engine: str = "auto",
    hnsw_ef_search: int | None = None,
) -> CatalogIndex:
    """Embed ``catalog`` (or take its ``embeddings``, one row per item, already computed by this
    repository's item encoder), build BM25 and (``ann``: auto = above ``EXACT_MAX_ITEMS``, on, off) faiss IVF.

    With ``server`` (gRPC ``host:port`` of a running deployment) the item tower runs there, through
    ``embed_item``, resumably (:mod:`aisle_export.index.remote`; ``checkpoint`` defaults to
    ``rerank/<version>/.index.embed-checkpoint``, removed once the index is written).
    ``ann_kind``: ``ivf_fp16``, ``ivf_flat`` or ``ivf_pq`` (10M+ items; see ``aisle_server.ann``); ``ann_nprobe``
    and ``ann_refine``, the recall/latency dials saved with it (``None``: ``AnnIndex.build``'s defaults).
    ``dense_engine``: ``hnsw`` builds the HNSW graph dense candidates come from
    (``aisle_server.hnsw``), ``exact`` none (every request scans every item, or IVF with ``ann``);
    ``auto``: the graph from ``HNSW_MIN_ITEMS`` to ``HNSW_MAX_ITEMS`` items, where ``ann=auto``
    then builds no IVF (the graph answers instead). ``hnsw_ef_search``: the graph's search breadth,
    saved with it (None: ``aisle_server.hnsw.DEFAULT_EF_SEARCH``).
    """
    repo = Path(repo)
    version = resolve_version(repo, version)  # "next": a new version directory, for a hot swap
    encoder_dir = repo / "item_encoder" / "1"
    if server is None and embeddings is None and not (encoder_dir / "model.onnx").exists():
        raise FileNotFoundError(f"{encoder_dir / 'model.onnx'} not found: run `aisle export --repo {repo}` first")
    started = time.time()
    texts = catalog.texts()  # one per item, in catalog order
    given = embeddings is not None
    if given:
        if embeddings.shape[0] != len(texts):
            raise ValueError(f"embeddings: {embeddings.shape[0]} rows for {len(texts)} catalog items")
    elif server is not None:
        checkpoint = (
            Path(checkpoint) if checkpoint else repo / "rerank" / version / f".{INDEX_DIRNAME}.embed-checkpoint"
        )
        embeddings = embed_remote(
            texts, server, checkpoint, chunk_size=chunk_size, concurrency=concurrency, progress=progress
        )
    else:
        embeddings = embed_texts(texts, encoder_dir, batch_size, progress)
    lexical = LexicalIndex.build(texts)
    use_hnsw = use_hnsw_for(len(texts), dense_engine)
    use_ann = ann == "on" or (ann == "auto" and len(texts) > EXACT_MAX_ITEMS and not use_hnsw)
    if use_hnsw and progress:
        print(f"building the HNSW graph over {len(texts)} items", flush=True)
    if use_ann and progress:
        print(f"building faiss IVF index over {len(texts)} items", flush=True)
    manifest = {
        "catalog": str(source) if source else None,
        "catalog_sha256": sha256_file(source) if source else None,
        "item_encoder_sha256": sha256_file(encoder_dir / "model.onnx")
        if (encoder_dir / "model.onnx").exists()
        else None,
        "space": read_space(encoder_dir),  # which query towers may search this index (aisle_export.core.spaces)
        "embedded_by": "given embeddings" if given else server or "local item_encoder",
        "skipped_rows": catalog.skipped,
        "built_at": started,
        "embed_seconds": round(time.time() - started, 2),
    }
    index = catalog_index(
        catalog,
        embeddings,
        manifest=manifest,
        lexical=lexical,
        ann=AnnIndex.build(embeddings, kind=ann_kind, nprobe=ann_nprobe, refine=ann_refine) if use_ann else None,
        hnsw=HnswIndex.build(embeddings, ef_search=hnsw_ef_search or DEFAULT_EF_SEARCH, progress=progress)
        if use_hnsw
        else None,
    )
    path = save_version(index, repo, version)
    if server is not None:
        shutil.rmtree(checkpoint, ignore_errors=True)  # type: ignore[arg-type]  # set whenever server is
    print(json.dumps({"indexed": len(index), "skipped": catalog.skipped, "version": int(version), "path": str(path)}))
    return index


def use_hnsw_for(items: int, dense_engine: str) -> bool:
    """Whether ``aisle index --dense-engine`` builds the HNSW graph for a catalog of ``items``."""
    if dense_engine not in DENSE_ENGINES:
        raise ValueError(f"dense_engine={dense_engine!r}: expected one of {DENSE_ENGINES}")
    return dense_engine == "hnsw" or (dense_engine == "auto" and HNSW_MIN_ITEMS <= items <= HNSW_MAX_ITEMS)


def save_version(index: CatalogIndex, repo: Path, version: str) -> Path:
    """Write ``index`` as ``<repo>/rerank/<version>/index``; its path.

    A new version appears complete (model.py + index/) or not at all: built under a hidden name and
    renamed into place, so a server polling the repository never loads a half-written one. An
    existing version's index is replaced by renames (``replace_directory``).
    """
    version_dir = Path(repo) / "rerank" / version
    if not version_dir.exists():
        building = Path(repo) / "rerank" / f".{version}.building"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        shutil.copy2(TEMPLATE_DIR / "rerank" / "1" / "model.py", building / "model.py")
        index.save(building / INDEX_DIRNAME)
        building.rename(version_dir)
        return version_dir / INDEX_DIRNAME
    model_py = version_dir / "model.py"
    if not model_py.exists():
        shutil.copy2(TEMPLATE_DIR / "rerank" / "1" / "model.py", model_py)
    return replace_directory(version_dir / INDEX_DIRNAME, index.save)


def served_index(
    catalog: Catalog, embeddings: np.ndarray, signals: LogSignals | None = None, user_encoder: object | None = None
) -> CatalogIndex:
    """The index ``rerank`` would serve: catalog + embeddings + what the log taught (as of its cut)."""
    index = catalog_index(catalog, embeddings)
    if signals is not None:
        popularity, cooccurrence = signals.aligned(index)
        index = replace(
            index, log_popularity=popularity, cooccurrence=cooccurrence, item_stats=signals.aligned_stats(index)
        )
    if user_encoder is not None:
        index = replace(index, user_encoder=user_encoder)
    return index
