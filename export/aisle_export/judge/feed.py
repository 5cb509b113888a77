"""``aisle evaluate --interactions FILE --catalog FILE``: judge the feed on a store's own log.

Honest by construction:

- **One global temporal cut** (``--cutoff`` or ``--cutoff-quantile``, :mod:`aisle_export.data.splits`):
  popularity, co-occurrence, training data and knob choices see nothing at or after it. Each test
  shopper active on both sides is scored on the next ≤ 10 *new* items it interacted with after the
  cut (items it already had are not predictions), given its last ≤ 50 before it, ``now`` = the cut.
- **Knobs are picked on a validation cut** inside the training period (the same construction on
  the training rows alone); the test period picks nothing.
- **The whole catalog is ranked** (no sampled negatives), and every Aisle row is
  ``aisle_server.ranking.rank`` itself over a ``CatalogIndex``, as served.
- **Baselines always in the table**: popularity of the training period, item-to-item
  co-occurrence (padded with popularity when a shopper has fewer neighbours than ``k``), the
  pretrained towers with the recency-weighted mean (content similarity only, the feed before
  multi-source candidates), and the baselines of the next-basket literature a data scientist would
  bring: GP-TopFreq (the shopper's own most frequent items), item-kNN on raw co-occurrence counts,
  and TIFU-KNN (Hu et al. 2020). GP-TopFreq and TIFU-KNN recommend repeats by design.
- **Three views of the same rankings**: every metric against the next ≤ 10 items *with* repeats
  (``all``), against only those the shopper had before the cut (``repeat``), and against the new
  items (``new``: the main table, as above). A shopper with no target in a view is left out of that
  view's mean; each view reports its shopper count.

Metrics per shopper, averaged: Recall@k, nDCG@k, HitRate@k, MRR (within the top ``max(k)``),
novelty (−log2 of the share of training shoppers who had the item), ILD@10 (in the pretrained item
space for every row), and catalog coverage (share of the catalog in anyone's top ``max(k)``).
Paired bootstrap intervals (shoppers resampled) compare rows. Output: ``<out>/<name>.md``,
``<name>.json`` and ``<name>.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from aisle_export.core.encoding import embed_catalog
from aisle_export.core.handoff import knobs_of, load_choice, stack_of
from aisle_export.data.splits import LogData, TemporalSplit
from aisle_export.index.log_signals import split_signals
from aisle_export.index.writing import served_index
from aisle_export.judge import metrics
from aisle_export.judge.statistics import bootstrap_delta, mean_interval
from aisle_server.index import CatalogIndex
from aisle_server.learned import USER_ENCODER_DIRNAME, LogSignals
from aisle_server.ranking import RankingConfig, RankRequest, cooccurrence_scores, rank
from aisle_server.user_encoder import UserEncoder

DEFAULT_KS = (10, 20)

Ranker = Callable[[str, int], list[str]]  # (user, k) → item ids, best first

#: The content-based feed this study measures (and the feed before multi-source candidates): no
#: popularity or co-occurrence candidates or scores, no user encoder.
CONTENT_ONLY = RankingConfig(
    feed_popularity_weight=0.0,
    cooccurrence_weight=0.0,
    popular_candidates=0,
    cooccurrence_candidates=0,
    user_encoder=False,
)


@dataclass(frozen=True)
class KnobGrid:
    """The (feed popularity weight, co-occurrence weight) pairs :func:`tune_feed` tries.

    The full grid is what ``aisle finetune`` and ``aisle evaluate`` search; a smaller one buys a
    quicker run (``aisle demo``, tests) at the price of coarser knobs.
    """

    popularity: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    cooccurrence: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)


# --------------------------------------------------------------------------- rankers


def feed_request(split: TemporalSplit, user: str, config: RankingConfig, k: int) -> RankRequest:
    history = split.histories[user]
    events = split.history_events.get(user, ())
    return RankRequest(
        None,
        [item for item, _ in history],
        np.array([t for _, t in history], dtype=np.float64),
        k,
        split.cutoff,
        config,
        history_events=events,
    )


def aisle_ranker(index: CatalogIndex, split: TemporalSplit, config: RankingConfig) -> Ranker:
    return lambda user, k: rank(index, feed_request(split, user, config, k)).item_ids


def popularity_ranker(index: CatalogIndex, split: TemporalSplit) -> Ranker:
    """The training period's most popular items the shopper has not had yet."""
    order = index.item_ids[index.popular_rows].tolist()

    def ranked(user: str, k: int) -> list[str]:
        seen = {item for item, _ in split.histories[user]}
        return [item for item in order[: k + len(seen)] if item not in seen][:k]

    return ranked


def cooccurrence_ranker(index: CatalogIndex, split: TemporalSplit) -> Ranker:
    """Item-to-item co-occurrence of the shopper's recent items (as the feed scores it), then popularity."""
    popular = popularity_ranker(index, split)

    def ranked(user: str, k: int) -> list[str]:
        request = feed_request(split, user, RankingConfig(), k)
        rows = index.rows_of(request.history_ids)
        known = rows >= 0
        scores = cooccurrence_scores(index, request, rows[known], known)
        top = np.zeros(0, dtype=np.int64)
        if scores is not None:
            scores[rows[known]] = 0.0
            top = np.flatnonzero(scores > 0)
            top = top[np.lexsort((top, -scores[top]))][:k]
        out = index.item_ids[top].tolist()
        return out + [item for item in popular(user, k + len(out)) if item not in set(out)][: k - len(out)]

    return ranked


def _popularity_fill(index: CatalogIndex, top: Sequence[int], k: int, skip: Sequence[int] = ()) -> list[str]:
    """``top`` (catalog rows, best first) then the training period's most popular rows not yet listed
    (nor in ``skip``), ``k`` items in all."""
    out = list(dict.fromkeys(int(row) for row in top))[:k]
    taken = set(out) | {int(row) for row in skip}
    for row in index.popular_rows[: k + len(taken)].tolist():
        if len(out) >= k:
            break
        if row not in taken:
            out.append(row)
            taken.add(row)
    return index.item_ids[np.asarray(out, dtype=np.int64)].tolist()


def _ordered(scores: np.ndarray, rows: np.ndarray, popularity_rank: np.ndarray) -> np.ndarray:
    """``rows`` with a positive score, best first; ties by training popularity."""
    rows = rows[scores[rows] > 0]
    return rows[np.lexsort((popularity_rank[rows], -scores[rows]))]


def _popularity_rank(index: CatalogIndex) -> np.ndarray:
    rank_of = np.empty(len(index), dtype=np.int64)
    rank_of[index.popular_rows] = np.arange(len(index))
    return rank_of


def _training_events(index: CatalogIndex, split: TemporalSplit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training period's (user, catalog row, timestamp) of the items the catalog has."""
    train = split.train
    rows = index.rows_of(train.item_id.tolist()) if len(train) else np.zeros(0, dtype=np.int64)
    known = rows >= 0
    return train.user_id[known], rows[known], np.asarray(train.timestamp, dtype=np.float64)[known]


def gp_topfreq_ranker(index: CatalogIndex, split: TemporalSplit) -> Ranker:
    """GP-TopFreq: the shopper's own most frequent items, then the training period's popularity.

    "Personal top frequency" plus "global popularity", the simple baseline that next-basket
    recommendation papers found hard to beat on grocery-like logs (Hu et al. 2020, TIFU-KNN;
    Li et al. 2023, "A Next Basket Recommendation Reality Check", where it is named
    G-TopFreq/P-TopFreq/GP-TopFreq). Counts are over the shopper's whole training-period history
    (not only the last 50), ties go to the most recently had item; the popularity fill skips items
    already listed. Repeats are the point: a shopper's own staples come first.
    """
    users, rows, times = _training_events(index, split)
    wanted = set(split.users)
    counts: dict[str, dict[int, list[float]]] = {}
    for user, row, t in zip(users.tolist(), rows.tolist(), times.tolist()):
        if user in wanted:
            tally = counts.setdefault(user, {}).setdefault(row, [0.0, t])
            tally[0] += 1
            tally[1] = max(tally[1], t)
    personal = {
        user: [row for row, _ in sorted(tally.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))]
        for user, tally in counts.items()
    }

    def ranked(user: str, k: int) -> list[str]:
        return _popularity_fill(index, personal.get(user, [])[:k], k)

    return ranked


def _user_item_matrix(index: CatalogIndex, split: TemporalSplit, binary: bool = True) -> sp.csr_matrix:
    users, rows, _ = _training_events(index, split)
    _, codes = np.unique(users, return_inverse=True)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float64), (codes, rows)), shape=(int(codes.max(initial=-1)) + 1, len(index))
    )
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


def item_knn_ranker(index: CatalogIndex, split: TemporalSplit, exclude_history: bool = True) -> Ranker:
    """Item-kNN on raw co-occurrence counts, then popularity.

    The textbook item-based collaborative filter (Sarwar et al. 2001; Deshpande & Karypis 2004)
    without its normalisation: ``C = XᵀX`` over the training period's binary shopper × item
    matrix (how many shoppers had both items, the diagonal zeroed), a candidate's score the sum of
    its counts with the shopper's (last ≤ 50) history items. Unnormalised counts favour popular
    items, which on many logs is a strength; against the cosine co-occurrence row this isolates the
    normalisation. With ``exclude_history`` (default, as the co-occurrence row) the shopper's own
    items are not recommended.
    """
    x = _user_item_matrix(index, split)
    counts = (x.T @ x).tocsr()
    counts.setdiag(0.0)
    counts.eliminate_zeros()
    popularity_rank = _popularity_rank(index)
    everything = np.arange(len(index))

    def ranked(user: str, k: int) -> list[str]:
        rows = index.rows_of([item for item, _ in split.histories[user]])
        rows = np.unique(rows[rows >= 0])
        scores = np.asarray(counts[rows].sum(axis=0)).ravel() if len(rows) else np.zeros(len(index))
        if exclude_history:
            scores[rows] = 0.0
        top = _ordered(scores, everything, popularity_rank)[:k]
        return _popularity_fill(index, top, k, rows if exclude_history else ())

    return ranked


@dataclass(frozen=True)
class TifuKnn:
    """TIFU-KNN's settings (Hu et al. 2020): defaults of the order the paper tuned, not tuned here.

    ``neighbours`` = k, ``alpha`` = the weight of the shopper's own vector, ``group_size`` = m
    baskets per group, ``within_group_decay`` = r_b (baskets inside a group), ``across_group_decay``
    = r_g (groups), ``basket_seconds``: events in the same window (a day) form one basket, ``None``
    groups equal timestamps only.
    """

    neighbours: int = 300
    alpha: float = 0.7
    group_size: int = 7
    within_group_decay: float = 0.9
    across_group_decay: float = 0.7
    basket_seconds: float | None = 86400.0


def tifu_vectors(
    index: CatalogIndex, split: TemporalSplit, settings: TifuKnn = TifuKnn()
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Every training shopper's time-decayed item-frequency vector (TIFU, Hu et al. 2020).

    Baskets (a shopper's events in one ``basket_seconds`` window) oldest → newest, cut into groups of
    ``group_size`` counted from the newest (the oldest group holds the remainder). A group's vector
    is the mean of its binary basket vectors, the j-th newest basket inside weighted
    ``within_group_decay**j``; the shopper's vector the mean of the group vectors, the j-th newest
    group weighted ``across_group_decay**j``. Returns the shoppers (sorted ids) and the vectors.
    """
    users, rows, times = _training_events(index, split)
    ids, codes = np.unique(users, return_inverse=True)
    window = times if settings.basket_seconds is None else np.floor(times / settings.basket_seconds)
    order = np.lexsort((window, codes))
    codes, rows, window = codes[order], rows[order], window[order]
    starts = np.r_[True, (codes[1:] != codes[:-1]) | (window[1:] != window[:-1])] if len(codes) else np.zeros(0, bool)
    basket = np.cumsum(starts) - 1
    basket_user = codes[starts]
    per_user = np.bincount(basket_user, minlength=len(ids))
    first = np.r_[0, np.cumsum(per_user)[:-1]]
    n = per_user[basket_user]
    from_end = n - 1 - (np.arange(len(basket_user)) - first[basket_user])
    m = settings.group_size
    group, inside = from_end // m, from_end % m
    groups = (n + m - 1) // m
    size = np.where(group == groups - 1, n - m * (groups - 1), m)
    weight = settings.within_group_decay**inside / size * settings.across_group_decay**group / groups
    baskets = sp.csr_matrix((np.ones(len(rows)), (basket, rows)), shape=(len(basket_user), len(index)))
    baskets.sum_duplicates()
    baskets.data[:] = 1.0
    to_user = sp.csr_matrix((weight, (basket_user, np.arange(len(basket_user)))), shape=(len(ids), len(basket_user)))
    return ids, (to_user @ baskets).tocsr()


def tifu_knn_ranker(
    index: CatalogIndex, split: TemporalSplit, settings: TifuKnn = TifuKnn(), chunk: int = 512
) -> Ranker:
    """TIFU-KNN (Hu et al. 2020, "Modeling Personalized Item Frequency Information for Next-basket
    Recommendation", SIGIR), then popularity.

    Prediction = ``alpha`` × the shopper's own decayed frequency vector (:func:`tifu_vectors`) +
    (1 − ``alpha``) × the mean vector of its ``neighbours`` most cosine-similar training shoppers.
    The paper's strongest result is that this simple model, which recommends what the shopper
    buys again plus what similar shoppers buy, beats the neural next-basket models; it recommends
    repeats by design. Vectorised: one sparse product per ``chunk`` of test shoppers.
    """
    ids, vectors = tifu_vectors(index, split, settings)
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
    unit = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ vectors
    position = {user: i for i, user in enumerate(ids.tolist())}
    test = [user for user in split.users if user in position]
    rows_of = np.array([position[user] for user in test], dtype=np.int64)
    k = min(settings.neighbours, len(ids) - 1)
    predictions = []
    for start in range(0, len(rows_of), chunk):
        mine = rows_of[start : start + chunk]
        own = vectors[mine]
        if k > 0 and settings.alpha < 1.0:
            similar = (unit[mine] @ unit.T).toarray()
            similar[np.arange(len(mine)), mine] = -np.inf  # not one's own neighbour
            nearest = np.argpartition(-similar, k - 1, axis=1)[:, :k]
            mean = sp.csr_matrix(
                (np.full(nearest.size, 1.0 / k), (np.repeat(np.arange(len(mine)), k), nearest.ravel())),
                shape=(len(mine), len(ids)),
            )
            own = settings.alpha * own + (1.0 - settings.alpha) * (mean @ vectors)
        predictions.append(sp.csr_matrix(own))
    predicted = sp.vstack(predictions).tocsr() if predictions else sp.csr_matrix((0, len(index)))
    line = {user: i for i, user in enumerate(test)}
    popularity_rank = _popularity_rank(index)

    def ranked(user: str, k: int) -> list[str]:
        if user not in line:
            return _popularity_fill(index, [], k)
        row = predicted.getrow(line[user])
        scores = np.zeros(len(index))
        scores[row.indices] = row.data
        return _popularity_fill(index, _ordered(scores, row.indices, popularity_rank)[:k], k)

    return ranked


# --------------------------------------------------------------------------- scoring


@dataclass
class Reference:
    """What the beyond-accuracy metrics measure against, the same for every row."""

    index: CatalogIndex  # pretrained item space (ILD)
    users_per_item: dict[str, int]
    n_users: int

    @classmethod
    def of(cls, index: CatalogIndex, split: TemporalSplit) -> Reference:
        pairs = set(zip(split.train.user_id.tolist(), split.train.item_id.tolist()))
        users_per_item: dict[str, int] = {}
        for _, item in pairs:
            users_per_item[item] = users_per_item.get(item, 0) + 1
        return cls(index, users_per_item, len({user for user, _ in pairs}))


ListMetric = Callable[[list[str]], float]  # one shopper's top 10 → a beyond-accuracy figure


def score(
    ranker: Ranker,
    split: TemporalSplit,
    reference: Reference,
    ks: Sequence[int] = DEFAULT_KS,
    beyond: bool = True,
    coverage_at: int | None = None,
    extra: Mapping[str, ListMetric] | None = None,
    targets: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Per-shopper metrics of one ranker (``per_user``), their means, and catalog coverage.

    The one scoring loop of every offline feed evaluation (this module's rows and the MovieLens
    content study alike): Recall, nDCG and HitRate at each of ``ks`` and MRR within the deepest;
    with ``beyond``, novelty and ILD of the top 10, ``extra`` figures of the top 10, and the share
    of the catalog in anyone's top ``coverage_at`` (default: the deepest ``k``). ``targets``: what
    each shopper is scored against (default the split's new items); a shopper without any is left
    out.
    """
    depth = max(ks)
    wanted = split.targets if targets is None else targets
    per_user: dict[str, list[float]] = {}
    shown: set[str] = set()
    for user in split.users:
        truth = list(wanted.get(user, ()))
        if not truth:
            continue
        ranked = ranker(user, depth)
        values = {"mrr": metrics.reciprocal_rank(ranked, truth, depth)}
        for k in ks:
            values |= {
                f"recall@{k}": metrics.recall_at_k(ranked, truth, k),
                f"ndcg@{k}": metrics.ndcg_at_k(ranked, truth, k),
                f"hit_rate@{k}": metrics.hit_rate_at_k(ranked, truth, k),
            }
        if beyond:
            top = ranked[:10]
            values["novelty@10"] = metrics.novelty(top, reference.users_per_item, reference.n_users)
            values["ild@10"] = metrics.intra_list_diversity(reference.index.embeddings[reference.index.rows_of(top)])
            values |= {name: metric(top) for name, metric in (extra or {}).items()}
            shown.update(ranked[: coverage_at or depth])
        for name, value in values.items():
            per_user.setdefault(name, []).append(value)
    result: dict = {name: float(np.mean(values)) for name, values in per_user.items()}
    if beyond:
        result["coverage"] = len(shown) / len(reference.index)
    result["per_user"] = per_user
    return result


VIEWS = ("all", "repeat", "new")


def view_targets(split: TemporalSplit) -> dict[str, Mapping[str, Sequence[str]]]:
    """Each shopper's targets in the three views: the next ≤ 10 items with repeats (``all``), those
    of them the shopper had before the cut (``repeat``), and the new items (``new``, the split's
    ``targets``)."""
    return {"all": split.next_items, "repeat": split.repeat_targets, "new": split.targets}


def score_views(
    ranker: Ranker, split: TemporalSplit, reference: Reference, ks: Sequence[int] = DEFAULT_KS, **kwargs
) -> dict:
    """:func:`score` on the new items (the row's own keys, unchanged) plus ``views``: the accuracy
    means and the shopper count of each view, the same rankings scored against each target set."""
    depth = max(ks)
    lists = {user: ranker(user, depth) for user in split.users}

    def cached(user: str, k: int) -> list[str]:
        return lists[user][:k]

    result = score(cached, split, reference, ks, **kwargs)
    result["views"] = {}
    for view, targets in view_targets(split).items():
        scored = score(cached, split, reference, ks, beyond=False, targets=targets)
        users = len(scored["per_user"].get("mrr", []))
        result["views"][view] = {"users": users, **{k: v for k, v in scored.items() if k != "per_user"}}
    return result


# --------------------------------------------------------------------------- tuning


class Tuning(NamedTuple):
    """What :func:`tune_feed` chose: the knobs, a JSON log of the grid, and the chosen knobs'
    per-shopper values on the cut (for comparing whole stacks on the same shoppers)."""

    config: RankingConfig
    log: dict
    per_user: list[float]


def tune_feed(
    index: CatalogIndex,
    split: TemporalSplit,
    base: RankingConfig,
    metric: str = "ndcg@10",
    progress: bool = True,
    desc: str = "tuning on validation",
    grid: KnobGrid = KnobGrid(),
) -> Tuning:
    """The (feed popularity weight, co-occurrence weight) for ``base``, judged on ``split``.

    ``split`` is a validation cut: the caller never passes the test period. The best pair on
    ``metric`` replaces ``base``'s own pair only when the paired bootstrap over the cut's shoppers
    puts its gain above zero (95% interval): on a cut of a hundred shoppers the best of 36
    settings is mostly the luckiest, and a default that measured as well is kept rather than
    swapped for noise. Ties go to the earlier (smaller) weights.
    """
    reference = Reference.of(index, split)
    pairs = [(p, c) for p in grid.popularity for c in (grid.cooccurrence if index.cooccurrence is not None else (0.0,))]
    own = (base.feed_popularity_weight, base.cooccurrence_weight)
    if own not in pairs:
        pairs.insert(0, own)
    per_user: dict[tuple[float, float], list[float]] = {}
    for p, c in tqdm(pairs, desc=desc, unit="setting", disable=not progress):
        config = replace(base, feed_popularity_weight=p, cooccurrence_weight=c)
        per_user[(p, c)] = score(aisle_ranker(index, split, config), split, reference, (10,), beyond=False)["per_user"][
            metric
        ]
    means = {pair: float(np.mean(values)) for pair, values in per_user.items()}
    best = max(pairs, key=lambda pair: (round(means[pair], 12), -pairs.index(pair)))
    gain = bootstrap_delta(per_user[own], per_user[best])
    chosen = best if gain["ci95"][0] > 0 else own
    return Tuning(
        replace(base, feed_popularity_weight=chosen[0], cooccurrence_weight=chosen[1]),
        {
            "metric": metric,
            "grid": {f"{p:g},{c:g}": value for (p, c), value in means.items()},
            "default": list(own),
            "best": list(best),
            "best_vs_default": gain,
            "kept_default": chosen == own,
            "feed_popularity_weight": chosen[0],
            "cooccurrence_weight": chosen[1],
        },
        per_user[chosen],
    )


# --------------------------------------------------------------------------- report


def compare(rows: list[dict], baseline_names: Sequence[str], ks: Sequence[int]) -> list[dict]:
    """Paired bootstrap of every row against each baseline row, on nDCG@min(k) and HitRate@max(k)."""
    by_name = {row["name"]: row for row in rows}
    keys = (f"ndcg@{min(ks)}", f"hit_rate@{max(ks)}")
    out = []
    for row in rows:
        for base in baseline_names:
            if base == row["name"] or base not in by_name:
                continue
            out.append(
                {
                    "row": row["name"],
                    "vs": base,
                    **{key: bootstrap_delta(by_name[base]["per_user"][key], row["per_user"][key]) for key in keys},
                }
            )
    return out


COLUMNS = ("recall@{k}", "ndcg@{k}", "hit_rate@{k}")


def render_markdown(report: dict) -> str:
    ks = report["ks"]
    columns = [c.format(k=k) for k in ks for c in COLUMNS] + ["mrr", "coverage", "novelty@10", "ild@10"]
    test = report["data"]["test"]
    cut = time.strftime("%Y-%m-%d %H:%M", time.gmtime(test["cutoff"]))
    lines = [
        f"## {report['title']}",
        "",
        f"Temporal cut {cut} UTC: {test['train_interactions']} training interactions, {test['test_users']} test "
        f"shoppers, {test['test_targets']} held-out new items, {report['data']['catalog_items']} catalog items "
        "ranked (whole catalog). Knobs picked on the validation cut "
        f"({report['data']['validation']['test_users']} shoppers) only.",
        "",
        "| row | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for row in report["rows"]:
        lines.append(f"| {row['name']} | " + " | ".join(f"{row.get(c, float('nan')):.4f}" for c in columns) + " |")
    lines += (
        [
            "",
            "Paired bootstrap (shoppers, 2000 resamples), 95% interval:",
            "",
            "| row | vs | Δ" + " | Δ".join(k for k in report["comparisons"][0] if "@" in k) + " |",
            "| --- | --- | ---: | ---: |",
        ]
        if report["comparisons"]
        else []
    )
    for c in report["comparisons"]:
        cells = [f"{d['delta']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" for k, d in c.items() if "@" in k]
        lines.append(f"| {c['row']} | {c['vs']} | " + " | ".join(cells) + " |")
    lines += _view_tables(report)
    lines += ["", "Chosen on validation: " + json.dumps(report["chosen"], sort_keys=True), ""]
    return "\n".join(lines) + "\n"


VIEW_TITLES = {
    "all": "All next items (the next ≤ 10 after the cut, repeats count)",
    "repeat": "Repeat items only (those of the next items the shopper had before the cut)",
    "new": "New items only (the main table's targets)",
}


def _view_tables(report: dict) -> list[str]:
    """One table per view of the rows that carry ``views`` (accuracy only)."""
    rows = [row for row in report["rows"] if "views" in row]
    if not rows:
        return []
    ks = report["ks"]
    columns = [c.format(k=k) for k in ks for c in COLUMNS] + ["mrr"]
    lines: list[str] = []
    for view in VIEWS:
        users = rows[0]["views"][view]["users"]
        lines += [
            "",
            f"### {VIEW_TITLES[view]}: {users} shoppers",
            "",
            "| row | " + " | ".join(columns) + " |",
            "| --- |" + " ---: |" * len(columns),
        ]
        for row in rows:
            scored = row["views"][view]
            lines.append(
                f"| {row['name']} | " + " | ".join(f"{scored.get(c, float('nan')):.4f}" for c in columns) + " |"
            )
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = report["ks"]
    keys = (f"ndcg@{min(ks)}", f"hit_rate@{max(ks)}")
    rows = report["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2), dpi=120)
    for ax, key in zip(axes, keys):
        means = [row[key] for row in rows]
        errors = np.array([row["ci95"][key] for row in rows]).T
        ax.barh(range(len(rows)), means, xerr=np.abs(errors - means), color="#4c72b0", capsize=3)
        ax.set_yticks(range(len(rows)), [row["name"] for row in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{key}, 95% interval")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(report["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    rows: list[dict],
    data: LogData,
    chosen: dict,
    ks: Sequence[int],
    title: str,
    out_dir: Path,
    name: str,
    baselines: Sequence[str],
    extra: dict | None = None,
) -> dict:
    """Markdown, JSON (without per-shopper values) and PNG of the rows."""
    for row in rows:
        row["ci95"] = {key: mean_interval(row["per_user"][key]) for key in (f"ndcg@{min(ks)}", f"hit_rate@{max(ks)}")}
    report = {
        "title": title,
        "ks": list(ks),
        "data": data.summary(),
        "chosen": chosen,
        "rows": rows,
        "comparisons": compare(rows, baselines, ks),
        **(extra or {}),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(report, out_dir / f"{name}.png")
    public = {**report, "rows": [{k: v for k, v in row.items() if k != "per_user"} for row in rows]}
    (out_dir / f"{name}.json").write_text(json.dumps(public, indent=2, default=_json_default) + "\n")
    (out_dir / f"{name}.md").write_text(render_markdown(public))
    return public


def _json_default(value: object) -> object:
    if isinstance(value, RankingConfig):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# --------------------------------------------------------------------------- the whole evaluation


def evaluate_log(
    data: LogData,
    out_dir: Path,
    finetuned: Path | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    name: str = "eval_log",
    title: str = "Feed on a store's log",
    progress: bool = True,
    grid: KnobGrid = KnobGrid(),
) -> dict:
    """Baselines, Aisle out of the box, and (with ``finetuned``) the trained models, on the test cut."""

    started = time.perf_counter()
    texts = data.catalog.texts()
    pretrained = embed_catalog(texts, None, progress, "embedding items (pretrained)")
    signals = split_signals(data.split, source="training period")
    index = served_index(data.catalog, pretrained, signals)
    reference = Reference.of(index, data.split)
    default_no_encoder = RankingConfig(user_encoder=False)
    tuned, tuning, _ = tune_feed(
        served_index(data.catalog, pretrained, split_signals(data.valid)),
        data.valid,
        default_no_encoder,
        progress=progress,
        desc="knobs, pretrained (validation)",
        grid=grid,
    )
    rows_spec: list[tuple[str, Ranker]] = [
        ("popularity (training period)", popularity_ranker(index, data.split)),
        ("co-occurrence (item-item cosine, then popularity)", cooccurrence_ranker(index, data.split)),
        ("GP-TopFreq (own most frequent items, then popularity)", gp_topfreq_ranker(index, data.split)),
        ("item-kNN (raw co-occurrence counts, then popularity)", item_knn_ranker(index, data.split)),
        ("TIFU-KNN (decayed own frequency + neighbours)", tifu_knn_ranker(index, data.split)),
        ("pretrained + mean, content only (the feed before)", aisle_ranker(index, data.split, CONTENT_ONLY)),
        (
            "Aisle default, no training (pretrained + mean + log signals)",
            aisle_ranker(index, data.split, RankingConfig()),
        ),
        (
            "Aisle default, repeats allowed (exclude_history=False)",
            aisle_ranker(index, data.split, RankingConfig(exclude_history=False)),
        ),
        ("pretrained + mean + log signals, knobs tuned", aisle_ranker(index, data.split, tuned)),
    ]
    chosen: dict = {
        "pretrained": {
            "feed_popularity_weight": tuned.feed_popularity_weight,
            "cooccurrence_weight": tuned.cooccurrence_weight,
            "validation": tuning,
        }
    }
    served = (index, RankingConfig(), "Aisle default")
    baselines = [rows_spec[0][0], rows_spec[1][0]]
    if finetuned is not None:
        trained, served = finetuned_rows(data, Path(finetuned), signals, index, progress)
        rows_spec += trained

        chosen["finetuned"] = load_choice(Path(finetuned))
        baselines.append(trained[0][0])  # the trained towers with the recency mean
    rows_spec += source_ablations(data.split, *served)
    rows = []
    for label, ranker in tqdm(rows_spec, desc="scoring rows on test", unit="row", disable=not progress):
        rows.append({"name": label, **score_views(ranker, data.split, reference, ks)})
    return write_report(
        rows, data, chosen, ks, title, out_dir, name, baselines, {"seconds": round(time.perf_counter() - started, 1)}
    )


def finetuned_rows(
    data: LogData, finetuned: Path, signals: LogSignals, pretrained: CatalogIndex, progress: bool
) -> tuple[list[tuple[str, Ranker]], tuple[CatalogIndex, RankingConfig, str]]:
    """The trained towers with the recency mean and with the user encoder, each with the knobs
    ``aisle finetune`` picked; the stack it chose to serve; and that stack (index, knobs, label)."""

    report = json.loads((finetuned / "finetune_report.json").read_text())
    towers = "pretrained towers" if "pretrained" in report.get("towers", {}) else "fine-tuned"
    embeddings = embed_catalog(data.catalog.texts(), finetuned / "item_tower", progress, f"embedding items ({towers})")
    plain = served_index(data.catalog, embeddings, signals)
    stacks = {
        "pretrained": (pretrained, "pretrained + mean + log signals"),
        "mean": (plain, f"{towers} + mean + log signals"),
        "user_encoder": (
            replace(plain, user_encoder=UserEncoder.load(finetuned / USER_ENCODER_DIRNAME)),
            f"{towers} + user encoder + log signals",
        ),
    }
    choice = load_choice(finetuned)
    served = stack_of(choice)
    rows = [
        (label, aisle_ranker(index, data.split, knobs_of(choice, name)))
        for name, (index, label) in stacks.items()
        if name != "pretrained"
    ]
    index, label = stacks[served]
    knobs = knobs_of(choice, served)
    served_label = "served after aisle finetune"
    rows.append((f"{served_label} (validation chose {label})", aisle_ranker(index, data.split, knobs)))
    return rows, (index, knobs, served_label)


def against_popularity(data: LogData, ranker: Ranker, k: int = 10) -> dict:
    """``ranker``'s nDCG@k on the test cut against the training period's popularity, paired over the
    same shoppers (e.g. the served feed through a running server: did learning earn its place?)."""
    split = data.split
    no_vectors = np.zeros((len(data.catalog), 1), dtype=np.float32)  # popularity reads no embedding
    index = served_index(data.catalog, no_vectors, split_signals(split, source="training period"))
    reference = Reference.of(index, split)
    per_user = {
        name: score(ranked, split, reference, (k,), beyond=False)["per_user"][f"ndcg@{k}"]
        for name, ranked in (("ranker", ranker), ("popularity", popularity_ranker(index, split)))
    }
    gain = bootstrap_delta(per_user["popularity"], per_user["ranker"])
    return {
        "metric": f"ndcg@{k} (test cut, {len(split.users)} shoppers)",
        **{name: float(np.mean(values)) for name, values in per_user.items()},
        "gain": gain,
        "beats_popularity": gain["ci95"][0] > 0,
    }


def source_ablations(
    split: TemporalSplit, index: CatalogIndex, config: RankingConfig, label: str
) -> list[tuple[str, Ranker]]:
    """The served feed with one candidate source off at a time: what each source adds."""
    return [
        (f"{label}, without popular candidates", aisle_ranker(index, split, replace(config, popular_candidates=0))),
        (
            f"{label}, without co-occurrence candidates",
            aisle_ranker(index, split, replace(config, cooccurrence_candidates=0)),
        ),
    ]
