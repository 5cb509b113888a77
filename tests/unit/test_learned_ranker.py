"""The learned second stage: item statistics, the feature function, the buy-again source, the
ranker served inside ``rank`` (scores, order, exact contributions) and the gate's choices."""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from aisle_contract import RANKER_FEATURE_NAMES, RankingConfig
from aisle_export.data.catalog import Catalog
from aisle_export.data.interactions import Interactions
from aisle_export.data.splits import temporal_split
from aisle_export.index.log_signals import item_stats, split_signals
from aisle_export.index.writing import served_index
from aisle_export.judge.rankers import feed_request
from aisle_export.learn.ranker import (
    Groups,
    RankerConfig,
    base_weight,
    block_size,
    describe,
    fit,
    future_counts,
    gate,
    gate_splits,
    gated_stacks,
    graded_labels,
    joint_choice,
    split_groups,
    window_shoppers,
    window_weights,
)
from aisle_server.compiled_ranker import load_compiled
from aisle_server.features import FEATURE_NAMES, FeedContext, feature_rows
from aisle_server.learned import ITEM_STAT_NAMES
from aisle_server.ranker import LearnedRanker
from aisle_server.ranking import RankRequest, candidate_features, candidate_features_many, rank

DAY = 86400.0
N_ITEMS, DIM = 40, 8
COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}


def catalog() -> Catalog:
    ids = [f"i{j}" for j in range(N_ITEMS)]
    return Catalog(
        item_ids=np.array(ids),
        titles=np.array([f"item {j}" for j in range(N_ITEMS)]),
        descriptions=np.array([""] * N_ITEMS),
        categories=np.array(["a" if j % 2 else "b" for j in range(N_ITEMS)]),
        created_at=np.array([j * DAY for j in range(N_ITEMS)], dtype=np.float64),
        popularity=np.zeros(N_ITEMS),
        in_stock=np.ones(N_ITEMS, dtype=bool),
    )


def shop_log(seed: int = 0, shoppers: int = 60, days: int = 60) -> Interactions:
    """Shoppers who buy their own staples again every few days, plus a few random items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(shoppers):
        staples = rng.choice(N_ITEMS, 3, replace=False)
        for day in range(0, days, int(rng.integers(3, 7))):
            for item in staples[rng.random(3) < 0.7]:
                rows.append((f"u{u}", f"i{item}", day * DAY + u))
            rows.append((f"u{u}", f"i{rng.integers(N_ITEMS)}", day * DAY + u + 1))
    users, items, ts = zip(*rows)
    return Interactions(np.array(users), np.array(items), np.ones(len(rows), np.float32), np.array(ts, np.float64))


def test_item_stats_count_repurchases_by_day_and_take_the_median_interval_across_shoppers() -> None:
    u = np.array([0, 0, 0, 1, 1, 1, 2])
    i = np.array([0, 0, 0, 0, 0, 1, 0])
    t = np.array([0.0, 0.1, 10.0, 0.0, 4.0, 19.0, 5.0]) * DAY  # u0: a basket of two rows, then day 10
    stats = dict(zip(ITEM_STAT_NAMES, item_stats(u, i, t, 3, now=20 * DAY).T))
    assert stats["events_all"].tolist() == [6.0, 1.0, 0.0]
    assert stats["events_7d"].tolist() == [0.0, 1.0, 0.0] and stats["events_30d"][0] == 6.0
    assert stats["buyers"].tolist() == [3.0, 1.0, 0.0]
    assert stats["repeat_share"][0] == pytest.approx(2 / 3)  # u0 and u1 had it on two days, u2 once
    assert stats["repurchase_interval_days"][0] == pytest.approx(7.0)  # median of 10 and 4
    assert np.isnan(stats["repurchase_interval_days"][1]) and np.isnan(stats["repeat_share"][2])
    assert stats["first_seen_days"][:2].tolist() == [20.0, 1.0]


def _index(log: Interactions, cut: float):
    split = temporal_split(log, cutoff=cut)
    vectors = np.random.default_rng(1).standard_normal((N_ITEMS, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return split, served_index(catalog(), vectors, split_signals(split))


def test_feature_rows_hold_the_shoppers_repurchase_timing_and_the_items_statistics() -> None:
    _, index = _index(shop_log(), 50 * DAY)
    now = 50 * DAY
    history = index.rows_of(["i3", "i5", "i3"])
    context = FeedContext(history, np.array([30, 40, 46]) * DAY, np.array([0.2, 0.3, 0.5]), now)
    rows = np.array([index.rows_of(["i3"])[0], index.rows_of(["i8"])[0], index.rows_of(["i5"])[0]])
    sources = {"dense": rows[:2], "history": rows[[0, 2]]}
    x = feature_rows(index, context, rows, np.array([0.1, 0.9, 0.5]), None, np.array([3.0, 1.0, 2.0]), sources)
    assert x.shape == (3, len(RANKER_FEATURE_NAMES))
    column = {name: x[:, j] for name, j in COLUMN.items()}
    assert column["history_count"].tolist() == [2.0, 0.0, 1.0]
    assert column["history_recency_weight"].tolist() == pytest.approx([0.7, 0.0, 0.3])
    assert column["days_since_last"][[0, 2]].tolist() == pytest.approx([4.0, 10.0]) and np.isnan(
        column["days_since_last"][1]
    )
    interval = index.item_stats[rows[0], ITEM_STAT_NAMES.index("repurchase_interval_days")]
    assert column["interval_ratio"][0] == pytest.approx(4.0 / interval)
    assert column["from_dense"].tolist() == [1, 1, 0] and column["from_history"].tolist() == [1, 0, 1]
    assert column["from_popular"].tolist() == [0, 0, 0]
    assert column["cosine_rank"].tolist() == [2, 0, 1] and column["hand_rank"].tolist() == [0, 2, 1]
    # i3, i5 are odd-numbered ("a"), i8 is "b": two of three history items share i3's category
    assert column["category_affinity"].tolist() == pytest.approx([1.0, 0.0, 1.0])
    # the same read from the category names, as over an index without codes (a live overlay)
    by_name = replace(index, lookups=replace(index.lookups, category_codes=np.zeros(0, dtype=np.int32)))
    named = feature_rows(by_name, context, rows, np.array([0.1, 0.9, 0.5]), None, np.array([3.0, 1.0, 2.0]), sources)
    np.testing.assert_array_equal(named, x)
    assert column["history_length"].tolist() == [3, 3, 3]
    assert column["history_repeat_share"].tolist() == pytest.approx([1 / 3] * 3)  # i3 again: one of three events
    fresh = replace(context, history_rows=index.rows_of(["i3", "i5", "i8"]))
    assert feature_rows(index, fresh, rows, np.array([0.1, 0.9, 0.5]), None, np.array([3.0, 1.0, 2.0]), sources)[
        :, COLUMN["history_repeat_share"]
    ].tolist() == [0.0, 0.0, 0.0]
    assert column["item_age_days"].tolist() == pytest.approx([47.0, 42.0, 45.0])
    assert column["events_all"].tolist() == index.item_stats[rows, 2].tolist()
    # serving: only the rows the ranker scores get every column (hand-weighted top 1, and the buy-again i5)
    head = feature_rows(index, context, rows, np.array([0.1, 0.9, 0.5]), None, np.array([3.0, 1.0, 2.0]), sources, 1)
    np.testing.assert_array_equal(head[[0, 2]], x[[0, 2]])  # the same values: the ranks are over the union
    ranked = [COLUMN[name] for name in ("cosine_rank", "hand_rank", "hand_score", "from_dense", "from_history")]
    np.testing.assert_array_equal(head[1, ranked], x[1, ranked])  # what orders it after the scored rows
    assert np.isnan(head[1, [COLUMN["history_length"], COLUMN["events_all"], COLUMN["item_age_days"]]]).all()


def test_the_buy_again_source_brings_the_history_in_only_when_history_may_show() -> None:
    split, index = _index(shop_log(), 50 * DAY)
    user = split.users[0]
    own = set(index.rows_of([item for item, _ in split.histories[user]]).tolist())
    narrow = RankingConfig(candidates=1, popular_candidates=0, cooccurrence_candidates=0, user_encoder=False)
    shown = candidate_features(index, feed_request(split, user, replace(narrow, exclude_history=False), 10))
    hidden = candidate_features(index, feed_request(split, user, narrow, 10))
    assert shown is not None and hidden is not None
    assert own <= set(shown[0].tolist()) and not own & set(hidden[0].tolist())
    flags = shown[1][:, COLUMN["from_history"]]
    assert set(shown[0][flags == 1].tolist()) == own


@pytest.fixture(scope="module")
def trained():
    log = shop_log()
    split, index = _index(log, 50 * DAY)
    groups = split_groups(index, split, RankingConfig(user_encoder=False))
    ranker, report = fit(groups, groups, RankerConfig(rounds=30, min_data_in_leaf=5, threads=1))
    return split, replace(index, ranker=ranker), report


def test_training_rows_label_the_next_items_repeats_included(trained) -> None:
    split, index, report = trained
    groups = split_groups(index, split, RankingConfig(user_encoder=False))
    assert (
        groups.features.shape == (groups.labels.size, len(FEATURE_NAMES)) and groups.sizes.sum() == groups.labels.size
    )
    assert report["shoppers"] == len(groups.sizes) > 0
    repeats = groups.labels.astype(bool) & (groups.features[:, COLUMN["from_history"]] == 1)
    assert repeats.any()  # staples bought again are positives, recalled by the buy-again source


def test_training_rows_for_feeds_with_history_hidden_have_no_buy_again_and_only_new_items_relevant(trained) -> None:
    split, index, _ = trained
    groups = split_groups(index, split, RankingConfig(user_encoder=False), history=False)
    assert len(groups.sizes) > 0 and not (groups.features[:, COLUMN["from_history"]] == 1).any()
    assert not (groups.labels.astype(bool) & (groups.features[:, COLUMN["history_count"]] > 0)).any()
    assert groups.labels.sum() > 0


def test_rank_orders_a_feed_by_the_ranker_score_of_the_offline_features_and_explains_it_exactly(trained) -> None:
    split, index, _ = trained
    config = RankingConfig(user_encoder=False, exclude_history=False)
    for user in split.users[:5]:
        request = replace(feed_request(split, user, config, 10), explain=True)
        served = rank(index, request)
        rows, features = candidate_features(index, request)
        offline = index.ranker.score(features)
        order = np.lexsort((rows, -offline))[:10]
        assert served.item_ids == index.item_ids[rows[order]].tolist()
        np.testing.assert_allclose(served.scores, offline[order], atol=1e-5)
        assert served.feature_contributions.shape == (10, len(FEATURE_NAMES) + 1)
        np.testing.assert_allclose(served.feature_contributions.sum(axis=1), served.scores, atol=1e-5)
        assert np.isnan(served.components).all()  # no hand-weighted terms make a ranker's score
        hand = rank(index, replace(request, config=replace(config, learned_ranker=False)))
        assert hand.feature_contributions is None and np.isfinite(hand.components).all()


def test_candidate_features_of_a_block_are_each_requests_own(trained) -> None:
    """A window's rows are built for blocks of shoppers (one catalog scan as a matrix product): the
    same candidates and features as one request at a time (to the scores' last bits), and None for
    a shopper with no history."""
    split, index, _ = trained
    config = RankingConfig(user_encoder=False, exclude_history=False)
    requests = [feed_request(split, user, config, 10) for user in split.users[:12]]
    requests.insert(3, replace(requests[0], history_ids=[], history_ts=[]))  # the cold fallback: no features
    assert block_size(index) == 1  # a small catalog: each feed prepared alone, exactly as served
    block = candidate_features_many(index, requests)
    assert block[3] is None and sum(one is None for one in block) == 1
    for request, one in zip(requests, block):
        alone = candidate_features(index, request)
        if alone is None:
            assert one is None
            continue
        assert one is not None
        np.testing.assert_array_equal(one[0], alone[0])
        np.testing.assert_allclose(one[1], alone[1], rtol=1e-6, atol=1e-6)


def test_a_search_and_the_cold_fallback_are_not_ranked_by_the_ranker(trained) -> None:
    split, index, _ = trained
    query = RankRequest(np.asarray(index.embeddings[0]), [], np.zeros(0), 5, split.cutoff, explain=True)
    assert rank(index, query).feature_contributions is None
    assert rank(index, replace(query, query_embedding=None)).feature_contributions is None


def test_a_ranker_trained_before_a_feature_existed_serves_on_the_features_it_knows(tmp_path, caplog) -> None:
    import lightgbm

    groups = _banded_groups()
    known = [name for name in RANKER_FEATURE_NAMES if name != "history_repeat_share"]  # as before it was added
    columns = [COLUMN[name] for name in known]
    data = lightgbm.Dataset(groups.features[:, columns], groups.labels, group=groups.sizes, feature_name=known)
    params = {"objective": "lambdarank", "min_data_in_leaf": 5, "verbosity": -1, "num_threads": 1}
    LearnedRanker(lightgbm.train(params, data, num_boost_round=10)).save(tmp_path / "old")
    with caplog.at_level("WARNING", logger="aisle.ranker"):
        old = LearnedRanker.load(tmp_path / "old")
    assert "without features ['history_repeat_share']" in caplog.text
    assert old.compiled is not None  # compiled over its own 27 columns
    rows = groups.features[:100].astype(np.float64)
    rows[:, COLUMN["history_repeat_share"]] = 0.5  # a column the model never saw: it must not read it
    want = old.booster.predict(rows[:, columns], num_threads=1)
    np.testing.assert_allclose(old.score(rows), want, atol=1e-9)
    parts = old.contributions(rows)
    assert parts.shape == (100, len(RANKER_FEATURE_NAMES) + 1)
    assert (parts[:, COLUMN["history_repeat_share"]] == 0).all()
    np.testing.assert_allclose(parts.sum(axis=1), want, atol=1e-9)


def test_a_ranker_over_other_features_is_refused(trained, tmp_path) -> None:
    _, index, _ = trained
    booster = index.ranker.booster
    text = booster.model_to_string().replace("feature_names=cosine ", "feature_names=renamed ")
    import lightgbm

    LearnedRanker(lightgbm.Booster(model_str=text)).save(tmp_path / "bad")
    with pytest.raises(ValueError, match="trained on features"):
        LearnedRanker.load(tmp_path / "bad")
    index.ranker.save(tmp_path / "good")
    assert LearnedRanker.load(tmp_path / "good").score(np.zeros((2, len(FEATURE_NAMES)))).shape == (2,)


def test_the_loaded_ranker_serves_compiled_with_lightgbms_scores_and_falls_back_to_lightgbm(
    trained, tmp_path, monkeypatch, caplog
) -> None:
    split, index, _ = trained
    saved = index.ranker.save(tmp_path / "ranker")
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "model.txt"]  # nothing compiled travels
    compiled = LearnedRanker.load(saved)  # compiled here, at load
    assert compiled.compiled is not None
    config = RankingConfig(user_encoder=False, exclude_history=False)
    for user in split.users[:5]:
        request = replace(feed_request(split, user, config, 10), explain=True)
        _, features = candidate_features(index, request)
        native = index.ranker.booster.predict(features, num_threads=1)
        np.testing.assert_allclose(compiled.score(features), native, rtol=0, atol=1e-12)
        served = rank(replace(index, ranker=compiled), request)  # the compiled scores, LightGBM's contributions
        np.testing.assert_allclose(served.feature_contributions.sum(axis=1), served.scores, atol=1e-5)
        assert served.item_ids == rank(index, request).item_ids
    with ThreadPoolExecutor(4) as pool:  # the compiled function reads only its arguments: threads at once
        at_once = list(pool.map(compiled.compiled.score, [features] * 32))
    assert all(np.array_equal(scores, at_once[0]) for scores in at_once)
    with pytest.raises(ValueError, match=rf"features must be \[n, {len(FEATURE_NAMES)}\], got \(2, 3\)"):
        compiled.compiled.score(np.zeros((2, 3)))
    assert compiled.compiled.score(np.zeros((0, len(FEATURE_NAMES)))).shape == (0,)
    # trees that do not score the probe as the booster does (another model's file) are refused
    other = fit(
        split_groups(index, split, config), split_groups(index, split, config), RankerConfig(rounds=3, threads=1)
    )[0]
    with caplog.at_level(logging.WARNING, logger="aisle.ranker"):
        assert load_compiled(saved / "model.txt", other.booster) is None
    assert "compiled scores differ from LightGBM's" in caplog.text
    monkeypatch.setitem(sys.modules, "lleaves", None)  # lleaves not installed: `import lleaves` fails
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aisle.ranker"):
        fallback = LearnedRanker.load(saved)
    assert fallback.compiled is None and "LightGBM's native predict serves it" in caplog.text
    np.testing.assert_array_equal(fallback.score(features), index.ranker.booster.predict(features, num_threads=1))


def _values(mean: float, n: int = 200, seed: int = 0) -> np.ndarray:
    return np.clip(mean + 0.05 * np.random.default_rng(seed).standard_normal(n), 0, 1)


def test_the_gate_shows_history_and_serves_the_ranker_only_on_gains_above_zero() -> None:
    hand = {"all": _values(0.30), "new": _values(0.20)}
    better = {"all": _values(0.30) + 0.05, "new": _values(0.20)}
    same = {"all": _values(0.30), "new": _values(0.20)}
    chosen = gate(hand, hidden=same, shown=better)
    assert chosen["exclude_history"] is False and chosen["served"] is True
    assert chosen["vs_hand_weighted"]["all"]["ci95"][0] > 0
    kept = gate(hand, hidden=same, shown=same)
    assert kept["exclude_history"] is True and kept["served"] is False  # no gain: history hidden, nothing served
    # a gain that showing history gives the hand-weighted stack as well is not the ranker's
    refused = gate(hand, hidden=same, shown=better, hand_shown=better)
    assert refused["exclude_history"] is False and refused["vs_hand_weighted"]["all"]["ci95"][0] > 0
    assert refused["served"] is False and "against the stack showing history" in describe(refused)
    kept_shown = gate(hand, hidden=same, shown=better, hand_shown=same)  # the ranker beats both stacks
    assert kept_shown["served"] is True and "showing history" in describe(kept_shown)


def test_a_pooled_gate_resamples_shoppers_not_their_cuts() -> None:
    hand = {"all": _values(0.30, 40), "new": _values(0.20, 40)}
    better = {"all": hand["all"] + np.linspace(-0.02, 0.06, 40), "new": hand["new"]}
    alone = gate(hand, hidden=better, shown=better)
    # the same 40 pairs judged at five cuts are not 200 shoppers: the interval stays as wide
    five = {view: np.tile(values, 5) for view, values in hand.items()}
    five_better = {view: np.tile(values, 5) for view, values in better.items()}
    pooled = gate(five, five_better, five_better, [f"u{i}" for i in range(40)] * 5)
    naive = gate(five, five_better, five_better)
    width = lambda d: d["vs_hand_weighted"]["all"]["ci95"][1] - d["vs_hand_weighted"]["all"]["ci95"][0]
    assert width(pooled) == pytest.approx(width(alone), rel=0.2) and width(naive) < 0.6 * width(alone)


def test_the_gate_judges_at_each_of_its_cuts_of_the_period() -> None:
    from types import SimpleNamespace

    log = shop_log()
    data = SimpleNamespace(split=temporal_split(log, quantile=0.9))
    splits = gate_splits(data, RankerConfig(gate_cuts=(0.6, 0.8)))  # type: ignore[arg-type]
    assert [s.cutoff for s in splits] == [float(np.quantile(data.split.train.timestamp, q)) for q in (0.6, 0.8)]
    assert all(s.train.timestamp.max() < s.cutoff < data.split.cutoff for s in splits)


def test_a_pooled_gate_trains_a_ranker_per_cut_and_pools_every_shopper_cut_pair() -> None:
    from types import SimpleNamespace

    from aisle_export.learn.ranker import validate

    log = shop_log(seed=1, shoppers=40)
    data = SimpleNamespace(catalog=catalog(), split=temporal_split(log, quantile=0.95))
    embeddings = np.random.default_rng(0).standard_normal((N_ITEMS, DIM)).astype(np.float32)
    config = RankerConfig(
        gate_cuts=(0.7, 0.9), train_cuts=(0.5, 0.6), stop_cuts=(0.65,), rounds=5, min_data_in_leaf=5, graded=True
    )
    report = validate(data, embeddings, RankingConfig(user_encoder=False), config, progress=False)  # type: ignore[arg-type]
    pairs = sum(len(s.users) for s in gate_splits(data, config))  # type: ignore[arg-type]
    assert [f["cut"] for f in report["fit"]] == [0.7, 0.9]
    assert report["metric"].startswith(f"ndcg@10, {pairs} shopper-cut pairs")
    assert set(report["vs_hand_weighted"]) == {"all", "new"} and isinstance(report["served"], bool)


def test_later_windows_weigh_more_and_each_shopper_weight_covers_its_rows() -> None:
    assert window_weights(3, 0.5).tolist() == [0.25, 0.5, 1.0] and window_weights(2, 1.0).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="window_decay"):
        window_weights(2, 0.0)
    a = Groups(np.ones((3, len(FEATURE_NAMES)), np.float32), np.array([1, 0, 0], np.int32), np.array([2, 1]))
    both = Groups.concat([a.weighted(0.5), a])
    assert both.weights.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert both.row_weights().tolist() == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert Groups.concat([a, a]).row_weights() is None


def test_graded_labels_count_the_shoppers_purchases_after_the_cut() -> None:
    log = Interactions(
        np.array(["u", "u", "u", "u", "v"]),
        np.array(["a", "a", "a", "b", "a"]),
        np.ones(5, np.float32),
        np.array([0.0, 5.0, 6.0, 7.0, 8.0]),
    )
    assert future_counts(log, 5.0) == {("u", "a"): 2, ("u", "b"): 1, ("v", "a"): 1}
    relevant = np.array([True, True, False, True])
    assert graded_labels(relevant, np.array([5, 0, 4, 2])).tolist() == [3, 1, 0, 2]


def test_the_base_weight_makes_a_typical_within_feed_spread_of_the_hand_score_strength_units() -> None:
    hand = COLUMN["hand_score"]
    features = np.zeros((7, len(FEATURE_NAMES)), np.float32)
    features[:, hand] = [0, 2, 0, 4, 10, 10, 10]  # spreads 1, 2 and 0; a one-row feed has none
    groups = Groups(features, np.zeros(7, np.int32), np.array([2, 2, 2, 1]))
    assert base_weight(groups, 3.0) == pytest.approx(3.0 / 1.0)  # the median of 1, 2, 0
    assert base_weight(groups, 0.0) == 0.0


def test_a_ranker_boosted_from_the_hand_weighted_score_serves_it_plus_its_trees_and_explains_it_exactly(
    trained, tmp_path
) -> None:
    split, index, _ = trained
    groups = split_groups(index, split, RankingConfig(user_encoder=False))
    settings = RankerConfig(rounds=30, min_data_in_leaf=5, threads=1, base_strength=2.0)
    ranker, report = fit(groups, groups, replace(settings, ignored_features=("events_all", "buyers")))
    assert ranker.base_weight == pytest.approx(base_weight(groups, 2.0)) == report["base_weight"] > 0
    used = ranker.booster.feature_importance(importance_type="split")
    assert used[COLUMN["events_all"]] == used[COLUMN["buyers"]] == 0 < used.sum()  # ignored: never split on
    loaded = LearnedRanker.load(ranker.save(tmp_path / "ranker"))  # compiled: the weight travels in the manifest
    assert loaded.compiled is not None and loaded.base_weight == ranker.base_weight
    config = RankingConfig(user_encoder=False, exclude_history=False)
    served_index = replace(index, ranker=loaded)
    for user in split.users[:5]:
        request = replace(feed_request(split, user, config, 10), explain=True)
        _, features = candidate_features(served_index, request)
        trees = ranker.booster.predict(features, num_threads=1)
        expected = trees + ranker.base_weight * features[:, COLUMN["hand_score"]]
        np.testing.assert_allclose(loaded.score(features), expected, atol=1e-9)
        served = rank(served_index, request)
        np.testing.assert_allclose(served.feature_contributions.sum(axis=1), served.scores, atol=1e-5)


def test_groups_concatenate_windows() -> None:
    a = Groups(np.ones((2, len(FEATURE_NAMES)), np.float32), np.array([1, 0], np.int32), np.array([2]))
    both = Groups.concat([a, a])
    assert both.features.shape[0] == 4 and both.sizes.tolist() == [2, 2]


def test_past_its_depth_the_ranker_leaves_the_hand_weighted_order_below_what_it_scored(trained) -> None:
    split, index, _ = trained
    shallow = replace(index, ranker=replace(index.ranker, manifest={"depth": 3}))
    config = RankingConfig(user_encoder=False, exclude_history=True)
    request = replace(feed_request(split, split.users[0], config, 10), explain=True)
    served = rank(shallow, request)
    rows, features = candidate_features(shallow, request)
    head = shallow.ranker.reranks(features)
    assert head.sum() == 3  # history hidden: no buy-again rows, only the hand-weighted top 3
    hand = features[:, COLUMN["hand_score"]]
    ranked = np.lexsort((rows, -shallow.ranker.score(features)))
    want = [r for r in rows[ranked] if r in set(rows[head])] + [
        r for r in rows[np.lexsort((rows, -hand))] if r not in set(rows[head])
    ]
    assert served.item_ids == shallow.item_ids[np.array(want[:10])].tolist()
    assert np.all(np.diff(served.scores) <= 0)
    explained = ~np.isnan(served.feature_contributions).any(axis=1)
    assert explained.tolist() == [True] * 3 + [False] * 7


def _verdict(served: bool, hand: list[float], ranker: list[float], exclude_history: bool = False) -> dict:
    """What :func:`validate` reports (``keep_per_user``), for a gate whose figures a test sets."""
    view = "ranker_history_hidden" if exclude_history else "ranker_history_shown"
    other = "ranker_history_shown" if exclude_history else "ranker_history_hidden"
    return {
        "metric": "ndcg@10",
        "served": served,
        "exclude_history": exclude_history,
        "fit": {},
        "vs_hand_weighted": {"all": {"delta": 0.0, "ci95": [0.0, 0.0]}},
        "means": {},
        "per_user": {
            "hand_weighted": hand,
            view: ranker,
            other: [0.0] * len(hand),
            "shoppers": [f"u{i}" for i in range(len(hand))],
        },
    }


@pytest.mark.parametrize("served", [True, False])
def test_finetune_step_writes_the_ranker_and_the_history_choice_only_when_the_gate_passes(
    trained, tmp_path, monkeypatch, served
) -> None:
    from types import SimpleNamespace

    from aisle_export.learn import ranker as step

    _, index, _ = trained
    (tmp_path / "ranker").mkdir()  # left by an earlier run: must not outlive a failed gate
    monkeypatch.setattr(step, "validate", lambda *args, **kwargs: _verdict(served, [0.1, 0.2], [0.3, 0.4]))
    monkeypatch.setattr(step, "train_ranker", lambda *args, **kwargs: (index.ranker, {"seconds": 0}))
    choice = {"served": "pretrained", "pretrained": {"exclude_history": True, "user_encoder": False}}
    data = SimpleNamespace(split=SimpleNamespace(train=None), catalog=None)
    report = step.finetune_step(data, tmp_path, choice, {"pretrained": np.zeros((1, 1))}, (tmp_path, tmp_path))
    assert (tmp_path / "ranker" / "model.txt").is_file() is served
    assert choice["pretrained"]["exclude_history"] is (not served)  # the measured choice, only with the ranker
    assert report["served"] is served and "other_stacks" in report and not report["other_stacks"]
    if served:
        assert LearnedRanker.load(tmp_path / "ranker").manifest["stack"] == "pretrained" and "path" in report


def test_finetune_step_can_serve_the_ranker_over_the_pretrained_stack_when_that_leads(
    trained, tmp_path, monkeypatch
) -> None:
    """Validation chose the user encoder's stack; its ranker failed the gate, the pretrained stack's
    passed and leads it: the pretrained stack serves with its ranker, and ranking.json says so."""
    from types import SimpleNamespace

    from aisle_export.learn import ranker as step

    _, index, _ = trained
    verdicts = {
        "user_encoder": _verdict(False, [0.30, 0.30, 0.30], [0.31, 0.29, 0.33]),
        "pretrained": _verdict(True, [0.20, 0.20, 0.20], [0.33, 0.32, 0.34], exclude_history=True),
    }
    gated, trained_over = [], []

    def validate(data, vectors, base, config, encoder, progress, keep_per_user):
        stack = "user_encoder" if base.user_encoder else "pretrained"
        assert keep_per_user and (encoder is not None) is (stack == "user_encoder")
        gated.append(stack)
        return verdicts[stack]

    def train_ranker(catalog, vectors, train, knobs, config, encoder, progress, history):
        trained_over.append((float(vectors[0, 0]), knobs.user_encoder, encoder))
        return index.ranker, {"seconds": 0}

    monkeypatch.setattr(step, "validate", validate)
    monkeypatch.setattr(step, "train_ranker", train_ranker)
    monkeypatch.setattr("aisle_server.user_encoder.UserEncoder.load", lambda path: f"encoder at {path}")
    choice = {
        "served": "user_encoder",
        "pretrained": {"exclude_history": True, "user_encoder": False},
        "user_encoder": {"exclude_history": True, "user_encoder": True},
    }
    vectors = {"pretrained": np.zeros((1, 1)), "trained": np.ones((1, 1))}
    data = SimpleNamespace(split=SimpleNamespace(train=None), catalog=None)
    report = step.finetune_step(data, tmp_path, choice, vectors, (tmp_path / "v", tmp_path / "s"))
    assert gated == ["user_encoder", "pretrained"]
    assert trained_over == [(0.0, False, None)]  # the pretrained vectors, no user encoder
    assert choice["served"] == "pretrained" and choice["pretrained"]["exclude_history"] is True
    assert LearnedRanker.load(tmp_path / "ranker").manifest["stack"] == "pretrained"
    joint = report["joint"]
    assert (joint["stack"], joint["ranker"]) == ("pretrained", True)
    assert joint["eligible"] == ["user_encoder", "pretrained + ranker"]
    assert joint["means"]["user_encoder + ranker"] == pytest.approx(0.31)
    assert joint["vs_chosen_alone"]["delta"] == pytest.approx(0.03)
    assert report["other_stacks"]["user_encoder"]["gate_passed"] is False
    text = step.describe(report)
    assert "over the pretrained stack served" in text and "over the user_encoder stack NOT served" in text
    assert "serves pretrained + ranker" in text and "user_encoder + ranker 0.3100 (not eligible)" in text


@pytest.mark.parametrize(
    ("ue_gate", "pre_ranker", "want"),
    [
        (False, [0.25, 0.25], ("user_encoder", False)),  # the pretrained stack's ranker passed but trails
        (True, [0.33, 0.33], ("pretrained", True)),  # both passed: the higher mean serves
        (True, [0.31, 0.31], ("user_encoder", True)),
        (False, [0.30, 0.30], ("user_encoder", False)),  # a tie keeps the stack validation chose alone
    ],
)
def test_joint_choice_serves_the_best_eligible_option(ue_gate, pre_ranker, want) -> None:
    gates = {
        "user_encoder": _verdict(ue_gate, [0.30, 0.30], [0.32, 0.32]),
        "pretrained": _verdict(True, [0.20, 0.20], pre_ranker),
    }
    joint = joint_choice(gates, "user_encoder")
    assert (joint["stack"], joint["ranker"]) == want
    assert ("user_encoder + ranker" in joint["eligible"]) is ue_gate


def test_joint_choice_says_when_validation_cannot_tell_the_winner_from_the_runner_up() -> None:
    rng = np.random.default_rng(0)
    stack = rng.uniform(0.0, 0.6, 60).tolist()
    close = [v + d for v, d in zip(stack, rng.normal(0.002, 0.05, 60))]  # a hair ahead, noisy
    far = [v + 0.1 for v in stack]  # ahead for every shopper
    for ranker, toss_up in ((close, True), (far, False)):
        gates = {"user_encoder": _verdict(False, stack, stack), "pretrained": _verdict(True, [0.0] * 60, ranker)}
        joint = joint_choice(gates, "user_encoder")
        ahead = np.mean(ranker) > np.mean(stack)
        assert (joint["stack"], joint["ranker"]) == (("pretrained", True) if ahead else ("user_encoder", False))
        assert joint["runner_up"] == ("user_encoder" if ahead else "pretrained + ranker")
        assert joint["vs_runner_up"]["delta"] == pytest.approx(abs(np.mean(ranker) - np.mean(stack)))
        assert (joint["vs_runner_up"]["ci95"][0] <= 0) is toss_up
        report = {**gates["pretrained"], "stack": "pretrained", "joint": joint}
        report["other_stacks"] = {"user_encoder": gates["user_encoder"]}
        assert ("a toss-up" in describe(report)) is toss_up
        assert f"over {joint['runner_up']}" in describe(report)
    lone = joint_choice({"pretrained": _verdict(False, stack, close)}, "pretrained")
    assert lone["runner_up"] is None and lone["vs_runner_up"] is None


def test_a_passed_gate_whose_ranker_lost_to_another_option_is_said_so() -> None:
    passed = {"served": False, "gate_passed": True, "exclude_history": True}
    passed["vs_hand_weighted"] = {"all": {"delta": 0.02, "ci95": [0.01, 0.03]}}
    text = describe({**_verdict(True, [0.2], [0.3]), "stack": "pretrained", "other_stacks": {"user_encoder": passed}})
    assert "over the user_encoder stack NOT served" in text and "another option led on validation" in text
    assert "the hand-weighted stack stays" not in text.splitlines()[1]


def test_only_a_trained_stack_brings_the_pretrained_one_into_the_ranker_gate() -> None:
    assert gated_stacks("pretrained") == ["pretrained"]
    assert gated_stacks("user_encoder") == ["user_encoder", "pretrained"]
    assert gated_stacks("mean") == ["mean", "pretrained"]


def test_merchandising_rules_adjust_the_rankers_scores_and_say_so(trained) -> None:
    from aisle_contract import SCORE_COMPONENT_NAMES
    from aisle_server.rules import parse

    split, index, _ = trained
    config = RankingConfig(user_encoder=False, exclude_history=False)
    request = replace(feed_request(split, split.users[0], config, 10), explain=True)
    plain = rank(index, request)
    last = plain.item_ids[-1]
    lift = float(plain.scores[0] - plain.scores[-1]) + 1.0
    rules = parse(f'[{{"id": "up", "effect": "boost", "match": "item_id == \'{last}\'", "add": {lift}}}]', {})
    boosted = rank(index, replace(request, rules=rules))
    assert boosted.item_ids[0] == last
    assert boosted.scores[0] == pytest.approx(plain.scores[-1] + lift, abs=1e-4)
    rules_part = boosted.components[:, SCORE_COMPONENT_NAMES.index("rules")]
    assert rules_part[0] == pytest.approx(lift) and (rules_part[1:] == 0).all()
    # the ranker's parts still sum to its own score; the rules' part is on top
    np.testing.assert_allclose(boosted.feature_contributions.sum(axis=1) + rules_part, boosted.scores, atol=1e-4)


def test_a_window_trains_on_at_most_max_shoppers_drawn_at_random_in_their_order() -> None:
    users = [f"u{i:03d}" for i in range(100)]
    assert window_shoppers(users, RankerConfig(max_shoppers=None)) == users
    assert window_shoppers(users, RankerConfig(max_shoppers=100)) == users
    drawn = window_shoppers(users, RankerConfig(max_shoppers=10))
    assert len(set(drawn)) == 10 and set(drawn) <= set(users) and drawn == sorted(drawn)
    assert drawn != users[:10]  # drawn, not the first ones
    assert drawn == window_shoppers(users, RankerConfig(max_shoppers=10))  # seeded
    assert drawn != window_shoppers(users, RankerConfig(max_shoppers=10, seed=1))


def _halves(joined: Groups) -> list[Groups]:
    """``joined``'s shoppers as two windows, the first half and the rest."""
    half = len(joined.sizes) // 2
    rows = int(joined.sizes[:half].sum())
    return [
        Groups(joined.features[:rows], joined.labels[:rows], joined.sizes[:half]),
        Groups(joined.features[rows:], joined.labels[rows:], joined.sizes[half:]),
    ]


def test_windows_train_the_same_model_handed_over_apart_as_joined(trained) -> None:
    split, index, _ = trained
    joined = split_groups(index, split, RankingConfig(user_encoder=False))
    first, rest = _halves(joined)
    apart = [first.weighted(0.5), rest]
    settings = RankerConfig(rounds=20, min_data_in_leaf=5, threads=1, base_strength=1.0)
    one, one_fit = fit(Groups.concat(apart), joined, settings)
    two, two_fit = fit(apart, apart, settings)
    assert base_weight(apart, 1.0) == base_weight(Groups.concat(apart), 1.0) == one_fit["base_weight"] > 0
    assert two_fit["rows"] == one_fit["rows"] == len(joined.labels) and two_fit["shoppers"] == len(joined.sizes)
    np.testing.assert_array_equal(one.booster.predict(joined.features), two.booster.predict(joined.features))
    assert one.booster.model_to_string() == two.booster.model_to_string()


def test_rows_released_before_boosting_train_the_same_model(trained) -> None:
    """``fit(release=True)`` (what ``train_ranker`` runs): the windows' lists come back empty, the
    model and its report are those of a fit that kept the rows; anything but lists is refused."""
    split, index, _ = trained
    joined = split_groups(index, split, RankingConfig(user_encoder=False))
    apart = _halves(joined)
    settings = RankerConfig(rounds=20, min_data_in_leaf=5, threads=1)
    kept, kept_fit = fit(apart, apart, settings)
    train, stop = list(apart), list(apart)
    released, released_fit = fit(train, stop, settings, release=True)
    assert train == [] and stop == []
    assert released.booster.model_to_string() == kept.booster.model_to_string()
    assert {k: v for k, v in released_fit.items() if k != "fit_seconds"} == {
        k: v for k, v in kept_fit.items() if k != "fit_seconds"
    }
    with pytest.raises(TypeError, match="lists"):
        fit(joined, joined, settings, release=True)


def _banded_groups(seed: int = 0, feeds: int = 200, size: int = 20) -> Groups:
    """Feeds where the relevant candidates sit in a middle band of ``hand_score`` (0.4 … 0.6): what
    unconstrained trees learn as a bump, and a monotone ranker may not."""
    rng = np.random.default_rng(seed)
    features = rng.random((feeds * size, len(FEATURE_NAMES))).astype(np.float32)
    hand = features[:, COLUMN["hand_score"]]
    for start in range(0, len(hand), size):  # hand_rank: the place by hand_score within its feed
        feed = hand[start : start + size]
        features[start : start + size, COLUMN["hand_rank"]] = np.argsort(np.argsort(-feed))
    labels = ((hand > 0.4) & (hand < 0.6)).astype(np.int32)
    return Groups(features, labels, np.full(feeds, size))


def test_the_ranker_score_never_falls_as_the_stack_score_rises_unless_unconstrained() -> None:
    groups = _banded_groups()
    probe = np.tile(groups.features[0], (101, 1)).astype(np.float64)
    probe[:, COLUMN["hand_score"]] = np.linspace(0.0, 1.0, 101)
    probe[:, COLUMN["hand_rank"]] = np.linspace(19.0, 0.0, 101)  # a higher score, a better place
    settings = RankerConfig(rounds=40, min_data_in_leaf=5, threads=1)
    free, _ = fit(groups, groups, replace(settings, monotone=()))
    assert (np.diff(free.score(probe)) < -1e-9).any()  # the band's far side is scored down: a bump
    constrained, report = fit(groups, groups, settings)
    assert settings.monotone == (("hand_score", 1), ("hand_rank", -1))
    assert (np.diff(constrained.score(probe)) >= -1e-12).all()
    assert constrained.manifest["params"]["monotone_constraints"] == settings.monotone_constraints()
    assert report["best_iteration"] >= 1


@pytest.mark.parametrize(
    ("monotone", "named"),
    [((("colour", 1),), "colour"), ((("hand_score", 2),), "hand_score"), ((("hand_rank", 0),), "hand_rank")],
)
def test_a_monotone_constraint_on_an_unknown_feature_or_without_a_sign_is_refused(monotone, named) -> None:
    with pytest.raises(ValueError, match=f"monotone: '{named}'"):
        RankerConfig(monotone=monotone)


def test_the_split_search_and_objective_reach_lightgbm_and_an_unknown_objective_is_refused() -> None:
    groups = _banded_groups()
    settings = RankerConfig(rounds=20, min_data_in_leaf=5, threads=1)
    assert settings.extra_trees and settings.objective == "lambdarank"
    drawn, _ = fit(groups, groups, settings)
    searched, _ = fit(groups, groups, replace(settings, extra_trees=False))
    xendcg, _ = fit(groups, groups, replace(settings, objective="rank_xendcg"))
    assert drawn.manifest["params"]["extra_trees"] and not searched.manifest["params"]["extra_trees"]
    assert xendcg.manifest["params"]["objective"] == "rank_xendcg"
    probe = groups.features[:200].astype(np.float64)
    assert not np.allclose(drawn.score(probe), searched.score(probe))  # thresholds drawn, not searched
    with pytest.raises(ValueError, match="objective: 'binary'"):
        RankerConfig(objective="binary")  # its score is a probability: not what the compiled trees serve
