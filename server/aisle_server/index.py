"""The catalog index that ``aisle index`` writes and the ``rerank`` model loads.

Layout of ``<repo>/rerank/<version>/index/``:

- ``embeddings.npy``  float32 (N, d), L2-normalized item-tower embeddings (memory-mapped);
- ``items/``          one ``.npy`` per item field — ids, titles, categories, created_at,
  popularity, in_stock, hidden — plus the lookups derived from them at build time (ids in sorted
  order with their rows, category codes): all memory-mapped, so a replica's heap does not grow
  with the width of a title (numpy strings are fixed-width UTF-32) and holds no per-item Python
  object; the descriptions as one UTF-8 blob with offsets (``TextColumn``: descriptions are long
  and of very different lengths, fixed-width strings would be mostly padding); the catalog's
  declared item attributes in ``items/attributes/`` (``aisle_server.attributes``). ``hidden`` and the
  descriptions are only read by live catalog changes (``aisle_server.live_catalog``); indexes
  written before them load with nothing hidden and empty descriptions;
- ``manifest.json``   counts, dimension, checksums of the catalog and of the item tower;
- ``lexical/``        BM25 over the item texts (``aisle_server.lexical``), for hybrid search;
- ``ann.faiss``       an IVF index (``aisle_server.ann``), only for catalogs above the exact-search size;
- ``hnsw.faiss``      an HNSW graph (``aisle_server.hnsw``): the dense candidates' top-k engine.

Indexes written before ``items/`` keep their fields in ``items.npz``: they still load, into RAM.

Nothing here is loaded with pickle, and no request field ever names a path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .ann import AnnIndex
from .attributes import Attributes
from .hnsw import HnswIndex
from .lexical import LexicalIndex

if TYPE_CHECKING:
    from .cooccurrence import Cooccurrence

INDEX_DIRNAME = "index"
LEXICAL_DIRNAME = "lexical"
ITEMS_DIRNAME = "items"
LEGACY_ITEMS_FILE = "items.npz"  # the item fields of indexes written before ``items/``
_ITEM_FIELDS = ("item_ids", "titles", "categories", "created_at", "popularity", "in_stock")
DESCRIPTIONS = "descriptions"
HIDDEN = "hidden"


class TextColumn:
    """Strings of very different lengths as one UTF-8 blob plus offsets (both memory-mappable)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob = blob  # uint8
        self.offsets = offsets  # int64, len(strings) + 1

    @classmethod
    def of(cls, texts: Sequence[str]) -> TextColumn:
        encoded = [t.encode("utf-8") for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return bytes(self.blob[start:end]).decode("utf-8")

    def tolist(self) -> list[str]:
        return [self[row] for row in range(len(self))]

    def save(self, items: Path, name: str) -> None:
        np.save(items / f"{name}.utf8.npy", np.asarray(self.blob, dtype=np.uint8), allow_pickle=False)
        np.save(items / f"{name}.offsets.npy", np.asarray(self.offsets, dtype=np.int64), allow_pickle=False)

    @classmethod
    def load(cls, items: Path, name: str, mmap_mode: Any = "r") -> TextColumn | None:
        if not (items / f"{name}.offsets.npy").exists():
            return None
        return cls(
            np.load(items / f"{name}.utf8.npy", mmap_mode=mmap_mode, allow_pickle=False),
            np.load(items / f"{name}.offsets.npy", mmap_mode=mmap_mode, allow_pickle=False),
        )


@dataclass(frozen=True, eq=False)  # eq=False: no element-wise array comparison hiding in ==
class ItemLookups:
    """What a request needs to find items by id or category, derived once from the item fields.

    Rows by id come from a binary search over the ids in sorted order instead of a ``dict``:
    10M ids in a dict are 10M Python strings and ints (≈ 125 bytes per item of heap), the sorted
    arrays are memory-mapped from the index like the fields themselves.
    """

    sorted_ids: np.ndarray  # item ids in sorted order
    sorted_rows: np.ndarray  # int64: the catalog row of each of ``sorted_ids``
    category_names: np.ndarray  # distinct categories, sorted
    category_codes: np.ndarray  # int32 per item: its category's position in ``category_names``

    @classmethod
    def of(cls, item_ids: np.ndarray, categories: np.ndarray) -> ItemLookups:
        order = np.argsort(item_ids, kind="stable")
        names, codes = np.unique(categories, return_inverse=True)
        return cls(np.asarray(item_ids)[order], order.astype(np.int64), names, codes.astype(np.int32))

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """The catalog row of each id, ``-1`` where the catalog has no such item."""
        if len(item_ids) == 0 or len(self.sorted_ids) == 0:
            return np.full(len(item_ids), -1, dtype=np.int64)
        wanted = np.asarray(item_ids, dtype=str)
        at = np.minimum(np.searchsorted(self.sorted_ids, wanted), len(self.sorted_ids) - 1)
        return np.where(self.sorted_ids[at] == wanted, self.sorted_rows[at], -1)

    def category_mask(self, categories: Sequence[str]) -> np.ndarray:
        """Boolean mask of the items whose category is one of ``categories``."""
        wanted = np.isin(self.category_names, np.asarray(list(categories), dtype=str))
        return wanted[self.category_codes]


_LOOKUP_FIELDS = tuple(f.name for f in fields(ItemLookups))


def rerank_versions(repo: Path | str) -> list[int]:
    """The numbered version directories of ``<repo>/rerank``, ascending (what Triton can load)."""
    root = Path(repo) / "rerank"
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def popularity_prior(popularity: np.ndarray) -> np.ndarray:
    """``log1p(popularity)`` scaled to [0, 1] by the most popular item (all zeros when nothing is popular)."""
    logs = np.log1p(np.maximum(np.nan_to_num(np.asarray(popularity, dtype=np.float64)), 0.0))
    top = logs.max() if len(logs) else 0.0
    return logs / top if top > 0 else logs


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
    lookups: ItemLookups | None = None  # derived from the fields when not given (loaded: mapped)
    # learned from the store's log (aisle_server.learned); None: not given
    log_popularity: np.ndarray | None = None  # per row; replaces the catalog's popularity column
    cooccurrence: Cooccurrence | None = None
    user_encoder: Any = None  # aisle_server.user_encoder.UserEncoder (imported only when present)
    hidden: np.ndarray | None = None  # bool per row: taken out of every answer; None: nothing hidden
    descriptions: TextColumn | None = None  # None: not kept (indexes written before them)
    #: rows the ANN index does not cover (added or re-embedded by live changes): searched exactly
    exact_rows: np.ndarray | None = None
    #: per row, the log's item statistics (``aisle_server.learned.ITEM_STAT_NAMES``, NaN = unseen)
    item_stats: np.ndarray | None = None
    ranker: Any = None  # aisle_server.ranker.LearnedRanker (lightgbm imported only when present)
    #: the catalog's declared item attributes (``aisle_server.attributes``); None: it declares none
    attributes: Attributes | None = None
    #: dense candidates from an HNSW graph (``aisle_server.hnsw``) instead of the exact scan; None: none built
    hnsw: HnswIndex | None = None

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.hidden is None:
            self.hidden = np.zeros(n, dtype=bool)
        for name in (*_ITEM_FIELDS, "embeddings", HIDDEN):
            if len(getattr(self, name)) != n:
                raise ValueError(f"index field {name} has {len(getattr(self, name))} rows, expected {n}")
        if self.attributes is not None and self.attributes.schema and len(self.attributes) != n:
            raise ValueError(f"item attributes have {len(self.attributes)} rows, expected {n}")
        if self.lookups is None:
            self.lookups = ItemLookups.of(self.item_ids, self.categories)
        # Derived once at load, not per request: the popularity prior (the log's counts when given).
        self.popularity_prior = popularity_prior(
            self.popularity if self.log_popularity is None else self.log_popularity
        )

    @cached_property
    def available(self) -> np.ndarray:
        """Rows an answer may show: in stock and not hidden."""
        return np.asarray(self.in_stock, dtype=bool) & ~np.asarray(self.hidden, dtype=bool)

    @cached_property
    def popular_rows(self) -> np.ndarray:
        """Rows by popularity prior, most popular first (ties by row): the feed's popular candidates."""
        return np.lexsort((np.arange(len(self)), -self.popularity_prior))

    @cached_property
    def newest_rows(self) -> np.ndarray:
        """Rows by creation time, newest first (ties by row), those without one last: the cold
        fallback reads freshness down this order (``ranking.fallback_candidates``)."""
        created = np.asarray(self.created_at, dtype=np.float64)
        return np.lexsort((np.arange(len(self)), -np.where(np.isfinite(created), created, -np.inf)))

    @cached_property
    def popularity_rank(self) -> np.ndarray:
        """int64 per row: its position in :attr:`popular_rows` (0 = most popular)."""
        rank = np.empty(len(self), dtype=np.int64)
        rank[self.popular_rows] = np.arange(len(self))
        return rank

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """The catalog row of each id, ``-1`` where the catalog has no such item."""
        return self.lookups.rows_of(item_ids)

    def category_mask(self, categories: Sequence[str]) -> np.ndarray:
        """Boolean mask of the items whose category is one of ``categories``."""
        return self.lookups.category_mask(categories)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The embeddings of ``rows``, gathered by ``take`` (one copy per row, where fancy indexing
        walks element by element: about a third less time for a request's few hundred candidate
        rows read cold from the memory-mapped file; the same values)."""
        return np.asarray(self.embeddings).take(rows, axis=0)

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "embeddings.npy", np.ascontiguousarray(self.embeddings, dtype=np.float32))
        if self.lexical is not None:
            self.lexical.save(directory / LEXICAL_DIRNAME)
        if self.ann is not None:
            self.ann.save(directory)
        if self.hnsw is not None:
            self.hnsw.save(directory)
        save_item_fields(
            directory,
            {name: getattr(self, name) for name in (*_ITEM_FIELDS, HIDDEN)},
            {**self.manifest, "dim": self.dim, "lexical": self.lexical is not None, "ann": self.ann is not None},
            self.lookups,
            self.descriptions,
        )
        if self.attributes is not None:
            self.attributes.save(directory / ITEMS_DIRNAME)
        return directory

    @classmethod
    def load(cls, directory: Path, mmap: bool = True, searchable: bool = True) -> CatalogIndex:
        """The index in ``directory``; ``searchable=False`` skips BM25 and the ANN index (for a
        reader of the item fields only, such as the ``catalog`` model)."""
        directory = Path(directory)
        mode = "r" if mmap else None
        embeddings = np.load(directory / "embeddings.npy", mmap_mode=mode, allow_pickle=False)
        items = directory / ITEMS_DIRNAME
        lookups = None
        if items.is_dir():
            arrays = {
                name: np.load(items / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
                for name in _ITEM_FIELDS + _LOOKUP_FIELDS
            }
            lookups = ItemLookups(**{name: arrays.pop(name) for name in _LOOKUP_FIELDS})
            if (items / f"{HIDDEN}.npy").exists():
                arrays[HIDDEN] = np.load(items / f"{HIDDEN}.npy", mmap_mode=mode, allow_pickle=False)
            arrays[DESCRIPTIONS] = TextColumn.load(items, DESCRIPTIONS, mode)
            arrays["attributes"] = Attributes.load(items, mode)
        elif (directory / LEGACY_ITEMS_FILE).exists():
            # written before the mapped layout: still served (an upgraded image must not refuse the
            # shared repository), from RAM as it was then; `aisle index` rewrites it mapped
            with np.load(directory / LEGACY_ITEMS_FILE, allow_pickle=False) as legacy:
                arrays = {name: legacy[name] for name in _ITEM_FIELDS}
        else:
            raise FileNotFoundError(f"{items} is missing: not an index written by `aisle index`")
        manifest = json.loads((directory / "manifest.json").read_text())
        lexical = None
        if searchable and (directory / LEXICAL_DIRNAME).is_dir():
            lexical = LexicalIndex.load(directory / LEXICAL_DIRNAME)
        return cls(
            embeddings=embeddings,
            manifest=manifest,
            lexical=lexical,
            ann=AnnIndex.load(directory, embeddings) if searchable else None,
            hnsw=HnswIndex.load(directory) if searchable else None,
            lookups=lookups,
            **arrays,
        )


def save_item_fields(
    directory: Path,
    item_fields: Mapping[str, np.ndarray],
    manifest: Mapping[str, object],
    lookups: ItemLookups | None = None,
    descriptions: TextColumn | Sequence[str] | None = None,
) -> None:
    """Write ``items/`` (the fields, ``hidden`` when given, the descriptions when given, and the
    lookups) and ``manifest.json`` (``count`` from the fields) into ``directory``.

    :meth:`CatalogIndex.save` calls it after the vectors; an index whose ``embeddings.npy`` and
    ``ann.faiss`` were written separately (streamed to disk, too large for RAM) calls it alone.
    """
    missing = set(_ITEM_FIELDS) - set(item_fields)
    if missing:
        raise ValueError(f"item fields missing: {sorted(missing)}")
    items = Path(directory) / ITEMS_DIRNAME
    items.mkdir(parents=True, exist_ok=True)
    lookups = lookups or ItemLookups.of(item_fields["item_ids"], item_fields["categories"])
    arrays = {
        **{name: item_fields[name] for name in (*_ITEM_FIELDS, HIDDEN) if name in item_fields},
        **{name: getattr(lookups, name) for name in _LOOKUP_FIELDS},
    }
    for name, array in arrays.items():
        np.save(items / f"{name}.npy", np.asarray(array), allow_pickle=False)
    if descriptions is not None:
        column = descriptions if isinstance(descriptions, TextColumn) else TextColumn.of(descriptions)
        column.save(items, DESCRIPTIONS)
    count = len(item_fields["item_ids"])
    (Path(directory) / "manifest.json").write_text(
        json.dumps({**manifest, "count": count}, indent=2, sort_keys=True) + "\n"
    )
