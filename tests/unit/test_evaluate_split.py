"""The temporal split: nothing from after the cutoff leaks into what training or the ranker sees."""

from __future__ import annotations

import numpy as np
import pytest

from aisle_export.data.movielens import Interactions
from aisle_export.data.splits import temporal_split, validation_split


def _log(rows: list[tuple[str, str, float]]) -> Interactions:
    users, items, ts = zip(*rows)
    return Interactions(
        np.array(users), np.array(items), np.ones(len(rows), dtype=np.float32), np.array(ts, dtype=np.float64)
    )


@pytest.fixture()
def random_log() -> Interactions:
    rng = np.random.default_rng(3)
    n = 3000
    return _log([(f"u{rng.integers(40)}", f"i{rng.integers(200)}", float(rng.integers(0, 10_000))) for _ in range(n)])


def test_no_leakage(random_log: Interactions) -> None:
    split = temporal_split(random_log, quantile=0.8, max_history=7, n_targets=4)
    assert split.cutoff == pytest.approx(np.quantile(random_log.timestamp, 0.8))
    assert (split.train.timestamp < split.cutoff).all()
    assert len(split.train) == int((random_log.timestamp < split.cutoff).sum())
    after = {
        (u, i) for u, i, t in zip(random_log.user_id, random_log.item_id, random_log.timestamp) if t >= split.cutoff
    }
    before = {
        (u, i) for u, i, t in zip(random_log.user_id, random_log.item_id, random_log.timestamp) if t < split.cutoff
    }
    assert split.users
    for user in split.users:
        history, targets = split.histories[user], split.targets[user]
        assert 1 <= len(history) <= 7 and 1 <= len(targets) <= 4
        assert all(ts < split.cutoff for _, ts in history)
        assert [ts for _, ts in history] == sorted(ts for _, ts in history)
        assert all((user, item) in after for item in targets)  # every target is a future event
        assert not any((user, item) in before for item in targets)  # ... the user had not seen before
        assert len(set(targets)) == len(targets)


def test_targets_are_the_next_items_in_time() -> None:
    log = _log(
        [("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("a", "z", 9), ("a", "w", 8), ("a", "y", 10), ("c", "q", 9.5)]
    )
    split = temporal_split(log, quantile=0.5, n_targets=2)
    assert split.cutoff == pytest.approx(8.0)  # the median time
    assert split.targets == {"a": ["w", "z"]}  # b has nothing after the cutoff; c nothing before
    assert split.histories["a"] == [("x", 1.0), ("y", 2.0)]


def test_validation_split_is_inside_training(random_log: Interactions) -> None:
    split = temporal_split(random_log, quantile=0.8)
    valid = validation_split(split, quantile=0.8)
    assert valid.cutoff < split.cutoff
    assert (valid.train.timestamp < valid.cutoff).all()
    assert len(valid.train) + sum(split.train.timestamp >= valid.cutoff) == len(split.train)
    for user in valid.users:
        assert all(ts < split.cutoff for _, ts in valid.histories[user])


def test_bad_quantile(random_log: Interactions) -> None:
    with pytest.raises(ValueError):
        temporal_split(random_log, quantile=1.0)
