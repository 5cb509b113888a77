"""Retrieve and rank catalog items for one request: plain numpy, no Triton.

The stage turns a request (query embedding and/or a shopper's recent history) into an *interest*
vector, retrieves the best candidates, adds item-level priors, drops what must not be shown and
picks the top ``k`` with optional diversification.

1. Interest.
   - Search (query, no history): the query embedding.
   - Feed (history, no query): the learned user encoder's vector (``aisle_server.user_encoder``,
     a causal transformer over the recent items, their event types and time gaps) when the
     repository has one, else the recency-weighted mean of the history items' embeddings, weight
     ``exp(-ln2 · age / recency_half_life_s)``: a minute ago counts more than last week.
   - Both: ``query_weight · query + (1 − query_weight) · session``, renormalized.
   - Neither (or only unknown history ids): a popularity prior plus freshness, so a cold visitor
     still gets a sensible page instead of an error.
2. Filters: out of stock, the history itself (``exclude_history``), explicit ``exclude_ids``,
   category allow/deny lists.
3. Candidates: the ``candidates`` best allowed items by inner product (exact, or faiss IVF for
   large catalogs), plus — for a text query — the ``candidates`` best by BM25, plus — for a feed —
   the ``popular_candidates`` most popular items and the ``cooccurrence_candidates`` best
   co-occurrence neighbours of the history (multi-source recall: embedding neighbours alone never
   surface the popular items that most shoppers buy next).
4. Score: relevance + ``freshness_weight`` · freshness(created_at) + popularity weight · prior
   (``popularity_weight`` with a text query, ``feed_popularity_weight`` without) + for feeds
   ``cooccurrence_weight`` · co-occurrence score scaled to [0, 1] per request, where relevance is
   the dense cosine plus ``lexical_weight`` × BM25 scaled to [0, 1] per query (``search_mode``
   hybrid, the default), the cosine alone (dense) or BM25 alone (lexical). Each term is computed
   once, in ``aisle_server.scoring``; this module sums them and ``aisle_server.explain`` reports them.
5. Merchandising rules (``RankRequest.rules``, ``aisle_server.merchandising``): filters, boosts
   and buries, pins, slots and exploration, applied to the scored candidates.
6. Pick ``k``: by score, or MMR/DPP with strength ``diversity`` (``aisle_server.diversity``),
   with an optional per-category cap.

Every knob has a default in the model config (``RankingConfig``) and the overridable ones
(``OVERRIDABLE``) can be set per request. Ties are broken by catalog row, so the same request
always gets the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from aisle_contract import OVERRIDABLE, SEARCH_MODES, RankingConfig  # noqa: F401 - re-exported: the server's names for them

from . import explain, merchandising, scoring
from .diversity import diversify
from .errors import InvalidInput
from .features import HAND_RANK, FeedContext, feature_rows
from .index import CatalogIndex
from .ranker import LearnedRanker
from .row_filter import RowFilter
from .scoring import LN2, ScoreTerms, decay, freshness  # noqa: F401 - re-exported: callers import them from here
from .sparse_scores import SparseScores

#: The graph's neighbours re-scored with the float32 vectors, as a multiple of the candidates
#: wanted (:func:`dense_scored`); the smallest that kept the graph's candidate recall@200 of
#: re-scoring all ``ef_search`` of them (``perf.bench_rerank_engines``).
RESCORE_FACTOR = 1.25
#: :func:`_top_positions` sorts this many rows or fewer whole (one ``lexsort``); past it, a partition
#: first keeps the sort to the ``n`` best (a catalog-wide scan's scores).
SORT_ALL_ROWS = 2048


@dataclass(frozen=True)
class RankRequest:
    """One row of a ``rerank`` request, already validated."""

    query_embedding: np.ndarray | None  # None when the query is empty
    history_ids: Sequence[str]
    history_ts: np.ndarray
    k: int
    now: float
    config: RankingConfig = field(default_factory=RankingConfig)  # defaults + this request's overrides
    query_text: str = ""  # for the lexical half of hybrid search
    exclude_ids: Sequence[str] = ()
    allow_categories: Sequence[str] = ()
    deny_categories: Sequence[str] = ()
    history_events: Sequence[str] = ()  # event type per history item ("" = unknown), or none at all
    #: per history item, a factor on its recency weight (events read from the state store weigh by
    #: their type: ``aisle_contract.DEFAULT_EVENT_WEIGHTS``); None: all 1
    history_weights: np.ndarray | None = None
    explain: bool = False  # also return each result's score components (``aisle_server.explain``)
    #: the merchandising rule set in force for this request (``aisle_server.rules.RuleSet``); None: none
    rules: Any = None


@dataclass(frozen=True)
class RankResult:
    item_ids: list[str]
    scores: np.ndarray  # float32, in result order (relevance + priors)
    unknown_history: int
    interest: np.ndarray | None = None  # the vector the request was ranked with; None: the cold fallback
    #: with ``RankRequest.explain``: float64 [k, len(SCORE_COMPONENT_NAMES)], summing to ``scores``
    components: np.ndarray | None = None
    #: with ``RankRequest.explain``: each result's position by score alone, before diversification
    pre_diversity_rank: np.ndarray | None = None
    #: with ``RankRequest.explain`` on a feed the learned ranker ordered: float64 [k, F + 1], each
    #: feature's tree-SHAP contribution and the bias (``aisle_contract.RANKER_FEATURE_NAMES``),
    #: summing to ``scores``; ``components`` are then NaN (no hand-weighted terms make that score)
    feature_contributions: np.ndarray | None = None
    #: with ``RankRequest.explain``: per result, what each merchandising rule did to it
    rule_effects: list[list[dict[str, object]]] | None = None
    #: per result, the ``explore`` rule that placed it (``""``: ranked); None: no rule acted
    explored: list[str] | None = None


def with_overrides(config: RankingConfig, overrides: Mapping[str, object]) -> RankingConfig:
    """``config`` with a request's overrides applied and validated (``InvalidInput`` names the knob)."""
    if not overrides:
        return config
    updated = replace(config, **overrides)
    try:
        updated.validate()
    except ValueError as exc:
        name = str(exc).split("=", 1)[0]
        raise InvalidInput(name.upper(), str(exc)) from None
    return updated


def _normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def recency_weights(age_s: np.ndarray, half_life_s: float, factors: np.ndarray | None = None) -> np.ndarray:
    """``decay`` weights (times ``factors``) summing to 1 (what ``aisle finetune`` trains the towers with)."""
    weights = decay(np.asarray(age_s, dtype=np.float64), half_life_s)
    if factors is not None:
        weights = weights * np.asarray(factors, dtype=np.float64)
    if float(weights.sum()) <= 0.0:  # every item infinitely old: fall back to a plain mean
        weights = np.ones_like(weights)
    return weights / weights.sum()


def session_interest(
    embeddings: np.ndarray,
    history_ts: np.ndarray,
    now: float,
    half_life_s: float,
    factors: np.ndarray | None = None,
) -> np.ndarray:
    """Recency-weighted (times ``factors``, e.g. event-type weights) mean of history embeddings, L2-normalized."""
    weights = recency_weights(now - history_ts, half_life_s, factors)
    return _normalize((weights[:, None] * embeddings).sum(axis=0))


def fallback_scores(index: CatalogIndex, config: RankingConfig, now: float) -> np.ndarray:
    """Popularity prior in [0, 1] plus weighted freshness, for cold requests (``scoring.fallback_terms``)."""
    return scoring.fallback_terms(index, config, now).total()


#: How deep :func:`fallback_candidates` first reads the two orders, as a multiple of the rows wanted
#: (at least :data:`FALLBACK_MIN_DEPTH`); each further pass reads four times deeper.
FALLBACK_DEPTH_FACTOR = 4
FALLBACK_MIN_DEPTH = 1024


def fallback_candidates(index: CatalogIndex, config: RankingConfig, now: float, allowed: Any, n: int) -> ScoreTerms:
    """The fallback's terms (``scoring.fallback_terms``) of the ``n`` best allowed rows by its score
    (:func:`fallback_scores`), best first, ties by row — the rows a scan of the whole catalog would
    keep, without that scan.

    The score is a sum of two parts that each fall along an order the index keeps: the popularity
    prior along :attr:`CatalogIndex.popular_rows`, freshness along :attr:`CatalogIndex.newest_rows`.
    Reading both orders to a depth and scoring what they hold, no row further down either can score
    more than the prior at that depth plus the weighted freshness at that depth (the threshold
    algorithm, Fagin, Lotem and Naor 2001); once the ``n``-th best score read is above that bound,
    the answer is exact. Heavy filters read deeper; at the catalog's end it is the whole scan.
    ``exact_retrieval`` scans the whole catalog, as before.
    """
    total = len(index)
    if config.exact_retrieval:
        terms = scoring.fallback_terms(index, config, now)  # every row: position = row
        return terms.take(_top(terms.total(), np.flatnonzero(allowed), n))
    depth = min(total, max(FALLBACK_DEPTH_FACTOR * n, FALLBACK_MIN_DEPTH))
    while True:
        rows = np.union1d(index.popular_rows[:depth], index.newest_rows[:depth])
        terms = scoring.fallback_terms(index, config, now, rows[allowed[rows]])
        rows, scores = terms.rows, terms.total()
        best = _top_positions(scores, rows, n)
        if depth >= total:
            return terms.take(best)
        if len(best) >= n:
            edge = np.array([index.newest_rows[depth - 1]])
            bound = (
                config.fallback_freshness_weight * freshness(index, edge, now, config.freshness_half_life_s)[0]
                + index.popularity_prior[index.popular_rows[depth - 1]]
            )
            nth = scores[best[-1]]
            # An unread row scoring the bound exactly has the edge's prior, so it comes after the edge in
            # the popularity order (ties by row): it ties the n-th and loses on row if the n-th row is lower.
            if nth > bound or (nth == bound and rows[best[-1]] <= index.popular_rows[depth - 1]):
                return terms.take(best)
        depth = min(total, depth * FALLBACK_DEPTH_FACTOR)


def _top(scores: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best of ``rows`` by ``scores[rows]``, best first, ties broken by row (deterministic)."""
    return rows[_top_positions(scores[rows], rows, n)]


def _top_of(scores: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """:func:`_top` with ``scores`` aligned to ``rows`` (not indexed by row): no catalog-wide array."""
    return rows[_top_positions(scores, rows, n)]


def _top_positions(scores: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Positions in ``rows`` (and ``scores``) of :func:`_top_of`'s rows, in its order.

    Rows tied with the ``n``-th score are cut by row too, not by where a partial sort left them:
    the same ``n`` rows however many more rows were scored (what lets a path that scores fewer rows,
    such as :func:`fallback_candidates`, return the page of one that scores them all)."""
    if len(rows) <= SORT_ALL_ROWS:  # a few hundred candidates: one sort costs less than partitioning first
        return np.lexsort((rows, -scores))[:n]
    positions = np.arange(len(rows))
    if len(rows) > n:
        nth = scores[np.argpartition(-scores, n - 1)[n - 1]]
        above, tied = np.flatnonzero(scores > nth), np.flatnonzero(scores == nth)
        wanted = n - len(above)
        if len(tied) > wanted:
            tied = tied[np.argpartition(rows[tied], wanted - 1)[:wanted]]
        positions = np.concatenate([above, tied])
    return positions[np.lexsort((rows[positions], -scores[positions]))]


def allowed_mask(index: CatalogIndex, request: RankRequest, history_rows: np.ndarray) -> Any:
    """The request's filters (``aisle_server.row_filter``): asked per candidate row, or with
    ``exact_retrieval`` the whole-catalog mask, as the exact scan has always used it."""
    excluded = index.rows_of(request.exclude_ids)
    excluded = excluded[excluded >= 0]
    if request.config.exclude_history:  # don't recommend back what the shopper just interacted with
        excluded = np.concatenate([excluded, np.asarray(history_rows, dtype=np.int64)])
    allowed = RowFilter(
        index.available,
        index.categories,
        excluded,
        request.allow_categories,
        request.deny_categories,
        index.category_mask,
    )
    return np.asarray(allowed) if request.config.exact_retrieval else allowed


def _engines(index: CatalogIndex, config: RankingConfig) -> bool:
    """Whether candidates come from the top-k engines (not the exact scan of every item)."""
    return not config.exact_retrieval


def dense_scored(
    index: CatalogIndex,
    interest: np.ndarray,
    allowed: Any,
    n: int,
    exact_scores: np.ndarray | None = None,
    engines: bool = True,
    graph_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(The ``n`` best allowed rows by inner product, best first; their float32 inner products
    when the graph's re-scoring computed them, else None.)

    The graph's neighbours (and the rows live changes added or re-embedded, which it has not seen)
    are re-scored exactly and the ``n`` best kept: the exact scan's candidates wherever the graph
    found them. Only the first :data:`RESCORE_FACTOR` × ``n`` neighbours (best first by the
    graph's 8-bit scores) are re-scored: gathering a row's float32 vector costs more than its
    product, and the rows further down no longer change which ``n`` are kept.

    The ANN index over-fetches and drops what filters remove; if that leaves fewer than ``n``
    (heavy filters), the exact scan answers — correctness over speed. ``exact_scores``
    is that scan (``embeddings @ interest``) when :func:`rank_many` already ran it for a batch;
    ``graph_rows``, the graph's search for this request when :func:`rank_groups` ran it for a batch.
    """
    if engines and index.hnsw is not None and exact_scores is None:
        query = interest.astype(np.float32, copy=False)
        rows = graph_rows if graph_rows is not None else index.hnsw.search(query, n, allowed.__getitem__)
        if len(rows) >= n:
            rows = rows[: math.ceil(RESCORE_FACTOR * n)]
            if index.exact_rows is not None and len(index.exact_rows):  # live changes the graph has not seen
                extra = index.exact_rows[allowed[index.exact_rows]]
                rows = np.union1d(rows, extra)
            scores = np.asarray(index.vectors(rows) @ query, dtype=np.float32)
            best = _top_positions(scores, rows, n)
            return rows[best], scores[best]
    elif index.ann is not None:
        rows = index.ann.search(interest, n, allowed)
        if len(rows) >= n:
            if index.exact_rows is not None and len(index.exact_rows):  # live changes the ANN has not seen
                extra = index.exact_rows[allowed[index.exact_rows]]
                extra_scores = np.asarray(index.vectors(extra) @ interest, dtype=np.float32)
                rows = np.union1d(rows, extra[np.argsort(-extra_scores, kind="stable")[:n]])
            return rows, None
    if exact_scores is None:  # float32 like the catalog: a float64 interest would copy the catalog up (10× slower)
        exact_scores = np.asarray(index.embeddings @ interest.astype(np.float32, copy=False), dtype=np.float32)
    return _top(exact_scores, np.flatnonzero(allowed), n), None


def search_relevance(
    index: CatalogIndex,
    request: RankRequest,
    interest: np.ndarray | None,
    allowed: np.ndarray,
    exact_scores: np.ndarray | None = None,
    graph_rows: np.ndarray | None = None,
) -> ScoreTerms:
    """Candidate rows and their relevance terms (dense, lexical or hybrid), in no particular order
    (``graph_rows``: the graph's search, when :func:`rank_groups` ran it for a batch)."""
    config = request.config
    n = max(config.candidates, request.k)
    engines = _engines(index, config)
    lexical: Any = None
    known: tuple[np.ndarray, np.ndarray] | None = None
    if request.query_text.strip() and index.lexical is not None and config.search_mode != "dense":
        if engines:  # the postings of the query's terms only (``LexicalIndex.matches``)
            lexical = index.lexical.matches(request.query_text, config.typo_tolerance)
        else:
            lexical = index.lexical.scores(request.query_text, config.typo_tolerance)
    if config.search_mode == "lexical" and lexical is not None:
        rows = lexical.best(n, allowed, pad=True) if engines else _top(lexical, np.flatnonzero(allowed), n)
    else:
        assert interest is not None, "dense or hybrid retrieval needs an interest vector"
        rows, dense = dense_scored(index, interest, allowed, n, exact_scores, engines, graph_rows)
        # the graph's re-scored products serve as those rows' cosines where they are the same float32
        # product (a float64 interest, a feed's history mean, is scored in float64: scoring.cosine)
        if dense is not None and interest.dtype == np.float32:
            known = (rows, dense)
        if lexical is not None:
            best = lexical.best(n, allowed) if engines else _top(lexical, np.flatnonzero(allowed & (lexical > 0)), n)
            rows = np.union1d(rows, best)
    return scoring.relevance_terms(index, rows, interest, lexical, config, exact_scores, known)


def interest_vector(
    index: CatalogIndex,
    request: RankRequest,
    history_rows: np.ndarray,
    known: np.ndarray,
    session: np.ndarray | None = None,
) -> np.ndarray | None:
    """The request's interest; ``session`` is the history's vector when the user encoder made it."""
    return interest_parts(index, request, history_rows, known, session)[0]


def interest_parts(
    index: CatalogIndex,
    request: RankRequest,
    history_rows: np.ndarray,
    known: np.ndarray,
    session: np.ndarray | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(interest, query_part)``: :func:`interest_vector` and the query's share of it (None: no query);
    ``interest − query_part`` is the history's share (what explanations split a cosine by)."""
    config = request.config
    interest = None
    query_part = None
    if len(history_rows):
        interest = (
            session
            if session is not None
            else session_interest(
                np.asarray(index.vectors(history_rows), dtype=np.float32),
                request.history_ts[known],
                request.now,
                config.recency_half_life_s,
                None if request.history_weights is None else request.history_weights[known],
            )
        )
    if request.query_embedding is not None:
        query = _normalize(np.asarray(request.query_embedding, dtype=np.float32))
        if interest is None:
            interest = query_part = query
        else:
            mixed = config.query_weight * query + (1.0 - config.query_weight) * interest
            norm = float(np.linalg.norm(mixed)) or 1.0  # _normalize's rule: a zero vector stays zero
            interest, query_part = _normalize(mixed), config.query_weight * query / norm
    return interest, query_part


def encode_users(
    index: CatalogIndex,
    requests: Sequence[RankRequest],
    history_rows: Sequence[np.ndarray],
    known: Sequence[np.ndarray],
) -> dict[int, np.ndarray]:
    """User-encoder vectors of the requests that have known history and allow it, in one batched call."""
    encoder = index.user_encoder
    if encoder is None:
        return {}
    batch = [
        i for i, (request, rows) in enumerate(zip(requests, history_rows)) if len(rows) and request.config.user_encoder
    ]
    if not batch:
        return {}
    keep = encoder.max_len
    vectors = encoder.encode(
        [np.asarray(index.vectors(history_rows[i][-keep:]), dtype=np.float32) for i in batch],
        [np.asarray(requests[i].history_ts, dtype=np.float64)[known[i]][-keep:] for i in batch],
        [
            encoder.event_ids([e for e, k in zip(requests[i].history_events, known[i]) if k][-keep:])
            if len(requests[i].history_events)
            else None
            for i in batch
        ],
        [requests[i].now for i in batch],
    )
    return dict(zip(batch, vectors))


def cooccurrence_scores(
    index: CatalogIndex, request: RankRequest, history_rows: np.ndarray, known: np.ndarray
) -> np.ndarray | None:
    """A feed's co-occurrence score per catalog row in [0, 1] (recency-weighted over its history)."""
    return _scaled(cooccurrence_raw(index, request, history_rows, known))


def cooccurrence_raw(
    index: CatalogIndex, request: RankRequest, history_rows: np.ndarray, known: np.ndarray, sparse: bool = False
) -> np.ndarray | None:
    """:func:`cooccurrence_scores` before the scaling to [0, 1] (None where it has none); ``sparse``:
    held for the history's neighbours only (``SparseScores``, read like the array)."""
    config = request.config
    if (
        index.cooccurrence is None
        or not len(history_rows)
        or request.query_embedding is not None
        or not (config.cooccurrence_weight or config.cooccurrence_candidates)
    ):
        return None
    if sparse:  # the history's neighbours only
        return index.cooccurrence.matches(history_rows, history_recency(request, known))  # type: ignore[return-value]  # read like the array
    return index.cooccurrence.scores(history_rows, history_recency(request, known))


def _scaled(raw: np.ndarray | None) -> np.ndarray | None:
    top = float(raw.max()) if raw is not None and len(raw) else 0.0
    return raw / top if raw is not None and top > 0 else None


def history_recency(request: RankRequest, known: np.ndarray) -> np.ndarray:
    """The known history's recency weights (times its event weights), summing to 1."""
    factors = None if request.history_weights is None else request.history_weights[known]
    return recency_weights(request.now - request.history_ts[known], request.config.recency_half_life_s, factors)


#: Scores held at once by :func:`rank_many`'s batched scan (8M float32 = 32 MiB), so a large
#: catalog served without an ANN index does not allocate batch × N floats.
SCAN_BLOCK_SCORES = 8_000_000


@dataclass(frozen=True)
class _Prepared:
    known: np.ndarray  # per history id: found in the catalog
    allowed: np.ndarray
    interest: np.ndarray | None  # None: no query and no known history (the fallback)
    cooccurrence: np.ndarray | None = None  # feeds with learned log signals: score per row in [0, 1]
    query_part: np.ndarray | None = None  # the query's share of ``interest`` (None: no query)
    history_rows: np.ndarray | None = None  # the known history's rows, oldest → newest
    cooccurrence_raw: np.ndarray | None = None  # ``cooccurrence`` before scaling
    graph_rows: np.ndarray | None = None  # the graph's search, run for the batch (:func:`_graph_searched`)


def _prepare_many(index: CatalogIndex, requests: Sequence[RankRequest]) -> list[_Prepared]:
    found = [index.rows_of(request.history_ids) for request in requests]
    known = [history >= 0 for history in found]
    rows = [history[k] for history, k in zip(found, known)]
    sessions = encode_users(index, requests, rows, known)
    parts = [
        interest_parts(index, request, r, k, sessions.get(i))
        for i, (request, r, k) in enumerate(zip(requests, rows, known))
    ]
    prepared = []
    for (request, r, k), (interest, query_part) in zip(zip(requests, rows, known), parts):
        raw = cooccurrence_raw(index, request, r, k, sparse=_engines(index, request.config))
        prepared.append(_Prepared(k, allowed_mask(index, request, r), interest, _scaled(raw), query_part, r, raw))
    return prepared


def rank(index: CatalogIndex, request: RankRequest) -> RankResult:
    """The ``request.k`` best items for one request."""
    return _finish(index, request, _prepare_many(index, [request])[0])


def rank_many(index: CatalogIndex, requests: Sequence[RankRequest]) -> list[RankResult]:
    """:func:`rank` for each request, with one matrix product for every exact catalog scan.

    Without an ANN index each request scores the whole catalog; that scan reads every embedding
    once per request (memory-bound), so a batch of B requests does it as one (B, d) × (d, N)
    product instead — what makes a micro-batched request cheaper per row than single calls.
    """
    return rank_groups(index, [requests])[0]


def rank_groups(index: CatalogIndex, groups: Sequence[Sequence[RankRequest]]) -> list[list[RankResult]]:
    """:func:`rank_many` for each group (the rows of one ``rerank`` request of a dynamic batch), each
    answered as if it ran alone: what is batched per group (the user encoder, the exact scan's
    matrix product, whose float sums depend on the rows beside them) stays within the group, while
    the graph's searches — the same walk in a batch or alone — run as one faiss call for all."""
    requests, prepared, exact = _prepared_groups(index, groups)
    results = [_finish(index, request, p, exact.get(i)) for i, (request, p) in enumerate(zip(requests, prepared))]
    out, start = [], 0
    for group in groups:
        out.append(results[start : start + len(group)])
        start += len(group)
    return out


def _prepared_groups(
    index: CatalogIndex, groups: Sequence[Sequence[RankRequest]]
) -> tuple[list[RankRequest], list[_Prepared], dict[int, np.ndarray]]:
    """The requests of ``groups`` in order, each prepared, and the exact scans of those that run
    one (by position): prepared and scanned group by group, then the graph searched for all (see
    :func:`rank_groups`)."""
    requests = [request for group in groups for request in group]
    prepared: list[_Prepared] = []
    exact: dict[int, np.ndarray] = {}
    for group in groups:
        offset = len(prepared)
        prepared += _prepare_many(index, group)
        exact.update({offset + i: scores for i, scores in _exact_scans(index, group, prepared[offset:]).items()})
    return requests, _graph_searched(index, requests, prepared), exact


def _exact_scans(
    index: CatalogIndex, requests: Sequence[RankRequest], prepared: Sequence[_Prepared]
) -> dict[int, np.ndarray]:
    """The exact catalog scans of the requests that run one (by position), as one matrix product
    per block of them; none for a lone scan (:func:`dense_scored` runs it)."""
    scans = [i for i, (request, p) in enumerate(zip(requests, prepared)) if _scans_catalog(index, request, p)]
    exact: dict[int, np.ndarray] = {}
    if len(scans) > 1:
        block = max(1, SCAN_BLOCK_SCORES // max(1, len(index)))  # bounds the (rows, N) score matrix
        for start in range(0, len(scans), block):
            rows = scans[start : start + block]
            interests = np.stack([prepared[i].interest for i in rows]).astype(np.float32, copy=False)
            scores = np.asarray(interests @ np.asarray(index.embeddings).T, dtype=np.float32)
            exact.update({i: scores[j] for j, i in enumerate(rows)})
    return exact


def _graph_searched(index: CatalogIndex, requests: Sequence[RankRequest], prepared: list[_Prepared]) -> list[_Prepared]:
    """``prepared`` with the graph's search of every request whose dense candidates come from it,
    run as one faiss call per candidate count (``HnswIndex.search_many``): a dynamic batch's walks
    less the per-call overhead. A request in ``search_mode=lexical`` is left to search later, if
    its query finds no term."""
    if index.hnsw is None:
        return prepared
    wanted: dict[int, list[int]] = {}
    for i, (request, p) in enumerate(zip(requests, prepared)):
        if p.interest is not None and _engines(index, request.config) and request.config.search_mode != "lexical":
            wanted.setdefault(max(request.config.candidates, request.k), []).append(i)
    prepared = list(prepared)
    for n, rows in wanted.items():
        vectors = np.stack([prepared[i].interest for i in rows]).astype(np.float32, copy=False)
        found = index.hnsw.search_many(vectors, n, [prepared[i].allowed.__getitem__ for i in rows])
        for i, graph_rows in zip(rows, found):
            prepared[i] = replace(prepared[i], graph_rows=graph_rows)
    return prepared


def _scans_catalog(index: CatalogIndex, request: RankRequest, prepared: _Prepared) -> bool:
    """Whether :func:`dense_scored` will run the exact scan for this request."""
    lexical_only = (
        request.config.search_mode == "lexical" and index.lexical is not None and bool(request.query_text.strip())
    )
    engine = index.ann is not None or (index.hnsw is not None and _engines(index, request.config))
    return prepared.interest is not None and not engine and not lexical_only


def _finish(
    index: CatalogIndex, request: RankRequest, prepared: _Prepared, exact_scores: np.ndarray | None = None
) -> RankResult:
    config = request.config
    known, allowed, interest = prepared.known, prepared.allowed, prepared.interest

    # ``terms``: the additive score terms of the rows scored (``aisle_server.scoring``); their sum
    # orders, diversifies and is returned. ``order``: the candidates' positions in ``terms``, best first.
    # With a learned ranker (a feed), its score of the candidates' features replaces that sum.
    ranker = features = None
    if interest is None:  # the cold fallback's candidates, best first
        terms = fallback_candidates(index, config, request.now, allowed, max(config.candidates, request.k))
        scores = terms.total()
        order = np.arange(len(terms.rows))
    else:
        terms, scores, features = _scored(index, request, prepared, exact_scores)
        ranker = index.ranker if features is not None else None
        if ranker is not None:
            scores = reranked(ranker, features)
        order = np.lexsort((terms.rows, -scores))  # best first, ties by row
    candidates, candidate_scores = terms.rows[order], scores[order]

    merch = None
    if request.rules is not None:  # the one place merchandising rules act: scored candidates in, page out
        merch = merchandising.apply(
            index,
            request.rules,
            merchandising.rules.context_of(bool(request.query_text.strip()), config.surface, config.segment),
            request.k,
            request.now,
            allowed,
            lambda rows: _pinned_terms(index, config, request.now, interest, rows),
            terms,
            scores,
            order,
            lambda rows, row_scores, n: _pick(index, config, rows, row_scores, n),
        )
    if merch is None:
        picked = _pick(index, config, candidates, candidate_scores, request.k)
    else:
        terms, order, picked = merch.terms, merch.order, merch.picked
        candidates, candidate_scores = terms.rows[order], merch.scores[order]
    top = candidates[picked]
    positions = order[np.asarray(picked, dtype=np.int64)]  # the page's places in ``terms``
    explored = None if merch is None else merch.outcome.explored_by(positions)
    components = ranks = effects = None
    contributions = None
    if request.explain:  # off by default: nothing of this runs
        rule_delta = None if merch is None else merch.delta[positions]
        if ranker is not None:  # the ranker's exact per-feature parts, summing to its score
            contributions = np.full((len(positions), features.shape[1] + 1), np.nan)
            featured = positions < len(features)  # a pinned item retrieval did not bring has no features
            scored = np.zeros(len(positions), dtype=bool)
            scored[featured] = ranker.reranks(features[positions[featured]])  # past its depth: no parts
            contributions[scored] = ranker.contributions(features[positions[scored]])
            components = np.full((len(positions), len(explain.SCORE_COMPONENT_NAMES)), np.nan)
            if rule_delta is not None:  # what the rules added on top of the ranker's score
                components[:, explain.RULES] = rule_delta
        else:
            picked_terms = terms.take(positions)  # the very terms summed above
            components = explain.score_components(index, picked_terms, interest, prepared.query_part, rule_delta)
        ranks = np.asarray(picked, dtype=np.int32)
        effects = [[] for _ in positions] if merch is None else merch.effects_of(positions)
    return RankResult(
        item_ids=[str(item_id) for item_id in index.item_ids[top].tolist()],  # one gather from the mapped ids
        scores=np.asarray(candidate_scores[picked], dtype=np.float32),
        unknown_history=int((~known).sum()),
        interest=interest,
        components=components,
        pre_diversity_rank=ranks,
        feature_contributions=contributions,
        rule_effects=effects,
        explored=explored,
    )


def _pinned_terms(
    index: CatalogIndex, config: RankingConfig, now: float, interest: np.ndarray | None, rows: np.ndarray
) -> ScoreTerms:
    """The terms of pinned ``rows`` retrieval did not bring: their cosine alone, or in the cold
    fallback (no interest) the fallback's own terms."""
    if interest is None:
        return scoring.fallback_terms(index, config, now, rows)
    return ScoreTerms(rows, cosine=scoring.cosine(index, rows, interest))


def _pick(index: CatalogIndex, config: RankingConfig, candidates: np.ndarray, scores: np.ndarray, k: int) -> Any:
    """The page of ``k`` of ``candidates`` (best first): indices into them, by score or diversified."""
    return diversify(
        config.diversity_method,
        scores,
        # the candidates' vectors only matter to MMR/DPP: no gather at diversity 0
        np.asarray(index.vectors(candidates), dtype=np.float32) if config.diversity > 0 else np.empty((0, 0)),
        k,
        config.diversity,
        index.categories[candidates] if config.category_cap else None,
        config.category_cap or None,
    )


def reranked(ranker: LearnedRanker, features: np.ndarray) -> np.ndarray:
    """The scores of the candidates whose feature rows are ``features``, with the learned ranker:
    its score for the ones it reranks (the hand-weighted top ``ranker.depth`` and the buy-again
    ones, ``LearnedRanker.reranks``), and below all of those, in hand-weighted order, the rest
    (``min − 1 − position``). That order is their ``hand_rank`` feature, already sorted once: the
    ranks are distinct, 0 … n − 1, so inverting them gives it without another sort."""
    n = len(features)
    head = ranker.reranks(features)
    head_scores = ranker.score(features[head])
    scores = np.empty(n)
    scores[head] = head_scores
    by_hand = np.empty(n, dtype=np.int64)
    by_hand[features[:, HAND_RANK].astype(np.int64)] = np.arange(n)
    rest = by_hand[~head[by_hand]]  # the rows the ranker does not score, in hand-weighted order
    floor = float(head_scores.min()) - 1.0 if len(head_scores) else 0.0
    scores[rest] = floor - np.arange(len(rest))
    return scores


def popular_candidates(index: CatalogIndex, allowed: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` most popular allowed rows with any popularity at all."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    order = index.popular_rows
    head = order[: 4 * n]
    head = head[allowed[head]]
    if len(head) < n:  # heavy filters: walk the whole order
        head = order[allowed[order]]
    head = head[:n]
    return head[index.popularity_prior[head] > 0]


def _feed_sources(
    index: CatalogIndex, request: RankRequest, prepared: _Prepared, terms: ScoreTerms
) -> tuple[ScoreTerms, dict[str, np.ndarray]]:
    """A feed's embedding candidates joined with popular, co-occurring and (when history may show)
    buy-again items, all scored alike (their cosine here; their priors by ``scoring.prior_terms``);
    and the rows each source recalled (``aisle_server.features.SOURCES``)."""
    config = request.config
    sources = {"dense": terms.rows, "popular": popular_candidates(index, prepared.allowed, config.popular_candidates)}
    cooccurrence = prepared.cooccurrence
    if cooccurrence is not None and config.cooccurrence_candidates:
        # the history's neighbours; the filters asked of them only
        scored = cooccurrence.positive() if isinstance(cooccurrence, SparseScores) else np.flatnonzero(cooccurrence > 0)
        sources["cooccurrence"] = _top(cooccurrence, scored[prepared.allowed[scored]], config.cooccurrence_candidates)
    history = prepared.history_rows
    if history is not None and len(history) and not config.exclude_history:
        # the buy-again source: the shopper's own items (all of them allowed, or none, by exclude_history)
        sources["history"] = np.unique(history[prepared.allowed[history]])
    extra = [rows for name, rows in sources.items() if name != "dense"]
    new = np.setdiff1d(np.concatenate(extra), terms.rows) if extra else np.zeros(0, dtype=np.int64)
    assert prepared.interest is not None, "a feed's candidates are scored against its interest"
    return (terms.extend(new, scoring.cosine(index, new, prepared.interest)) if len(new) else terms), sources


def _scored(
    index: CatalogIndex,
    request: RankRequest,
    prepared: _Prepared,
    exact_scores: np.ndarray | None = None,
    want_features: bool = False,
) -> tuple[ScoreTerms, np.ndarray, np.ndarray | None]:
    """A request with an interest vector: its candidates' terms, their hand-weighted scores, and
    (a feed, with a learned ranker served and allowed, or ``want_features``) their ranker
    features (else None)."""
    config = request.config
    interest = prepared.interest
    assert interest is not None, "scored candidates need an interest vector"
    terms = search_relevance(index, request, interest, prepared.allowed, exact_scores, prepared.graph_rows)
    feed = request.query_embedding is None
    sources: dict[str, np.ndarray] = {}
    if feed:
        terms, sources = _feed_sources(index, request, prepared, terms)
    terms = scoring.prior_terms(index, terms, config, request.now, feed, prepared.cooccurrence)
    scores = terms.total()
    ranked = index.ranker is not None and config.learned_ranker
    if not (feed and (want_features or ranked)):
        return terms, scores, None
    # serving, only the rows the ranker scores get every column; training (no ranker yet) gets them all
    depth = index.ranker.depth if ranked and index.ranker is not None else None
    return terms, scores, _features(index, request, prepared, terms, scores, sources, depth)


def _features(
    index: CatalogIndex,
    request: RankRequest,
    prepared: _Prepared,
    terms: ScoreTerms,
    scores: np.ndarray,
    sources: dict[str, np.ndarray],
    depth: int | None,
) -> np.ndarray:
    history = prepared.history_rows if prepared.history_rows is not None else np.zeros(0, dtype=np.int64)
    context = FeedContext(
        history,
        np.asarray(request.history_ts, dtype=np.float64)[prepared.known],
        history_recency(request, prepared.known) if len(history) else np.zeros(0),
        request.now,
        prepared.cooccurrence_raw,
    )
    return feature_rows(index, context, terms.rows, terms.term("cosine"), prepared.cooccurrence, scores, sources, depth)


def candidate_features(index: CatalogIndex, request: RankRequest) -> tuple[np.ndarray, np.ndarray] | None:
    """A feed's candidate rows and their ranker features, exactly as ``rerank`` computes them
    (what ``aisle finetune`` trains the ranker on); None for a request without an interest vector
    (no known history: the cold fallback, which the ranker does not order)."""
    return candidate_features_many(index, [request])[0]


def candidate_features_many(
    index: CatalogIndex, requests: Sequence[RankRequest]
) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """:func:`candidate_features` for each request, prepared as :func:`rank_many` prepares a batch:
    the exact catalog scans as one matrix product (over a large catalog, one memory-bound pass per
    shopper is most of the cost of building a window's training rows)."""
    requests, prepared, exact = _prepared_groups(index, [requests])
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    for i, (request, p) in enumerate(zip(requests, prepared)):
        if p.interest is None or request.query_embedding is not None:
            out.append(None)
            continue
        terms, _, features = _scored(index, request, p, exact.get(i), want_features=True)
        assert features is not None
        out.append((terms.rows, features))
    return out


def validate_k(k: int, config: RankingConfig, catalog_size: int) -> int:
    limit = min(config.max_k, catalog_size)
    if not 1 <= k <= limit:
        raise InvalidInput(
            "K", f"k={k} must be between 1 and {limit} (max_k={config.max_k}, catalog has {catalog_size} items)"
        )
    return k
