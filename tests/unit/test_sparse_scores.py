"""``SparseScores.best``: the allowed rows best first, ties by row, as a full sort of the dense scores
gives them, whether its answer lies in the head it sorts first or past it."""

import numpy as np
import pytest

from aisle_server.sparse_scores import SparseScores

SIZE = 20_000


def brute_force(rows: np.ndarray, values: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    positive = values > 0
    rows, values = rows[positive], values[positive]
    order = sorted(zip(-values.astype(np.float64), rows.tolist()))
    return np.array([row for _, row in order if allowed[row]][:n], dtype=np.int64)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("allowed_share", [1.0, 0.5, 0.02])  # 0.02: the sorted head runs out of allowed rows
@pytest.mark.parametrize("distinct", [3, 1000])  # 3: most rows tie with the head's last value
def test_best_is_the_full_sorts_allowed_prefix(seed, allowed_share, distinct):
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(SIZE, 6000, replace=False)).astype(np.int64)
    values = (rng.integers(0, distinct, len(rows)) / distinct).astype(np.float32)  # zeros included
    allowed = rng.random(SIZE) < allowed_share
    scores = SparseScores(rows, values, SIZE)
    for n in (10, 200):
        np.testing.assert_array_equal(scores.best(n, allowed), brute_force(rows, values, allowed, n))


def test_best_of_few_rows_and_of_none():
    allowed = np.ones(10, dtype=bool)
    scores = SparseScores(np.array([2, 5, 7]), np.array([0.5, 0.9, 0.5], dtype=np.float32), 10)
    np.testing.assert_array_equal(scores.best(2, allowed), [5, 2])
    np.testing.assert_array_equal(scores.best(5, allowed), [5, 2, 7])
    empty = SparseScores(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), 10)
    assert empty.best(3, allowed).tolist() == []
    np.testing.assert_array_equal(empty.best(3, allowed, pad=True), [0, 1, 2])
