"""Live catalog changes: inserts, field changes, hides and deletes served without a re-index.

A store's catalog changes all day — a product launches, sells out, is taken down. Re-indexing and
swapping a version for each change re-embeds every item; instead a change is logged once in the
state store and every ``rerank`` instance applies it to the index it serves within a second.

Key layout (the state store of ``aisle_server.state``, prefix ``aisle:``; with ``shards`` > 1 or on
a cluster, one stream and one hash per shard, items spread by id: ``aisle_server.state_keys``):

=========================  ====================================================================
``aisle:catalog``          Stream: every acknowledged change, in order — ``item_id``, ``op``
                           (upsert / delete), ``fields`` (JSON: only the fields this change
                           sets), ``embedding`` (base64 float32, set when the text changed).
``aisle:catalog:items``    Hash: item id → the item's merged fields after its last change
                           (``{"deleted": true}`` once deleted). The ``catalog`` model reads it
                           to validate a change and to build the text it re-embeds.
=========================  ====================================================================

Changes carry only the fields they set and are applied in stream order, so two replicas changing
different fields of one item at once lose neither. The stream is the record: a ``rerank``
instance starts from its base index, reads the stream after the id the base was compacted through
(``manifest["overlay_through"]``: one id, or one per shard) and then polls it (``LiveCatalog``).
All of an item's changes are in its shard's stream, so per item they are applied in order. ``aisle catalog compact``
writes overlay and base into a new base version and hot-swaps it (``aisle_export.ops.compaction``).

How a change is served (``live_index``): the base index's arrays are copied once per batch of
changes, changed rows are edited in place, new items are appended; deleted items drop out of the
id lookup (a history naming one counts as unknown) and are never shown, hidden ones stay known
but are never shown. An ANN index covers the base rows only, so new and re-embedded rows are
searched exactly beside it (``CatalogIndex.exact_rows``). BM25 is not rebuilt until compaction:
a changed or new item's lexical score is the share of the query's terms its text contains.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aisle_contract import TEXT_FIELDS, item_text

from .cooccurrence import Cooccurrence
from .errors import StateUnavailable
from .index import CatalogIndex, ItemLookups, TextColumn
from .lexical import LexicalIndex, tokenize
from .polling import Poller
from .sparse_scores import SparseScores
from .state import next_id, read_streams
from .state_keys import LEGACY, KeyLayout
from .state_url import StateUrl, parse_state_url, store_errors
from .state_writes import SlotWrites

LOG = logging.getLogger("aisle.catalog")

#: The single-node layout's change log and merged fields (``state_keys.LEGACY``).
CHANGES_KEY = LEGACY.catalog_stream(0)
ITEMS_KEY = LEGACY.catalog_items(0)
#: The stream id before every change: a base index never compacted reads the whole stream.
START = "0-0"
#: Per change log stream, the id of the last change read (or ``START``).
Marks = dict[str, str]

# KEYS: the shard's stream, then its hash of merged fields. ARGV: per change item_id op fields
# embedding state. All changes of one shard are logged together or not at all; their stream ids.
APPEND_SCRIPT = """
local out = {}
for i = 1, #ARGV / 5 do
  local a = (i - 1) * 5
  out[i] = redis.call('XADD', KEYS[1], '*', 'item_id', ARGV[a + 1], 'op', ARGV[a + 2], 'fields', ARGV[a + 3],
                      'embedding', ARGV[a + 4])
  redis.call('HSET', KEYS[2], ARGV[a + 1], ARGV[a + 5])
end
return out
"""


def marks_of(through: object, layout: KeyLayout) -> Marks:
    """The per-stream marks a base was compacted through (``manifest["overlay_through"]``): one id
    with one shard, a list of ids (one per shard) with more; None: never compacted."""
    streams = layout.catalog_streams()
    if through is None or through == "":
        return dict.fromkeys(streams, START)
    ids = [through] if isinstance(through, str) else list(through)  # type: ignore[call-overload]
    if len(ids) != len(streams):
        raise ValueError(
            f"the base index was compacted through {len(ids)} change log shard(s), the state store has "
            f"{len(streams)} (shards= of the state URL): compact it again with the store's shards"
        )
    return {stream: str(i) for stream, i in zip(streams, ids)}


def through_of(marks: Marks, layout: KeyLayout) -> str | list[str]:
    """``marks`` as a manifest records them (see :func:`marks_of`)."""
    ids = [marks[stream] for stream in layout.catalog_streams()]
    return ids[0] if len(ids) == 1 else ids


#: What an item inserted live has for a field no change set (as a catalog file's defaults).
DEFAULTS: dict[str, object] = {
    "description": "",
    "category": "",
    "created_at": float("nan"),
    "popularity": 0.0,
    "in_stock": True,
    "hidden": False,
}


@dataclass(frozen=True, eq=False)
class Change:
    """One logged change. ``fields``: only what it sets; ``embedding``: the re-embedded text's vector."""

    item_id: str
    op: str  # "upsert" | "delete"
    fields: Mapping[str, object] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    change_id: str = ""  # the stream id, once logged

    def to_stream(self) -> dict[str, str]:
        vector = "" if self.embedding is None else base64.b64encode(np.asarray(self.embedding, "<f4").tobytes())
        return {
            "item_id": self.item_id,
            "op": self.op,
            "fields": json.dumps(dict(self.fields), separators=(",", ":"), ensure_ascii=False),
            "embedding": vector if isinstance(vector, str) else vector.decode("ascii"),
        }

    @classmethod
    def from_stream(cls, change_id: str, entry: Mapping[str, str]) -> Change:
        raw = entry.get("embedding", "")
        embedding = np.frombuffer(base64.b64decode(raw), dtype="<f4").astype(np.float32) if raw else None
        return cls(entry["item_id"], entry["op"], json.loads(entry.get("fields") or "{}"), embedding, change_id)


@dataclass
class ItemOverlay:
    """What the changes so far say about one item."""

    fields: dict[str, object] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    deleted: bool = False
    #: the base row no longer counts: inserted again after a delete, so it starts from ``DEFAULTS``
    replaces_base: bool = False


class Overlay:
    """The changes read so far, folded per item (pure; ``LiveCatalog`` feeds it from the stream)."""

    def __init__(self) -> None:
        self.items: dict[str, ItemOverlay] = {}
        self.changes = 0
        self.first_ts: float | None = None  # unix time of the oldest change (from its stream id)

    def apply(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self.changes += 1
            if change.change_id:  # the oldest of every stream's changes
                ts = int(change.change_id.split("-")[0]) / 1000.0
                self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            if change.op == "delete":
                self.items[change.item_id] = ItemOverlay(deleted=True)
                continue
            item = self.items.get(change.item_id)
            if item is None or item.deleted:
                item = ItemOverlay(replaces_base=item is not None)
                self.items[change.item_id] = item
            item.fields.update(change.fields)
            if change.embedding is not None:
                item.embedding = change.embedding

    def __len__(self) -> int:
        return len(self.items)


def overlay_text(fields: Mapping[str, object]) -> str:
    return item_text(str(fields.get("title", "")), str(fields.get("description", "")), str(fields.get("category", "")))


class OverlayLexical:
    """BM25 of the base rows, with a term-match score for the rows live changes added or re-texted.

    A changed item's score is the share of the query's terms its text contains. The base scores,
    which ``LexicalIndex.scores`` scales to 1 at the query's best base match, are scaled by that
    match's own share of the query's terms, so both are on one [0, 1] scale: a new item with every
    term of the query outranks an old one with a single term.
    """

    def __init__(
        self,
        base: LexicalIndex | None,
        n_rows: int,
        rows: np.ndarray,
        texts: Sequence[str],
        base_text: Callable[[int], str],
    ):
        self.base = base
        self.n_rows = n_rows
        self.rows = rows
        self.terms = [frozenset(tokens) for tokens in tokenize(texts)] if len(texts) else []
        self.base_text = base_text

    def scores(self, query: str, correct_typos: bool = True) -> np.ndarray | None:
        """As ``LexicalIndex.scores``; a query term the base corrects counts as corrected for the
        changed rows too, and one it does not know stays as typed (a new item may bring the word)."""
        base = self.base.scores(query, correct_typos) if self.base is not None else None
        typed = tokenize([query])[0]
        if correct_typos and self.base is not None:
            typed = [self.base.speller.correct(term) or term for term in typed]
        terms = set(typed)
        if not terms or not self.terms:
            if base is None:
                return None
            return np.concatenate([base, np.zeros(self.n_rows - len(base), dtype=np.float32)])
        out = np.zeros(self.n_rows, dtype=np.float32)
        if base is not None:
            best = set(tokenize([self.base_text(int(np.argmax(base)))])[0])
            out[: len(base)] = base * (len(terms & best) / len(terms))
        out[self.rows] = [len(terms & doc) / len(terms) for doc in self.terms]
        return out if float(out.max()) > 0 else None

    def matches(self, query: str, correct_typos: bool = True) -> SparseScores | None:
        """:meth:`scores` for the matching rows only (``LexicalIndex.matches``): the base's
        postings plus the changed rows' shares, never a score per catalog row."""
        base = self.base.matches(query, correct_typos) if self.base is not None else None
        typed = tokenize([query])[0]
        if correct_typos and self.base is not None:
            typed = [self.base.speller.correct(term) or term for term in typed]
        terms = set(typed)
        if not terms or not self.terms:
            return None if base is None else SparseScores(base.rows, base.values, self.n_rows)
        rows, values = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if base is not None:
            best = set(tokenize([self.base_text(int(base.rows[np.argmax(base.values)]))])[0])
            keep = ~np.isin(base.rows, self.rows)  # a changed row scores by its new text only
            rows = base.rows[keep]
            values = base.values[keep] * np.float32(len(terms & best) / len(terms))
        shares = np.array([len(terms & doc) / len(terms) for doc in self.terms], dtype=np.float32)
        rows, values = np.concatenate([rows, self.rows]), np.concatenate([values, shares])
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        if not len(values) or float(values.max()) <= 0:
            return None
        return SparseScores(rows, values, self.n_rows)


class OverlayLookups:
    """Ids → rows of a live index: the base lookups minus deleted rows, plus the appended items."""

    def __init__(
        self,
        base: ItemLookups,
        deleted: np.ndarray,
        appended: Mapping[str, int],
        categories: np.ndarray,
        recategorized: np.ndarray,
    ):
        self.base = base
        self.deleted = deleted  # bool per base row
        self.appended = dict(appended)
        self.categories = categories  # per row of the live index
        self.n_base = len(deleted)
        self.recategorized = recategorized  # base rows whose category a change set

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        rows = self.base.rows_of(item_ids)
        rows[rows >= 0] = np.where(self.deleted[rows[rows >= 0]], -1, rows[rows >= 0])
        if self.appended:
            for i in np.flatnonzero(rows < 0):
                rows[i] = self.appended.get(str(item_ids[i]), -1)
        return rows

    def category_mask(self, categories: Sequence[str]) -> np.ndarray:
        wanted = np.asarray(list(categories), dtype=str)
        mask = np.concatenate([self.base.category_mask(categories), np.isin(self.categories[self.n_base :], wanted)])
        mask[self.recategorized] = np.isin(self.categories[self.recategorized], wanted)
        return mask


def _with_rows(array: np.ndarray, n_new: int, fill: object) -> np.ndarray:
    """A writable copy of ``array`` with ``n_new`` rows of ``fill`` appended."""
    extra = np.full((n_new, *array.shape[1:]), fill, dtype=array.dtype)
    return np.concatenate([np.asarray(array), extra])


def _text_array(array: np.ndarray, values: Mapping[int, str], n_new: int) -> np.ndarray:
    """Strings with some rows replaced and ``n_new`` appended (widened to fit the longest)."""
    width = max([len(v) for v in values.values()] + [1])
    out = _with_rows(np.asarray(array).astype(f"<U{max(width, np.asarray(array).dtype.itemsize // 4, 1)}"), n_new, "")
    for row, value in values.items():
        out[row] = value
    return out


def live_index(base: CatalogIndex, overlay: Overlay) -> CatalogIndex:
    """The index ``rerank`` serves: ``base`` with every change of ``overlay`` applied (base untouched)."""
    if not overlay.items:
        return base
    n_base = len(base)
    ids = list(overlay.items)
    base_rows = base.lookups.rows_of(ids) if n_base else np.full(len(ids), -1, dtype=np.int64)
    appended = [item for item, row in zip(ids, base_rows) if row < 0 and not overlay.items[item].deleted]
    row_of = {item: int(row) for item, row in zip(ids, base_rows) if row >= 0}
    row_of.update({item: n_base + i for i, item in enumerate(appended)})
    n_new, n = len(appended), n_base + len(appended)

    created_at = _with_rows(np.asarray(base.created_at, dtype=np.float64), n_new, np.nan)
    popularity = _with_rows(np.asarray(base.popularity, dtype=np.float64), n_new, 0.0)
    in_stock = _with_rows(np.asarray(base.in_stock, dtype=bool), n_new, True)
    hidden = _with_rows(np.asarray(base.hidden, dtype=bool), n_new, False)
    embeddings = _with_rows(np.asarray(base.embeddings, dtype=np.float32), n_new, 0.0)
    deleted = np.zeros(n_base, dtype=bool)
    titles: dict[int, str] = {}
    categories: dict[int, str] = {}
    descriptions: dict[int, str] = {}
    texts: dict[int, str] = {}  # rows whose lexical text changed
    reembedded: list[int] = []
    schema = base.attributes.schema if base.attributes is not None else {}
    attribute_changes: dict[int, dict[str, object]] = {}  # row → the declared attributes its changes set
    for item, change in overlay.items.items():
        if item not in row_of:
            continue  # deleted before it was ever in the base
        row = row_of[item]
        if change.deleted:
            deleted[row], hidden[row] = True, True
            continue
        fields = dict(change.fields)
        if row >= n_base or change.replaces_base:
            fields = {**DEFAULTS, **dict.fromkeys(schema), **fields}  # attributes start missing
        if schema and schema.keys() & fields.keys():
            attribute_changes[row] = {name: fields[name] for name in schema.keys() & fields.keys()}
        if "title" in fields:
            titles[row] = str(fields["title"])
        if "category" in fields:
            categories[row] = str(fields["category"])
        if "description" in fields:
            descriptions[row] = str(fields["description"])
        for name, array in (("created_at", created_at), ("popularity", popularity)):
            if name in fields:
                array[row] = float(fields[name])  # type: ignore[arg-type]  # checked by check_item_change
        if "in_stock" in fields:
            in_stock[row] = bool(fields["in_stock"])
        if "hidden" in fields:
            hidden[row] = bool(fields["hidden"])
        if change.embedding is not None:
            embeddings[row] = change.embedding
            reembedded.append(row)
        if {"title", "description", "category"} & set(fields):
            texts[row] = ""  # filled below, once titles/descriptions/categories are merged
    item_ids = _text_array(base.item_ids, {n_base + i: item for i, item in enumerate(appended)}, n_new)
    title_array = _text_array(base.titles, titles, n_new)
    category_array = _text_array(base.categories, categories, n_new)
    old_descriptions = base.descriptions
    for row in texts:
        description = descriptions.get(row)
        if description is None:
            description = old_descriptions[row] if old_descriptions is not None and row < n_base else ""
        texts[row] = item_text(str(title_array[row]), description, str(category_array[row]))
    text_rows = np.array(sorted(texts), dtype=np.int64)
    all_descriptions = None
    if old_descriptions is not None or descriptions:
        kept = old_descriptions.tolist() if old_descriptions is not None else [""] * n_base
        all_descriptions = TextColumn.of([descriptions.get(r, kept[r] if r < n_base else "") for r in range(n)])

    log_popularity = None if base.log_popularity is None else _with_rows(base.log_popularity, n_new, 0.0)
    cooccurrence = base.cooccurrence
    if cooccurrence is not None and n_new:
        cooccurrence = Cooccurrence(
            _with_rows(cooccurrence.neighbors, n_new, -1), _with_rows(cooccurrence.weights, n_new, 0.0)
        )
    item_stats = None if base.item_stats is None else _with_rows(base.item_stats, n_new, np.nan)
    exact = np.union1d(np.arange(n_base, n, dtype=np.int64), np.asarray(reembedded, dtype=np.int64))
    return CatalogIndex(
        item_ids=item_ids,
        embeddings=embeddings,
        titles=title_array,
        categories=category_array,
        created_at=created_at,
        popularity=popularity,
        in_stock=in_stock,
        hidden=hidden,
        descriptions=all_descriptions,
        manifest={**base.manifest, "overlay": {"changes": overlay.changes, "items": len(overlay)}},
        lexical=OverlayLexical(  # type: ignore[arg-type]  # the one method ranking calls
            base.lexical,
            n,
            text_rows,
            [texts[r] for r in text_rows.tolist()],
            lambda row: item_text(
                str(base.titles[row]),
                old_descriptions[row] if old_descriptions is not None else "",
                str(base.categories[row]),
            ),
        )
        if base.lexical is not None or len(text_rows)
        else None,
        ann=base.ann,
        lookups=OverlayLookups(  # type: ignore[arg-type]  # the same two methods as ItemLookups
            base.lookups,
            deleted,
            {item: n_base + i for i, item in enumerate(appended)},
            category_array,
            np.array(sorted(r for r in categories if r < n_base), dtype=np.int64),
        ),
        log_popularity=log_popularity,
        cooccurrence=cooccurrence,
        user_encoder=base.user_encoder,
        hnsw=base.hnsw,
        exact_rows=exact if base.ann is not None or base.hnsw is not None else None,
        item_stats=item_stats,
        ranker=base.ranker,
        attributes=base.attributes.changed(n, attribute_changes) if base.attributes is not None else None,
    )


class CatalogChanges:
    """The change log in Redis: append (``catalog`` model) and read after marks (``rerank``)."""

    def __init__(self, redis_client: Any, spec: StateUrl | str | None = None):
        self.redis = redis_client
        self.spec = parse_state_url(spec or "redis://localhost") if not isinstance(spec, StateUrl) else spec
        self.url = self.spec.shown
        self.layout = KeyLayout.of(self.spec.shards, self.spec.cluster)
        self.writes = SlotWrites(redis_client, self.spec)

    def _unavailable(self, exc: Exception) -> StateUnavailable:
        return StateUnavailable(f"state store {self.url} unavailable: {type(exc).__name__}: {exc}")

    def start(self) -> Marks:
        """Marks before every change (a base index never compacted)."""
        return marks_of(None, self.layout)

    def states(self, item_ids: Sequence[str]) -> list[dict[str, object] | None]:
        """The merged fields of each item after its last change (None: never changed live)."""
        if not item_ids:
            return []
        by_shard: dict[int, list[str]] = {}
        for item in dict.fromkeys(item_ids):
            by_shard.setdefault(self.layout.item_shard(item), []).append(item)
        try:
            if len(by_shard) == 1:
                shard, items = next(iter(by_shard.items()))
                replies = [self.redis.hmget(self.layout.catalog_items(shard), items)]
            else:
                pipe = self.redis.pipeline(transaction=False)
                for shard, items in by_shard.items():
                    pipe.hmget(self.layout.catalog_items(shard), items)
                replies = pipe.execute()
        except store_errors() as exc:
            raise self._unavailable(exc) from exc
        found = {item: raw for items, reply in zip(by_shard.values(), replies) for item, raw in zip(items, reply)}
        return [None if found[i] is None else json.loads(found[i]) for i in item_ids]

    def append(self, changes: Sequence[Change], states: Sequence[Mapping[str, object]]) -> list[str]:
        """Log ``changes`` with each item's merged state; their stream ids.

        One script per shard: a shard's changes are logged all or none. Across shards a failure
        after some shards were logged raises ``StateUnavailable`` too; the caller's retry logs
        those again, which sets the same fields again (no change is lost, none half-applied).
        """
        if len(states) != len(changes):
            raise ValueError("one merged state per change")
        by_shard: dict[int, list[int]] = {}
        for i, change in enumerate(changes):
            by_shard.setdefault(self.layout.item_shard(change.item_id), []).append(i)
        calls = []
        for shard, indices in by_shard.items():
            args: list[object] = []
            for i in indices:
                entry = changes[i].to_stream()
                state = json.dumps(dict(states[i]), separators=(",", ":"), ensure_ascii=False)
                args += [entry["item_id"], entry["op"], entry["fields"], entry["embedding"], state]
            calls.append((APPEND_SCRIPT, [self.layout.catalog_stream(shard), self.layout.catalog_items(shard)], args))
        replies = self.writes.run_many(calls)
        ids = [""] * len(changes)
        for indices, reply in zip(by_shard.values(), replies):
            for i, change_id in zip(indices, reply):
                ids[i] = str(change_id)
        return ids

    def read_after(self, marks: Marks, count: int = 10_000) -> tuple[list[Change], Marks]:
        """Every change logged after ``marks`` (in order per stream, so per item), and the new marks."""
        try:
            read = read_streams(self.redis, dict(marks), count)
        except store_errors() as exc:
            raise self._unavailable(exc) from exc
        after = dict(marks)
        changes = []
        for stream, entries in read.items():
            changes += [Change.from_stream(entry_id, fields) for entry_id, fields in entries]
            if entries:
                after[stream] = entries[-1][0]
        return changes, after

    def trim_before(self, first_kept: Marks) -> int:
        """Delete each stream's changes logged before its ``first_kept`` id (a compacted base holds them)."""
        return sum(
            int(self.redis.xtrim(stream, minid=first, approximate=False)) for stream, first in first_kept.items()
        )


class LiveCatalog:
    """The index one ``rerank`` instance serves: its base plus the change log, polled in the background.

    ``index`` is replaced whole after each batch of new changes, so a request reads one consistent
    index (it takes the reference once). With the store down the last index keeps serving; the
    failure is logged once, and again when the store is back.
    """

    def __init__(
        self,
        base: CatalogIndex,
        changes: CatalogChanges | None,
        poll_s: float = 0.2,
        on_refresh: Callable[[int, int, float, float], None] | None = None,
    ):
        self.base = base
        self.index = base
        self.changes = changes
        self.on_refresh = on_refresh
        self.overlay = Overlay()
        layout = changes.layout if changes is not None else LEGACY
        self.marks = marks_of(base.manifest.get("overlay_through"), layout) if changes is not None else {}
        self.read_at = time.time()  # the last successful read of the log
        self.down = False
        self._poller = Poller(
            self.refresh, poll_s, "aisle-live-catalog", lambda: f"applying catalog changes after {self.marks}", LOG
        )

    def refresh(self) -> int:
        """Apply the changes logged since the last refresh; how many there were."""
        if self.changes is None:
            return 0
        try:
            new, marks = self.changes.read_after(self.marks)
        except StateUnavailable as exc:
            if not self.down:
                self.down = True
                LOG.warning("%s; serving the catalog as of changes %s until it is back", exc, self.marks)
            self._report(0)
            return 0
        self.read_at = time.time()
        if self.down:
            self.down = False
            LOG.warning("catalog change log is back at %s", self.changes.url)
        if new:
            self.overlay.apply(new)
            self.index = live_index(self.base, self.overlay)
            self.marks = marks
        self._report(len(new))
        return len(new)

    def _report(self, applied: int) -> None:
        if self.on_refresh is not None:
            now = time.time()
            self.on_refresh(applied, len(self.overlay), self.overlay_age_s(now), now - self.read_at)

    def start(self) -> LiveCatalog:
        """Refresh now, then every ``poll_s`` in a daemon thread until :meth:`stop`."""
        self.refresh()
        if self.changes is not None:
            self._poller.start()
        return self

    def stop(self) -> None:
        self._poller.stop()

    def overlay_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest change not yet compacted into the base (0: none)."""
        first = self.overlay.first_ts
        return 0.0 if first is None else max(0.0, (now or time.time()) - first)


def merge_state(current: Mapping[str, object] | None, change: Change) -> dict[str, object]:
    """An item's merged fields after ``change`` (what ``aisle:catalog:items`` keeps)."""
    if change.op == "delete":
        return {"deleted": True}
    base = {} if current is None or current.get("deleted") else dict(current)
    return {**base, **change.fields}


def needs_embedding(change: Change, known: bool) -> bool:
    """A new item, or a change of its title or description, is (re-)embedded."""
    return change.op == "upsert" and (not known or any(name in change.fields for name in TEXT_FIELDS))


class CatalogWriter:
    """What the ``catalog`` model does with one request's changes (Triton-free, unit-tested).

    Each change is checked against the item's current state — the change log's merged fields, or
    the base index's row for an item never changed live: an upsert of an item the catalog does not
    have (or has deleted) must bring a title, a delete must name an item the catalog has had.
    New items and title/description changes are embedded through ``embed`` (the item tower:
    ``embed_item`` inside Triton), then all changes are logged at once.
    """

    def __init__(self, changes: CatalogChanges, base: CatalogIndex | None, embed: Callable[[list[str]], np.ndarray]):
        self.changes = changes
        self.base = base
        self.embed = embed

    @property
    def attributes(self) -> dict[str, str]:
        """The catalog's declared item attributes (name → type), which changes may set."""
        if self.base is None or self.base.attributes is None:
            return {}
        return dict(self.base.attributes.schema)

    def base_state(self, item_id: str) -> dict[str, object] | None:
        """The base index's fields of ``item_id`` (None: not in it)."""
        if self.base is None or not len(self.base):
            return None
        row = int(self.base.rows_of([item_id])[0])
        if row < 0:
            return None
        b = self.base
        return {
            "title": str(b.titles[row]),
            "description": b.descriptions[row] if b.descriptions is not None else "",
            "category": str(b.categories[row]),
            "created_at": float(b.created_at[row]),
            "popularity": float(b.popularity[row]),
            "in_stock": bool(b.in_stock[row]),
            "hidden": bool(b.hidden[row]),  # type: ignore[index]  # set in __post_init__
            **(b.attributes.values(row) if b.attributes is not None else {}),
        }

    def write(self, changes: Sequence[Change]) -> list[str]:
        """Check, embed and log ``changes`` (in order); their change ids. ``InvalidInput`` names the row."""
        from .errors import InvalidInput

        ids = list(dict.fromkeys(c.item_id for c in changes))
        current = {
            item: state if state is not None else self.base_state(item)
            for item, state in zip(ids, self.changes.states(ids))
        }
        merged: list[dict[str, object]] = []
        texts: list[str] = []
        embed_rows: list[int] = []
        for b, change in enumerate(changes):
            state = current[change.item_id]
            known = state is not None and not state.get("deleted")
            if change.op == "delete" and state is None:
                raise InvalidInput("ITEM_ID", f"row {b}: the catalog has no item {change.item_id!r} to delete")
            if change.op == "upsert" and not known and "title" not in change.fields:
                again = " (it was deleted)" if state is not None else ""
                raise InvalidInput(
                    "TITLE", f"row {b}: {change.item_id!r} is a new item{again}: inserting it needs a title"
                )
            after = merge_state(state, change)
            if needs_embedding(change, known):
                embed_rows.append(b)
                texts.append(overlay_text(after))
            current[change.item_id] = after
            merged.append(after)
        logged = list(changes)
        if texts:
            vectors = np.asarray(self.embed(texts), dtype=np.float32)
            for b, vector in zip(embed_rows, vectors, strict=True):
                change = logged[b]
                logged[b] = Change(change.item_id, change.op, change.fields, vector)
        return self.changes.append(logged, merged)


__all__ = [
    "CHANGES_KEY",
    "ITEMS_KEY",
    "CatalogChanges",
    "CatalogWriter",
    "Change",
    "LiveCatalog",
    "Overlay",
    "live_index",
    "marks_of",
    "merge_state",
    "needs_embedding",
    "next_id",
    "through_of",
]
