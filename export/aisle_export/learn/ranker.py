"""The learned second stage: a LightGBM LambdaMART ranker trained on the store's own log.

What it learns from: **rolling temporal windows** of the period it may see. At each of several
cuts (quantiles of the period's timestamps, :attr:`RankerConfig.train_cuts`) the log before the
cut gives the popularity, co-occurrence and item statistics (``split_signals``) and each shopper's
last ≤ 50 items; the shopper's feed is built exactly as ``rerank`` builds it
(``aisle_server.ranking.candidate_features``: the candidate union, buy-again included, and its
``aisle_server.features`` rows), and a candidate is relevant when it is among the shopper's next
≤ 10 items after the cut, repeats included; only the candidates the served ranker scores are
rows (``aisle_server.ranker.DEPTH``). Later cuts inside the period
(:attr:`RankerConfig.stop_cuts`) early-stop the boosting. The score may only rise with the
hand-weighted stack's own score and fall with its rank (:attr:`RankerConfig.monotone`). A feed
served with history hidden can get its own model (:attr:`RankerConfig.hidden_model`): trained
on feeds built as they are served then (no buy-again source), a candidate relevant when it is
among the next items new to the shopper — the buy-again model spends its trees on repeats that
such a feed never shows (off by default: measured worse, see the field).

**It must earn its place** (:func:`finetune_step`): a ranker trained on the windows before the
validation cut orders the validation shoppers' feeds, once with their history hidden and once
with it shown (the buy-again source). History is shown only when that gains on nDCG@10 over all
next items with a paired 95% bootstrap interval above zero — a measured per-store choice. The
ranker is then served only when its gain over the hand-weighted stack (the knobs it is trained
with, history hidden as served today) on all next items has a paired 95% interval above zero —
and, when it shows history, its gain over the hand-weighted stack showing history too
(:func:`gate`); otherwise nothing is written and the hand-weighted stack stays. The served model is trained again the same way on the
whole period given (the validation period included). The gate may judge at several cuts
(:attr:`RankerConfig.gate_cuts`), each with a ranker trained only on the windows before it, pooling
the shopper-cut pairs with a bootstrap over shoppers: one cut of a small log has too few shoppers
to show a gain, and a single cut can be a lucky period.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from aisle_contract import RankingConfig
from aisle_export.core.memory import release_memory
from aisle_export.data.catalog import Catalog
from aisle_export.data.interactions import Interactions
from aisle_export.data.splits import MAX_HISTORY, N_TARGETS, LogData, TemporalSplit, temporal_split
from aisle_export.index.log_signals import split_signals
from aisle_export.index.writing import served_index
from aisle_export.judge.feed import Reference, score
from aisle_export.judge.rankers import aisle_ranker, batched_aisle_ranker, feed_request
from aisle_export.judge.statistics import bootstrap_delta
from aisle_server.features import FEATURE_NAMES
from aisle_server.index import CatalogIndex
from aisle_server.learned import RANKER_DIRNAME
from aisle_server.ranker import BASE_WEIGHT, DEPTH, HAND_SCORE, LearnedRanker, reranked_rows
from aisle_server.ranking import candidate_features_many

METRIC = "ndcg@10"
#: Shoppers prepared together when a window's rows are built and when a gate ranks its feeds, over
#: a catalog of at least :data:`BLOCKED_FROM_ITEMS`: one matrix product scans the catalog for all of
#: them (``rank_many``), and 64 keeps a block's per-shopper arrays (a co-occurrence and a filter per
#: catalog row each) well under 100 MB over a 100,000-item catalog.
BLOCK = 64
#: Below this many items a shopper's catalog scan is cheap, and each feed is prepared alone, exactly
#: as ``rerank`` serves a lone request: a block's matrix product rounds the scores' last bits
#: differently, which can swap near-tied candidates (on MovieLens-100K, 5 of 107 shoppers' unions).
BLOCKED_FROM_ITEMS = 20_000


def block_size(index: CatalogIndex) -> int:
    """How many shoppers are prepared together over ``index`` (:data:`BLOCK` or one)."""
    return BLOCK if len(index) >= BLOCKED_FROM_ITEMS else 1


#: LightGBM objectives whose raw score orders the feed (the compiled trees serve raw scores)
OBJECTIVES = ("lambdarank", "rank_xendcg")


@dataclass(frozen=True)
class RankerConfig:
    """Windows and LightGBM settings. Defaults: five training cuts and two early-stopping cuts, at
    quantiles of the period's timestamps; a small learning rate with early stopping."""

    train_cuts: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)
    stop_cuts: tuple[float, ...] = (0.85, 0.9)
    #: the most boosting rounds (trees) early stopping may keep: a serving-cost bound, since every
    #: tree is walked for each scored candidate of every feed. 100: the largest of 300/150/100 whose
    #: served cost stayed within issue #25's 1 ms (``perf.bench_ranker_served``); on both logs here
    #: the validation cut scored it level with 150 and nothing served changed (docs/results.md,
    #: "A tree cap")
    rounds: int = 100
    early_stopping: int = 50
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    #: the candidates the served ranker scores (``aisle_server.ranker.DEPTH``): training rows are exactly those
    depth: int = DEPTH
    #: True: a feed served with history hidden is ordered by a model trained on feeds without it,
    #: labelled by the new items; False: the buy-again model orders both. Off: on MovieLens-100K's
    #: validation cut it ordered hidden feeds worse (nDCG@10 0.0418 vs 0.0616, docs/results.md)
    hidden_model: bool = False
    #: where the gate judges (:func:`gate_splits`): quantiles of the period given, each a cut with a
    #: ranker trained only on the windows before it; the shopper-cut pairs of all of them are pooled
    #: (bootstrap over shoppers). (0.8,): the validation cut alone
    gate_cuts: tuple[float, ...] = (0.8,)
    #: a window's training weight is ``window_decay`` ** (windows after it): below 1, recent windows count more
    window_decay: float = 1.0
    #: True: a relevant candidate's label is how often the shopper has it in the rest of the period
    #: (1 … 3); False: 1
    graded: bool = False
    #: > 0: the boosting starts from the hand-weighted order instead of from nothing (LightGBM's
    #: ``init_score``: ``base_weight`` × ``hand_score``, with ``base_weight`` = this / the median
    #: within-feed standard deviation of ``hand_score`` in the training rows), so the trees learn a
    #: correction to the stack and early stopping keeps the stack where no correction helps; 0: the
    #: trees alone (the ``hand_score`` and ``hand_rank`` features still carry it)
    base_strength: float = 0.0
    #: features the trees may not split on (their training columns are blanked): e.g. the ones that
    #: grow with the log's length (``events_all``, ``buyers``, ``first_seen_days``), whose values
    #: at the training windows' cuts and at serving time differ in scale, not in meaning
    ignored_features: tuple[str, ...] = ()
    #: LightGBM's ``monotone_constraints`` by feature name: +1, the score may only rise with the
    #: feature, all else equal; -1, only fall. Default: the hand-weighted stack's own score and
    #: place, so that a candidate the stack puts higher never loses for that alone; the trees still
    #: reorder by every other feature. Unconstrained, the trees learned bumps in ``hand_score`` that
    #: held in the training windows only: on both logs' validation cuts the constrained ranker
    #: gained more over the stack (docs/results.md, "Monotone in the stack's score")
    monotone: tuple[tuple[str, int], ...] = (("hand_score", 1), ("hand_rank", -1))
    #: at most this many shoppers per window, drawn at random (``seed``): past it a window's rows,
    #: memory and time stop growing with the log (``perf.bench_finetune_scale`` at 1M events,
    #: docs/results.md); None: every shopper
    max_shoppers: int | None = 10_000
    #: LightGBM's ranking objective: ``lambdarank`` (LambdaMART) or ``rank_xendcg`` (its
    #: cross-entropy surrogate of nDCG; no steadier gain on either log's validation cut)
    objective: str = "lambdarank"
    #: LightGBM's ``extra_trees``: each split's threshold is drawn at random among the feature's
    #: bins, not searched. On both logs' validation cuts, seed for seed, the gate's gain over the
    #: stack was higher and varied less with the seed (docs/results.md, "Extremely randomized trees")
    extra_trees: bool = True
    seed: int = 0
    threads: int = 1  # one: OpenMP threads spin on a shared machine (fit took ×10 with two here)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: {self.objective!r}, expected one of {', '.join(OBJECTIVES)}")
        for name, sign in self.monotone:
            if name not in FEATURE_NAMES:
                raise ValueError(f"monotone: {name!r} is not a ranker feature ({', '.join(FEATURE_NAMES)})")
            if sign not in (-1, 1):
                raise ValueError(f"monotone: {name!r} has {sign!r}, expected +1 (rising) or -1 (falling)")

    def monotone_constraints(self) -> list[int]:
        """:attr:`monotone` as LightGBM takes it: one sign per column of ``FEATURE_NAMES`` (0: free)."""
        signs = dict(self.monotone)
        return [signs.get(name, 0) for name in FEATURE_NAMES]


class Groups(NamedTuple):
    """Training rows of one or more windows: features, labels (0 = not relevant), rows per shopper
    (query) and each shopper's training weight (None: all 1)."""

    features: np.ndarray  # float32 [n, F]
    labels: np.ndarray  # int32 [n]
    sizes: np.ndarray  # int64 [shoppers]
    weights: np.ndarray | None = None  # float64 [shoppers]

    @classmethod
    def concat(cls, parts: Sequence[Groups]) -> Groups:
        weighted = any(p.weights is not None for p in parts)
        return cls(
            np.concatenate([p.features for p in parts]) if parts else np.zeros((0, len(FEATURE_NAMES)), np.float32),
            np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int32),
            np.concatenate([p.sizes for p in parts]) if parts else np.zeros(0, np.int64),
            np.concatenate([np.ones(len(p.sizes)) if p.weights is None else p.weights for p in parts])
            if weighted
            else None,
        )

    def weighted(self, weight: float) -> Groups:
        """The same rows, every shopper's weight multiplied by ``weight``."""
        base = np.ones(len(self.sizes)) if self.weights is None else self.weights
        return self._replace(weights=base * weight)

    def row_weights(self) -> np.ndarray | None:
        """Per-row weights (each shopper's on all its rows), as LightGBM takes them; None when unweighted."""
        return None if self.weights is None else np.repeat(self.weights, self.sizes)


def window_weights(n: int, decay: float) -> np.ndarray:
    """Training weight of each of ``n`` windows, oldest first: ``decay`` ** (windows after it)."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"window_decay={decay} must be in (0, 1]")
    return decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


def future_counts(period: Interactions, cutoff: float) -> dict[tuple[str, str], int]:
    """(shopper, item) → how many times the shopper has the item at or after ``cutoff`` in ``period``."""
    after = period.timestamp >= cutoff
    return dict(Counter(zip(period.user_id[after].tolist(), period.item_id[after].tolist())))


def graded_labels(relevant: np.ndarray, counts: np.ndarray, top: int = 3) -> np.ndarray:
    """A relevant candidate's label is its count in the rest of the period, between 1 and ``top``; else 0."""
    return np.where(relevant, np.clip(counts, 1, top), 0).astype(np.int32)


def feature_index(
    catalog: Catalog, embeddings: np.ndarray, split: TemporalSplit, user_encoder: object = None
) -> CatalogIndex:
    """The index ``rerank`` would serve at ``split``'s cut: the log's signals before it."""
    return served_index(catalog, embeddings, split_signals(split), user_encoder)


def split_groups(
    index: CatalogIndex,
    split: TemporalSplit,
    base: RankingConfig,
    config: RankerConfig = RankerConfig(),
    history: bool = True,
    counts: dict[tuple[str, str], int] | None = None,
) -> Groups:
    """One window's rows: for each shopper, the candidates the served ranker would score (the
    hand-weighted top ``config.depth`` and the buy-again ones), when one of them is relevant
    (a shopper without teaches nothing). ``history``: the buy-again source on and every next
    item relevant, repeats included (a model for feeds that show history); else the feed as
    served with history hidden, relevant = the items new to the shopper. ``counts``
    (:func:`future_counts`): graded labels (:func:`graded_labels`) instead of 0/1."""
    knobs = replace(base, exclude_history=not history)
    wanted = split.next_items if history else split.targets
    features, labels, sizes = [], [], []
    users, n = window_shoppers(split.users, config), block_size(index)
    blocks = (users[start : start + n] for start in range(0, len(users), n))
    built = (
        (user, one)
        for block in blocks
        for user, one in zip(block, candidate_features_many(index, [feed_request(split, u, knobs, 10) for u in block]))
    )
    for user, one in built:
        if one is None:
            continue
        rows, x = one
        head = reranked_rows(x, config.depth)
        rows, x = rows[head], x[head]
        relevant = np.isin(rows, index.rows_of(list(wanted.get(user, []))))
        if relevant.any():
            features.append(x.astype(np.float32))
            if counts is None:
                labels.append(relevant.astype(np.int32))
            else:
                ids = index.item_ids[rows]
                labels.append(graded_labels(relevant, np.array([counts.get((user, i), 0) for i in ids])))
            sizes.append(len(x))
    return Groups.concat([Groups(f, y, np.array([n])) for f, y, n in zip(features, labels, sizes)])


def window_shoppers(users: Sequence[str], config: RankerConfig) -> list[str]:
    """The shoppers a window trains on: all, or ``config.max_shoppers`` of them drawn at random
    (seeded), in their order."""
    if config.max_shoppers is None or len(users) <= config.max_shoppers:
        return list(users)
    drawn = np.random.default_rng(config.seed).choice(len(users), config.max_shoppers, replace=False)
    return [users[i] for i in np.sort(drawn)]


def window_groups(
    catalog: Catalog,
    embeddings: np.ndarray,
    period: Interactions,
    cuts: Sequence[float],
    base: RankingConfig,
    config: RankerConfig,
    user_encoder: object = None,
    progress: bool = True,
    history: bool = True,
) -> list[Groups]:
    """Rows of the windows at ``cuts`` (quantiles of ``period``'s timestamps), one Groups each,
    weighted by ``config.window_decay`` (unweighted at 1): :func:`fit` hands them to LightGBM as
    they are, never concatenated (a copy of every row)."""
    parts = []
    weights = window_weights(len(cuts), config.window_decay)
    for q, weight in zip(tqdm(cuts, desc="ranker windows", unit="cut", disable=not progress), weights):
        split = temporal_split(period, quantile=q, max_history=50, n_targets=10)
        index = feature_index(catalog, embeddings, split, user_encoder)
        counts = future_counts(period, split.cutoff) if config.graded else None
        part = split_groups(index, split, base, config, history, counts)
        parts.append(part if config.window_decay == 1.0 else part.weighted(float(weight)))
        del index, split, counts
        release_memory()  # the window's index and per-shopper rows, dropped
    return parts


def _parts(groups: Groups | Sequence[Groups]) -> list[Groups]:
    parts = [groups] if isinstance(groups, Groups) else list(groups)
    return [part for part in parts if len(part.labels)] or parts[:1]  # LightGBM refuses an empty matrix in a list


def _dataset(parts: list[Groups], weight: float, params: dict, reference: object = None) -> object:
    """A LightGBM dataset over ``parts``' feature matrices as they are (LightGBM reads a list of
    matrices): only labels, group sizes, row weights and the start scores are concatenated.
    ``params``: the training's, which binning reads (a dataset binned apart from them is refused)."""
    import lightgbm

    meta = Groups.concat([part._replace(features=part.features[:, :0]) for part in parts])  # no feature copied
    hand = np.concatenate([part.features[:, HAND_SCORE] for part in parts]).astype(np.float64)
    return lightgbm.Dataset(
        [part.features for part in parts] if len(parts) > 1 else parts[0].features,
        meta.labels,
        weight=meta.row_weights(),
        group=meta.sizes,
        feature_name=list(FEATURE_NAMES),
        reference=reference,
        init_score=weight * hand if weight else None,
        params=params,
    )


def fit(
    train: Groups | Sequence[Groups], stop: Groups | Sequence[Groups], config: RankerConfig, release: bool = False
) -> tuple[LearnedRanker, dict]:
    """LambdaMART on ``train``, early-stopped on nDCG@10 of ``stop`` (each one Groups or a window's each).

    ``release``: ``train`` and ``stop`` are lists, emptied once LightGBM has binned their rows, so
    that boosting runs without the float32 rows beside its bins (the fit's peak memory, the
    whole ``aisle finetune``'s at 1M events: ``perf.bench_finetune_scale``)."""
    import lightgbm

    params = {
        "objective": config.objective,
        "metric": "ndcg",
        "ndcg_eval_at": [10],
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambdarank_truncation_level": 20,
        "extra_trees": config.extra_trees,
        "seed": config.seed,
        "deterministic": True,
        "num_threads": config.threads,
        "verbosity": -1,
    }
    if config.monotone:
        params["monotone_constraints"] = config.monotone_constraints()
    if release and not (isinstance(train, list) and isinstance(stop, list)):
        raise TypeError("fit(release=True) empties the lists it is given: pass train and stop as lists")
    train_parts, stop_parts = (
        [blanked(part, config.ignored_features) for part in _parts(groups)] for groups in (train, stop)
    )
    weight = base_weight(train_parts, config.base_strength)
    sizes = {
        "rows": sum(len(part.labels) for part in train_parts),
        "shoppers": sum(len(part.sizes) for part in train_parts),
        "stop_shoppers": sum(len(part.sizes) for part in stop_parts),
    }
    train_set = _dataset(train_parts, weight, params)
    stop_set = _dataset([part._replace(weights=None) for part in stop_parts], weight, params, reference=train_set)
    if release:
        train_set.construct()
        stop_set.construct()  # binned; LightGBM drops its references to the rows (free_raw_data)
        del train_parts, stop_parts
        for given in (train, stop):
            given.clear()
        release_memory()
    started = time.perf_counter()
    booster = lightgbm.train(
        params,
        train_set,
        num_boost_round=config.rounds,
        valid_sets=[stop_set],
        callbacks=[lightgbm.early_stopping(config.early_stopping, verbose=False)],
    )
    report = {
        **sizes,
        "best_iteration": int(booster.best_iteration),
        "stop_ndcg@10": float(booster.best_score["valid_0"]["ndcg@10"]),
        "base_weight": weight,
        "fit_seconds": round(time.perf_counter() - started, 1),
    }
    booster = lightgbm.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
    manifest = {"params": params, "depth": config.depth} | ({BASE_WEIGHT: weight} if weight else {})
    return LearnedRanker(booster, manifest), report


def blanked(groups: Groups, names: Sequence[str]) -> Groups:
    """``groups`` with the columns of ``names`` missing (NaN): LightGBM builds no split on a column
    that is missing everywhere, so the trees never read it."""
    if not names:
        return groups
    features = groups.features.copy()
    features[:, [FEATURE_NAMES.index(name) for name in names]] = np.nan
    return groups._replace(features=features)


def base_weight(groups: Groups | Sequence[Groups], strength: float) -> float:
    """The weight of ``hand_score`` in the score the boosting starts from (``RankerConfig.base_strength``):
    ``strength`` over the median within-feed standard deviation of ``hand_score``, so that one
    typical spread of the stack's scores inside a feed is ``strength`` units of LambdaMART's score
    (its pairwise sigmoid reads score differences of about one); 0 where ``strength`` is 0."""
    parts = [part for part in _parts(groups) if len(part.sizes)]
    if strength <= 0 or not parts:
        return 0.0
    spreads = np.concatenate([_hand_spreads(part)[part.sizes > 1] for part in parts])
    typical = float(np.median(spreads)) if len(spreads) else 0.0
    return float(strength / typical) if typical > 0 else 0.0


def _hand_spreads(groups: Groups) -> np.ndarray:
    """The standard deviation of ``hand_score`` within each feed of ``groups``."""
    hand = groups.features[:, HAND_SCORE].astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(groups.sizes)[:-1]])
    sizes = np.maximum(groups.sizes, 1)
    mean = np.add.reduceat(hand, starts) / sizes
    return np.sqrt(np.maximum(np.add.reduceat(hand**2, starts) / sizes - mean**2, 0.0))


def train_ranker(
    catalog: Catalog,
    embeddings: np.ndarray,
    period: Interactions,
    base: RankingConfig,
    config: RankerConfig = RankerConfig(),
    user_encoder: object = None,
    progress: bool = True,
    history: bool = True,
) -> tuple[LearnedRanker, dict]:
    """A ranker from ``period`` alone: rolling windows to train, a later one to stop
    (``history``: for feeds that show it, see :func:`split_groups`)."""
    started = time.perf_counter()
    train = window_groups(catalog, embeddings, period, config.train_cuts, base, config, user_encoder, progress, history)
    stopping = replace(config, window_decay=1.0, graded=False)  # the stop windows judge as the gate does
    stop = window_groups(catalog, embeddings, period, config.stop_cuts, base, stopping, user_encoder, False, history)
    ranker, report = fit(train, stop, config, release=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    manifest = {**ranker.manifest, "trained_until": float(period.timestamp.max()), "history": history}
    return replace(ranker, manifest=manifest), report


def rankers_for_both(
    catalog: Catalog,
    embeddings: np.ndarray,
    period: Interactions,
    base: RankingConfig,
    config: RankerConfig,
    user_encoder: object = None,
    progress: bool = True,
) -> tuple[dict[bool, LearnedRanker], dict]:
    """``{history shown: ranker}`` for both choices (one model for both without ``config.hidden_model``)."""
    shown, shown_fit = train_ranker(catalog, embeddings, period, base, config, user_encoder, progress, True)
    if not config.hidden_model:
        return {True: shown, False: shown}, {"shown": shown_fit}
    hidden, hidden_fit = train_ranker(catalog, embeddings, period, base, config, user_encoder, progress, False)
    return {True: shown, False: hidden}, {"shown": shown_fit, "hidden": hidden_fit}


def serving_history(config: RankerConfig, exclude_history: bool) -> bool:
    """Which model serves a choice of ``exclude_history``: history-trained unless a hidden one is made."""
    return not exclude_history or not config.hidden_model


def per_user(index: CatalogIndex, split: TemporalSplit, config: RankingConfig, views: dict) -> dict[str, list[float]]:
    """Per-shopper nDCG@10 of the feed ``config`` serves on ``index``, against each view's targets."""
    ranked = batched_aisle_ranker(index, split, config, block_size(index))
    lists = {user: ranked(user, 10) for user in split.users}
    reference = Reference.of(index, split)
    return {
        view: score(lambda user, k: lists[user][:k], split, reference, (10,), beyond=False, targets=targets)[
            "per_user"
        ][METRIC]
        for view, targets in views.items()
    }


def gate_splits(data: LogData, config: RankerConfig) -> list[TemporalSplit]:
    """The cuts the gate judges at: ``config.gate_cuts``, quantiles of the period given
    (``data.split.train``), built as ``data.valid`` is (at 0.8, it is that cut)."""
    return [
        temporal_split(data.split.train, quantile=q, max_history=MAX_HISTORY, n_targets=N_TARGETS)
        for q in config.gate_cuts
    ]


def validate(
    data: LogData,
    embeddings: np.ndarray,
    base: RankingConfig,
    config: RankerConfig = RankerConfig(),
    user_encoder: object = None,
    progress: bool = True,
    keep_per_user: bool = False,
) -> dict:
    """The ranker's gate (see the module docstring) on every cut of :func:`gate_splits`, each with
    a ranker trained only on the windows before it, the shopper-cut pairs pooled: its choice of
    showing history, and its gain over the hand-weighted stack on all next items and on new items.
    ``keep_per_user``: also each shopper-cut pair's nDCG@10 on all next items (``per_user``), for
    :func:`joint_choice`."""
    hand: dict[str, list[float]] = {"all": [], "new": []}
    hand_shown: dict[str, list[float]] = {"all": [], "new": []}
    hidden: dict[str, list[float]] = {"all": [], "new": []}
    shown: dict[str, list[float]] = {"all": [], "new": []}
    shoppers: list[str] = []
    fits = []
    for q, valid in zip(config.gate_cuts, gate_splits(data, config)):
        rankers, fit_report = rankers_for_both(
            data.catalog, embeddings, valid.train, base, config, user_encoder, progress
        )
        index = feature_index(data.catalog, embeddings, valid, user_encoder)
        views = {"all": valid.next_items, "new": valid.targets}
        cut = (
            per_user(index, valid, replace(base, learned_ranker=False), views),
            per_user(replace(index, ranker=rankers[False]), valid, replace(base, exclude_history=True), views),
            per_user(replace(index, ranker=rankers[True]), valid, replace(base, exclude_history=False), views),
            per_user(index, valid, replace(base, learned_ranker=False, exclude_history=False), views),
        )
        for pooled, values in zip((hand, hidden, shown, hand_shown), cut):
            for view in pooled:
                pooled[view] += list(values[view])
        shoppers += valid.users
        gains = {
            name: float(np.mean(values["all"]) - np.mean(cut[0]["all"]))
            for name, values in (("history_hidden", cut[1]), ("history_shown", cut[2]))
        }
        fits.append({"cut": q, "shoppers": len(valid.users), "vs_hand_weighted_all": gains, **fit_report})
        if progress:
            print(
                f"gate cut {q}: {len(valid.users)} shoppers, ranker vs hand-weighted (all next items): "
                f"history hidden {gains['history_hidden']:+.4f}, shown {gains['history_shown']:+.4f}"
            )
    kept = {"hand_weighted": hand["all"], "ranker_history_hidden": hidden["all"], "ranker_history_shown": shown["all"]}
    return {
        "metric": f"{METRIC}, {len(shoppers)} shopper-cut pairs ({len(set(shoppers))} shoppers) at cuts "
        f"{list(config.gate_cuts)} of the period",
        **({"per_user": kept | {"shoppers": shoppers}} if keep_per_user else {}),
        "fit": fits if len(fits) > 1 else fits[0],
        "means": {
            name: {view: float(np.mean(values)) for view, values in result.items()}
            for name, result in (
                ("hand_weighted", hand),
                ("hand_weighted_history_shown", hand_shown),
                ("ranker_history_hidden", hidden),
                ("ranker_history_shown", shown),
            )
        },
        **gate(hand, hidden, shown, shoppers, hand_shown),
    }


def gate(
    hand: dict,
    hidden: dict,
    shown: dict,
    shoppers: Sequence[str] | None = None,
    hand_shown: dict | None = None,
) -> dict:
    """The two measured choices from per-shopper nDCG@10 (``{view: values}``, views ``all`` and
    ``new``, the same shoppers in each): history is shown only when that beats hiding it on all
    next items (paired 95% interval above zero); the ranker is served only when, so chosen, it
    beats the hand-weighted stack on all next items (interval above zero) — and, showing history,
    also the hand-weighted stack that shows history (``hand_shown``), so that the gain is the
    ranker's and not merely the repeats': on Online Retail a buy-again ranker passed against the
    stack with history hidden at the validation cut and lost at the test cut, where the stack
    showing history beat it (docs/results.md). ``shoppers``: whose each value is, when a shopper
    has several (pooled cuts): the bootstrap resamples shoppers."""
    show_gain = bootstrap_delta(hidden["all"], shown["all"], clusters=shoppers)
    exclude_history = not show_gain["ci95"][0] > 0
    chosen = hidden if exclude_history else shown
    gain = {view: bootstrap_delta(hand[view], chosen[view], clusters=shoppers) for view in hand}
    report = {"history_shown_vs_hidden": show_gain, "exclude_history": exclude_history, "vs_hand_weighted": gain}
    served = gain["all"]["ci95"][0] > 0
    if not exclude_history and hand_shown is not None:
        report["vs_hand_weighted_history_shown"] = bootstrap_delta(hand_shown["all"], shown["all"], clusters=shoppers)
        served = served and report["vs_hand_weighted_history_shown"]["ci95"][0] > 0
    return report | {"served": served}


def _interval(delta: dict) -> str:
    return f"{delta['delta']:+.4f} [{delta['ci95'][0]:+.4f}, {delta['ci95'][1]:+.4f}]"


def describe(report: dict) -> str:
    """``aisle finetune``'s account of the ranker: served or not, and why, with the numbers; with
    several stacks gated (:func:`finetune_step`), one line per stack and what validation chose."""
    lines = [_verdict(report, report.get("stack"))]
    lines += [_verdict(other, name) for name, other in report.get("other_stacks", {}).items()]
    joint = report.get("joint")
    if joint is not None and len(joint["means"]) > 2:
        means = ", ".join(
            f"{name} {value:.4f}" + ("" if name in joint["eligible"] else " (not eligible)")
            for name, value in joint["means"].items()
        )
        lines.append(
            f"validation {METRIC} on all next items: {means}; serves {_label(joint['stack'], joint['ranker'])}"
            + (f", {_interval(joint['vs_chosen_alone'])} over the stack alone" if joint["ranker"] else "")
            + _runner_up(joint)
        )
    return "\n".join(lines)


def _runner_up(joint: dict) -> str:
    """How far the served option led the next eligible one, and whether validation could tell them apart."""
    gap = joint.get("vs_runner_up")
    if gap is None:
        return ""
    said = f"; {_interval(gap)} over {joint['runner_up']}"
    return said + (": a toss-up, too close for these validation shoppers to tell" if gap["ci95"][0] <= 0 else "")


def _verdict(report: dict, stack: str | None) -> str:
    gain = report["vs_hand_weighted"]["all"]
    history = "shown" if not report["exclude_history"] else "hidden"
    also = report.get("vs_hand_weighted_history_shown")
    intervals = f"{_interval(gain)}" + ("" if also is None else f", vs hand-weighted showing history {_interval(also)}")
    over = "" if stack is None else f" over the {stack} stack"
    if report["served"]:
        return f"learned ranker{over} served (history {history}): validation Δ{METRIC} vs hand-weighted {intervals}"
    if report.get("gate_passed"):
        why = "the gate passed, but another option led on validation"
    elif gain["ci95"][0] <= 0:
        why = "interval not above zero; the hand-weighted stack stays"
    else:
        why = "not above zero against the stack showing history; the hand-weighted stack stays"
    return f"learned ranker{over} NOT served: validation Δ{METRIC} vs hand-weighted {intervals}: {why}"


def evaluation_rows(
    data: LogData,
    embeddings: np.ndarray,
    base: RankingConfig,
    config: RankerConfig = RankerConfig(),
    progress: bool = True,
    gate: dict | None = None,
) -> tuple[list, dict]:
    """``aisle evaluate --ranker``: the ranker gated on validation and trained on the training period
    as ``aisle finetune`` does, as test-cut rows (``judge.feed.evaluate_log``'s ``extra_rows``):
    the stack served after the gate, and the ranker with history hidden and shown regardless of it.
    ``gate``: :func:`validate`'s report when already measured."""
    started = time.perf_counter()
    gate = gate if gate is not None else validate(data, embeddings, base, config, None, progress)
    knobs = replace(base, exclude_history=gate["exclude_history"])
    rankers, fit_report = rankers_for_both(data.catalog, embeddings, data.split.train, knobs, config, None, progress)
    index = feature_index(data.catalog, embeddings, data.split)
    split = data.split
    served_knobs = knobs if gate["served"] else replace(base, learned_ranker=False)
    history = "history shown" if not gate["exclude_history"] else "history hidden"
    served_label = f"served after the ranker gate ({'ranker, ' + history if gate['served'] else 'hand-weighted kept'})"
    served_index = replace(index, ranker=rankers[serving_history(config, gate["exclude_history"])])
    rows = [
        (
            "learned ranker, history hidden",
            aisle_ranker(replace(index, ranker=rankers[False]), split, replace(base, exclude_history=True)),
        ),
        (
            "learned ranker, history shown (buy-again)",
            aisle_ranker(replace(index, ranker=rankers[True]), split, replace(base, exclude_history=False)),
        ),
        (served_label, aisle_ranker(served_index, split, served_knobs)),
    ]
    report = {
        "gate": gate,
        "serving_fit": fit_report,
        "train_seconds_total": round(time.perf_counter() - started, 1),
    }
    return rows, report


def gated_stacks(chosen: str) -> list[str]:
    """The stacks the ranker is gated over: the one validation chose without a ranker and, when that
    is a trained one, the pretrained stack too. A ranker over the pretrained stack can lead a trained
    stack alone: on MovieLens-100K the user-encoder stack led the pretrained one on validation, and
    the ranker gained over the pretrained stack but not over the user encoder's (docs/results.md,
    "Stack and ranker chosen together")."""
    return list(dict.fromkeys((chosen, "pretrained")))


def _label(stack: str, ranker: bool) -> str:
    return f"{stack} + ranker" if ranker else stack


def joint_choice(gates: dict[str, dict], chosen: str) -> dict:
    """What serves, from :func:`validate`'s reports per stack (``keep_per_user``) and the stack
    validation chose without a ranker: the best-scoring, on the gate's nDCG@10 over all next items,
    of ``chosen`` alone and each stack with its ranker where the gate passed (a ranker is eligible
    only over the stack it beat, :func:`gate`). The rule is :func:`aisle_export.learn.finetune.choose_stack`'s
    (each option earned its place against its own baseline; the best of those serves); ties keep
    ``chosen`` alone. Also every option's mean, eligible or not, the winner's paired gain over
    ``chosen`` alone (reported, not a gate: each part of it has passed one), and over the best other
    eligible option (``runner_up``): where that interval holds zero, validation could not tell the
    two apart and the choice is a toss-up, which ``aisle finetune`` says (reported, not acted on:
    a tie rule picked after seeing which option the test cut favoured would be choosing on it)."""
    per_user = {stack: gate["per_user"] for stack, gate in gates.items()}

    def values(stack: str, ranker: bool) -> list[float]:
        if not ranker:
            return per_user[stack]["hand_weighted"]
        shown = not gates[stack]["exclude_history"]
        return per_user[stack]["ranker_history_shown" if shown else "ranker_history_hidden"]

    options = [(chosen, False)] + [(stack, True) for stack in gates]
    eligible = [(chosen, False)] + [(stack, True) for stack, gate in gates.items() if gate["served"]]
    means = {option: float(np.mean(values(*option))) for option in options}
    stack, ranker = max(eligible, key=lambda option: means[option])  # max keeps the first of a tie
    others = [option for option in eligible if option != (stack, ranker)]
    runner_up = max(others, key=lambda option: means[option]) if others else None
    return {
        "metric": gates[chosen]["metric"],
        "stack": stack,
        "ranker": ranker,
        "means": {_label(*option): means[option] for option in options},
        "eligible": [_label(*option) for option in eligible],
        "vs_chosen_alone": bootstrap_delta(
            values(chosen, False), values(stack, ranker), clusters=per_user[chosen]["shoppers"]
        ),
        "runner_up": None if runner_up is None else _label(*runner_up),
        "vs_runner_up": None
        if runner_up is None
        else bootstrap_delta(values(*runner_up), values(stack, ranker), clusters=per_user[chosen]["shoppers"]),
    }


def finetune_step(
    data: LogData,
    out_dir: Path,
    choice: dict,
    embeddings: dict[str, np.ndarray],
    encoders: tuple[Path, Path],
    config: RankerConfig = RankerConfig(),
    progress: bool = True,
) -> dict:
    """:func:`validate` over each of :func:`gated_stacks` (``choice``: ``ranking.json``), then
    :func:`joint_choice`; when a ranker wins, it is trained on the whole period over its stack and
    ``choice`` is updated in place: that stack is ``served``, with the measured ``exclude_history``.

    ``embeddings``: ``pretrained`` and ``trained`` item embeddings; ``encoders``: the validation and
    the serving user encoder directories (read only for the user encoder's stack).
    """
    from aisle_server.user_encoder import UserEncoder

    started = time.perf_counter()
    target = Path(out_dir) / RANKER_DIRNAME
    shutil.rmtree(target, ignore_errors=True)

    def plan(stack: str) -> tuple[RankingConfig, np.ndarray, tuple[Path, Path] | None]:
        base = replace(RankingConfig(), **choice[stack])
        with_encoder = stack == "user_encoder" and base.user_encoder
        return (
            base,
            embeddings["pretrained" if stack == "pretrained" else "trained"],
            encoders if with_encoder else None,
        )

    chosen = str(choice["served"])
    stacks = gated_stacks(chosen)
    gates = {}
    for stack in stacks:
        base, vectors, paths = plan(stack)
        if progress and len(stacks) > 1:
            print(f"ranker gate over the {stack} stack", flush=True)
        encoder = UserEncoder.load(paths[0]) if paths else None
        gates[stack] = validate(data, vectors, base, config, encoder, progress, keep_per_user=True)
        release_memory()  # the gate's windows, rankers and scored feeds: the next fit starts from a trimmed heap
    joint = joint_choice(gates, chosen)
    stack = joint["stack"] if joint["ranker"] else chosen
    report = {key: value for key, value in gates[stack].items() if key != "per_user"}
    report["served"] = joint["ranker"]
    report |= {
        "stack": stack,
        "joint": joint,
        "other_stacks": {
            name: {key: gate[key] for key in ("exclude_history", "vs_hand_weighted", "means")}
            | {"served": False, "gate_passed": gate["served"]}
            for name, gate in gates.items()
            if name != stack
        },
    }
    if report["served"]:
        base, vectors, paths = plan(stack)
        knobs = replace(base, exclude_history=report["exclude_history"])
        history = serving_history(config, report["exclude_history"])
        serving_encoder = UserEncoder.load(paths[1]) if paths else None
        ranker, fit_report = train_ranker(
            data.catalog, vectors, data.split.train, knobs, config, serving_encoder, progress, history
        )
        manifest = {
            **ranker.manifest,
            "stack": stack,
            "features": list(FEATURE_NAMES),
            "knobs": asdict(knobs),
            "validation": {k: v for k, v in report.items() if k not in ("fit", "other_stacks")},
        }
        replace(ranker, manifest=manifest).save(target)
        choice["served"] = stack
        choice[stack]["exclude_history"] = report["exclude_history"]
        report |= {"path": str(target), "serving_fit": fit_report}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
