"""The next-basket baselines of ``aisle evaluate`` (GP-TopFreq, item-kNN, TIFU-KNN) and the three
views (all next items, repeats only, new items only), on tiny hand-made logs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_log_eval import DIM, N_ITEMS, catalog, data  # noqa: F401  (data: the shared fixture)

from aisle_export.data.interactions import Interactions
from aisle_export.data.splits import TemporalSplit, sample_shoppers, temporal_split
from aisle_export.index.log_signals import split_signals
from aisle_export.index.writing import served_index
from aisle_export.judge import feed, rankers
from aisle_server.index import CatalogIndex
from aisle_server.ranking import RankingConfig

CUT = 1000.0
DAY = 86400.0


def _log(rows: list[tuple[str, str, float]]) -> Interactions:
    users, items, ts = zip(*rows)
    return Interactions(np.array(users), np.array(items), np.ones(len(rows), np.float32), np.array(ts, np.float64))


def _split_and_index(rows: list[tuple[str, str, float]], **kwargs) -> tuple[TemporalSplit, CatalogIndex]:
    split = temporal_split(_log(rows), cutoff=CUT, **kwargs)
    vectors = np.random.default_rng(0).standard_normal((N_ITEMS, DIM)).astype(np.float32)
    return split, served_index(catalog(), vectors, split_signals(split))


def _crowd(item: str, n: int, t: float = 10.0) -> list[tuple[str, str, float]]:
    """``n`` shoppers who had only ``item`` in the training period: makes it the most popular."""
    return [(f"crowd-{item}-{j}", item, t) for j in range(n)]


def test_gp_topfreq_puts_the_shoppers_most_frequent_item_first_counting_its_whole_training_history() -> None:
    rows = [
        ("u", "i2", 1.0),
        ("u", "i2", 2.0),
        ("u", "i2", 3.0),
        ("u", "i1", 4.0),
        ("u", "i1", 5.0),
        ("u", "i3", 6.0),
        ("u", "i3", 7.0),
        ("u", "i4", 8.0),
        ("u", "i7", CUT + 1),
        *_crowd("i9", 5),
    ]
    split, index = _split_and_index(rows, max_history=2)  # the last 2 events only: counts must not stop there
    assert split.histories["u"] == [("i3", 7.0), ("i4", 8.0)]
    ranked = rankers.gp_topfreq_ranker(index, split)("u", 5)
    assert ranked == ["i2", "i3", "i1", "i4", "i9"]  # i3 before i1: same count, had more recently; then popularity


def test_item_knn_sums_raw_cooccurrence_counts_over_the_history_and_skips_the_history() -> None:
    rows = [
        *[(f"a{j}", item, 1.0) for j in range(3) for item in ("i10", "i11")],  # i10 with i11: 3 shoppers
        *[(f"b{j}", item, 1.0) for j in range(2) for item in ("i10", "i12")],  # i10 with i12: 2
        *[(f"c{j}", item, 1.0) for j in range(2) for item in ("i13", "i12")],  # i13 with i12: 2
        *_crowd("i9", 8),
        ("t", "i10", 5.0),
        ("t", "i13", 6.0),
        ("t", "i20", CUT + 1),
    ]
    split, index = _split_and_index(rows)
    ranked = rankers.item_knn_ranker(index, split)("t", 3)
    # summed: i12 = 2 + 2 = 4 beats i11 = 3 (by the best single neighbour i11 would win); then popularity
    assert ranked == ["i12", "i11", "i9"]
    assert not {"i10", "i13"} & set(rankers.item_knn_ranker(index, split)("t", 10))


def test_tifu_vectors_decay_baskets_inside_a_group_and_groups_across() -> None:
    rows = [
        ("u", "i1", 0 * DAY),
        ("u", "i1", 1 * DAY),
        ("u", "i3", 2 * DAY),
        ("u", "i3", 2 * DAY + 60),  # the same day: one basket, counted once
        ("u", "i5", 3 * DAY),
    ]
    split = temporal_split(_log(rows), cutoff=3 * DAY)
    index = served_index(catalog(), np.ones((N_ITEMS, DIM), np.float32), split_signals(split))
    settings = rankers.TifuKnn(group_size=2, within_group_decay=0.4, across_group_decay=0.5)
    ids, vectors = rankers.tifu_vectors(index, split, settings)
    assert ids.tolist() == ["u"]
    own = vectors.toarray()[0]
    # baskets newest first: day 2 (group 0, weight 1), day 1 (group 0, 0.4), day 0 (group 1 of one basket, 0.5);
    # a group is the mean of its baskets, the user the mean of its 2 groups
    assert own[index.rows_of(["i3"])[0]] == pytest.approx(1.0 / 2 / 2)
    assert own[index.rows_of(["i1"])[0]] == pytest.approx(0.4 / 2 / 2 + 0.5 / 1 / 2)
    assert own.sum() == pytest.approx(0.25 + 0.1 + 0.25)


def _tifu_log() -> list[tuple[str, str, float]]:
    rows = [
        ("u", "i1", 0 * DAY),
        ("u", "i1", 1 * DAY),
        ("u", "i3", 2 * DAY),
        ("u", "i20", CUT * DAY),
        *[(f"near{j}", item, 1 * DAY) for j in range(2) for item in ("i3", "i5")],  # like u (i3), and had i5
        *[(f"far{j}", "i6", 1 * DAY) for j in range(6)],  # popular, nobody like u
    ]
    return rows


def test_tifu_knn_with_alpha_one_is_the_decayed_personal_frequency_order() -> None:
    split = temporal_split(_log(_tifu_log()), cutoff=CUT * DAY)
    index = served_index(catalog(), np.ones((N_ITEMS, DIM), np.float32), split_signals(split))
    alone = rankers.TifuKnn(alpha=1.0, within_group_decay=0.4)
    # decayed: i3 (newest basket, 1.0) before i1 (0.4 + 0.16), though i1 is the more frequent; then popularity
    assert rankers.tifu_knn_ranker(index, split, alone)("u", 3) == ["i3", "i1", "i6"]


def test_tifu_knn_neighbours_bring_what_similar_shoppers_had_when_alpha_is_below_one() -> None:
    split = temporal_split(_log(_tifu_log()), cutoff=CUT * DAY)
    index = served_index(catalog(), np.ones((N_ITEMS, DIM), np.float32), split_signals(split))
    blended = rankers.TifuKnn(neighbours=2, alpha=0.7, within_group_decay=0.4)
    # i3: 0.7 × 1/3 own + 0.3 × 1 from the neighbours; i5: 0.3 × 1, the neighbours only; i1: 0.7 × 0.56/3
    assert rankers.tifu_knn_ranker(index, split, blended)("u", 4) == ["i3", "i5", "i1", "i6"]


def test_the_three_views_count_repeats_in_all_and_repeat_but_not_in_new() -> None:
    rows = [
        ("r", "i1", 1.0),
        ("r", "i2", 2.0),
        ("r", "i1", CUT + 1),  # a repeat
        ("r", "i5", CUT + 2),  # new
        ("n", "i3", 1.0),
        ("n", "i6", CUT + 1),  # new only: no repeat target
        *_crowd("i9", 3),
    ]
    split, index = _split_and_index(rows)
    assert split.next_items == {"r": ["i1", "i5"], "n": ["i6"]}
    assert split.repeat_targets == {"r": ["i1"], "n": []}
    assert split.targets == {"r": ["i5"], "n": ["i6"]}  # unchanged: new items only
    views = feed.view_targets(split)
    assert views["all"]["r"] == ["i1", "i5"] and "i1" not in views["new"]["r"]

    reference = feed.Reference.of(index, split)
    repeats_only = {"r": ["i1"], "n": ["i3"]}  # each shopper's own past item
    scored = feed.score_views(lambda user, k: repeats_only[user][:k], split, reference, (10, 20))
    assert scored["views"]["repeat"]["users"] == 1  # n has no repeat: left out of that view
    assert scored["views"]["all"]["users"] == 2 and scored["views"]["new"]["users"] == 2
    assert scored["views"]["repeat"]["hit_rate@10"] == 1.0
    assert scored["views"]["all"]["hit_rate@10"] == pytest.approx(0.5)  # r's repeat counts, n's i3 is no target
    assert scored["views"]["new"]["hit_rate@10"] == 0.0 == scored["hit_rate@10"]  # the row's own keys: new items


def test_evaluate_log_reports_the_new_baselines_and_the_three_views(data, tmp_path, monkeypatch) -> None:  # noqa: F811
    vectors = np.random.default_rng(1).standard_normal((N_ITEMS, DIM)).astype(np.float32)
    monkeypatch.setattr(feed, "embed_catalog", lambda *args, **kwargs: vectors)
    grid = feed.KnobGrid(popularity=(0.0, 1.0), cooccurrence=(0.0, 0.1))
    report = feed.evaluate_log(data, tmp_path, progress=False, grid=grid, name="r")
    names = [row["name"] for row in report["rows"]]
    for wanted in ("GP-TopFreq", "item-kNN", "TIFU-KNN", "repeats allowed (exclude_history=False)"):
        assert any(wanted in name for name in names), wanted
    for row in report["rows"]:
        assert set(row["views"]) == {"all", "repeat", "new"}
        assert row["views"]["new"]["ndcg@10"] == pytest.approx(row["ndcg@10"])
    by_name = {row["name"]: row for row in report["rows"]}
    default = by_name["Aisle default, no training (pretrained + mean + log signals)"]
    assert default["views"]["repeat"]["users"] > 0 and default["views"]["repeat"]["hit_rate@20"] == 0.0
    topfreq = next(row for name, row in by_name.items() if name.startswith("GP-TopFreq"))
    assert topfreq["views"]["repeat"]["hit_rate@20"] > 0.0  # repeats recommended by design
    markdown = (tmp_path / "r.md").read_text()
    assert "### Repeat items only" in markdown and "### All next items" in markdown
    # every row against popularity and GP-TopFreq in each view with shoppers, paired; no per-shopper values in the JSON
    for view in ("all", "repeat", "new"):
        against = {(c["row"], c["vs"]) for c in report["view_comparisons"][view]}
        assert (default["name"], topfreq["name"]) in against and (topfreq["name"], names[0]) in against
    repeat = {(c["row"], c["vs"]): c for c in report["view_comparisons"]["repeat"]}
    assert repeat[(default["name"], topfreq["name"])]["hit_rate@20"]["delta"] < 0  # no repeats against the repeats
    saved = json.loads((tmp_path / "r.json").read_text())
    assert all("per_user" not in scored for row in saved["rows"] for scored in row["views"].values())
    assert markdown.count("Paired bootstrap") == 1 + 3  # the main table's and one per view


def test_batched_aisle_ranker_gives_each_shopper_the_lists_of_rank_and_sampling_keeps_whole_shoppers() -> None:
    rng = np.random.default_rng(3)
    rows = [(f"u{u}", f"i{int(i)}", float(t)) for u in range(40) for t, i in enumerate(rng.integers(0, N_ITEMS, 6))]
    rows += [(f"u{u}", f"i{int(rng.integers(0, N_ITEMS))}", CUT + 1.0 + u) for u in range(40)]
    split, index = _split_and_index(rows)
    config = RankingConfig(cooccurrence_weight=0.3)
    plain, batched = rankers.aisle_ranker(index, split, config), rankers.batched_aisle_ranker(index, split, config, 7)
    assert len(split.users) > 7  # several blocks
    for k in (3, 10):
        assert [batched(u, k) for u in split.users] == [plain(u, k) for u in split.users]
    sampled = sample_shoppers(split, 5, seed=1)
    assert len(sampled.users) == 5 and set(sampled.users) < set(split.users)
    for user in sampled.users:  # each drawn shopper keeps all of its own data
        assert (sampled.histories[user], sampled.targets[user]) == (split.histories[user], split.targets[user])
    assert sampled.train is split.train and sample_shoppers(split, 10**6) is split
