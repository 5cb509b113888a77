"""Fold the live catalog changes into a new base version (``aisle catalog compact``).

Every ``rerank`` instance copies its base arrays once per batch of live changes and searches the
changed rows beside BM25 and the ANN index (``aisle_server.live_catalog``); compaction keeps that
overlay small. It reads the change log up to its current end, applies it to the newest base
exactly as ``rerank`` does (``live_index``), drops deleted items, rebuilds BM25 (and the ANN index
when the base had one) and writes the result as the next ``rerank`` version, recording the last
change it holds (``manifest["overlay_through"]``: one id per change log shard, every shard read). Loading that version is the existing hot swap
(``aisle catalog load``): requests in flight finish on the old version, new ones go to the new one,
which reads only the changes logged after its mark — so a change that arrives while compaction
runs is applied by the new version too, and nothing is lost or applied twice.

The log is trimmed only up to the *previous* base's mark: the version being replaced may still be
serving (another replica may not have loaded the new one yet) and needs the changes after its own
mark; the ones before it are in both.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from aisle_contract import item_text
from aisle_export.index.writing import rerank_versions, resolve_version, save_version
from aisle_server.ann import AnnIndex
from aisle_server.hnsw import HnswIndex
from aisle_server.index import INDEX_DIRNAME, CatalogIndex, TextColumn
from aisle_server.lexical import LexicalIndex
from aisle_server.live_catalog import START, CatalogChanges, Marks, Overlay, live_index, marks_of, through_of
from aisle_server.state import connect, next_id


def compacted(
    base: CatalogIndex, overlay: Overlay, through: str | list[str], base_version: int | None = None
) -> CatalogIndex:
    """``base`` with ``overlay`` applied and deleted items dropped, its lexical and ANN indexes rebuilt."""
    live = live_index(base, overlay)
    n_base = len(base)
    deleted = np.zeros(len(live), dtype=bool)
    if live is not base:
        deleted[:n_base] = live.lookups.deleted  # type: ignore[union-attr]  # an OverlayLookups
    rows = np.flatnonzero(~deleted)
    descriptions = live.descriptions.tolist() if live.descriptions is not None else [""] * len(live)
    kept_descriptions = [descriptions[r] for r in rows.tolist()]
    titles, categories = live.titles[rows], live.categories[rows]
    texts = [item_text(str(t), d, str(c)) for t, d, c in zip(titles.tolist(), kept_descriptions, categories.tolist())]
    embeddings = np.ascontiguousarray(np.asarray(live.embeddings)[rows], dtype=np.float32)
    ann = None
    if base.ann is not None:
        ann = AnnIndex.build(embeddings, kind=base.ann.kind, nprobe=base.ann.nprobe, refine=base.ann.refine or None)
    manifest = {k: v for k, v in base.manifest.items() if k != "overlay"}
    return CatalogIndex(
        item_ids=np.asarray(live.item_ids)[rows],
        embeddings=embeddings,
        titles=titles,
        categories=categories,
        created_at=np.asarray(live.created_at)[rows],
        popularity=np.asarray(live.popularity)[rows],
        in_stock=np.asarray(live.in_stock)[rows],
        hidden=np.asarray(live.hidden)[rows],
        descriptions=TextColumn.of(kept_descriptions),
        manifest={
            **manifest,
            "overlay_through": through,
            "compacted_from": base_version,
            "compacted_changes": overlay.changes,
            "compacted_at": time.time(),
        },
        lexical=LexicalIndex.build(texts),
        hnsw=None
        if base.hnsw is None
        else HnswIndex.build(embeddings, ef_search=base.hnsw.ef_search, storage=base.hnsw.storage),
        ann=ann,
        attributes=live.attributes.take(rows) if live.attributes is not None else None,  # live-set values kept
    )


def _first_kept(since: Marks) -> Marks:
    """The previous base's marks as trim points: each stream keeps what came after its mark."""
    return {stream: next_id(mark) for stream, mark in since.items() if mark != START}


def compact(repo: Path, state_url: str, version: str = "next") -> dict[str, object]:
    """Write the newest base plus the logged changes as a new version; what was done (a JSON-able dict)."""
    versions = rerank_versions(repo)
    if not versions:
        raise FileNotFoundError(f"{Path(repo) / 'rerank'} has no version to compact: run `aisle index` first")
    base_version = versions[-1]
    base = CatalogIndex.load(Path(repo) / "rerank" / str(base_version) / INDEX_DIRNAME)
    changes = CatalogChanges(connect(state_url, timeout_s=30.0), state_url)
    since = marks_of(base.manifest.get("overlay_through"), changes.layout)
    logged, marks = changes.read_after(since)  # every shard's stream
    if not logged:
        return {"compacted": 0, "version": base_version, "items": len(base)}
    overlay = Overlay()
    overlay.apply(logged)
    through = through_of(marks, changes.layout)
    index = compacted(base, overlay, through, base_version)
    new_version = resolve_version(repo, version)
    path = save_version(index, repo, new_version)
    trimmed = changes.trim_before(_first_kept(since))
    return {
        "compacted": len(logged),
        "from_version": base_version,
        "version": int(new_version),
        "items": len(index),
        "overlay_through": through,
        "trimmed": trimmed,
        "path": str(path),
    }
