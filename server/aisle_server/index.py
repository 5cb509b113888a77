"""The catalog index that ``aisle index`` writes and the ``rerank`` model loads.

Layout of ``<repo>/rerank/<version>/index/``:

- ``embeddings.npy``  float32 (N, d), L2-normalized item-tower embeddings (memory-mappable);
- ``items.npz``       item ids, titles, categories, created_at, popularity, in_stock (no pickles);
- ``manifest.json``   counts, dimension, checksums of the catalog and of the item tower;
- ``lexical/``        BM25 over the item texts (``aisle_server.lexical``), for hybrid search;
- ``ann.faiss``       an IVF index (``aisle_server.ann``), only for catalogs above the exact-search size.

Nothing here is loaded with pickle, and no request field ever names a path.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .ann import AnnIndex
from .lexical import LexicalIndex

INDEX_DIRNAME = "index"
LEXICAL_DIRNAME = "lexical"
_ITEM_FIELDS = ("item_ids", "titles", "categories", "created_at", "popularity", "in_stock")


@dataclass
class CatalogIndex:
    item_ids: np.ndarray
    embeddings: np.ndarray
    titles: np.ndarray
    categories: np.ndarray
    created_at: np.ndarray
    popularity: np.ndarray
    in_stock: np.ndarray
    manifest: dict = field(default_factory=dict)
    lexical: LexicalIndex | None = None
    ann: AnnIndex | None = None

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in _ITEM_FIELDS + ("embeddings",):
            if len(getattr(self, name)) != n:
                raise ValueError(f"index field {name} has {len(getattr(self, name))} rows, expected {n}")
        self.row_of = {item_id: row for row, item_id in enumerate(self.item_ids.tolist())}
        # Derived once at load, not per request: category codes for allow/deny masks, popularity prior.
        self._category_names, self._category_codes = np.unique(self.categories, return_inverse=True)
        popularity = np.log1p(np.maximum(np.nan_to_num(np.asarray(self.popularity, dtype=np.float64)), 0.0))
        top = popularity.max() if n else 0.0
        self.popularity_prior = popularity / top if top > 0 else popularity

    def category_mask(self, categories: Sequence[str]) -> np.ndarray:
        """Boolean mask of the items whose category is one of ``categories``."""
        wanted = np.isin(self._category_names, np.asarray(list(categories), dtype=str))
        return wanted[self._category_codes]

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "embeddings.npy", np.ascontiguousarray(self.embeddings, dtype=np.float32))
        np.savez(directory / "items.npz", **{name: getattr(self, name) for name in _ITEM_FIELDS})
        if self.lexical is not None:
            self.lexical.save(directory / LEXICAL_DIRNAME)
        if self.ann is not None:
            self.ann.save(directory)
        manifest = {**self.manifest, "count": len(self), "dim": self.dim,
                    "lexical": self.lexical is not None, "ann": self.ann is not None}
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path, mmap: bool = True) -> "CatalogIndex":
        directory = Path(directory)
        embeddings = np.load(directory / "embeddings.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        with np.load(directory / "items.npz", allow_pickle=False) as items:
            fields = {name: items[name] for name in _ITEM_FIELDS}
        manifest = json.loads((directory / "manifest.json").read_text())
        lexical = LexicalIndex.load(directory / LEXICAL_DIRNAME) if (directory / LEXICAL_DIRNAME).is_dir() else None
        return cls(embeddings=embeddings, manifest=manifest, lexical=lexical, ann=AnnIndex.load(directory), **fields)
