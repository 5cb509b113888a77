"""Popularity and co-occurrence learned from a log, and how the served index takes them in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aisle_export.data.interactions import Interactions
from aisle_export.index.log_signals import DAY, build_log_signals
from aisle_server.cooccurrence import Cooccurrence
from aisle_server.index import CatalogIndex
from aisle_server.learned import LOG_SIGNALS_DIRNAME, LogSignals, attach_learned


def log(rows: list[tuple[str, str, float]], weights: list[float] | None = None) -> Interactions:
    users, items, ts = zip(*rows)
    return Interactions(
        np.array(users),
        np.array(items),
        np.asarray(weights if weights is not None else [1.0] * len(rows), dtype=np.float32),
        np.array(ts, dtype=np.float64),
    )


def index_of(ids: list[str], popularity: list[float] | None = None) -> CatalogIndex:
    n = len(ids)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 4)).astype(np.float32)
    return CatalogIndex(
        item_ids=np.array(ids),
        embeddings=vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        titles=np.array(ids),
        categories=np.array([""] * n),
        created_at=np.full(n, np.nan),
        popularity=np.asarray(popularity or [0.0] * n, dtype=np.float32),
        in_stock=np.ones(n, bool),
    )


def test_cooccurrence_is_shopper_overlap_cosine() -> None:
    rows = [
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u2", "a", 3),
        ("u2", "b", 4),
        ("u2", "c", 5),
        ("u3", "c", 6),
        ("u3", "c", 7),
    ]  # u3 bought c twice: one shopper counts once
    signals = build_log_signals(log(rows), now=7.0, popularity_half_life_days=None)
    ids = signals.item_ids.tolist()
    assert ids == ["a", "b", "c"]
    # shoppers: a {u1,u2}, b {u1,u2}, c {u2,u3}; cos(a,b) = 2/2 = 1, cos(a,c) = cos(b,c) = 1/2
    neighbors = {
        ids[r]: [(ids[j], round(float(w), 6)) for j, w in zip(signals.neighbors[r], signals.weights[r]) if j >= 0]
        for r in range(3)
    }
    assert neighbors == {"a": [("b", 1.0), ("c", 0.5)], "b": [("a", 1.0), ("c", 0.5)], "c": [("a", 0.5), ("b", 0.5)]}
    np.testing.assert_allclose(signals.popularity, [2, 2, 3])


def test_popularity_decays_from_now_and_weights_count() -> None:
    rows = [("u1", "old", 0.0), ("u2", "new", 30 * DAY), ("u3", "new", 30 * DAY)]
    signals = build_log_signals(log(rows, weights=[1.0, 0.5, 1.0]), now=30 * DAY, popularity_half_life_days=30)
    popularity = dict(zip(signals.item_ids.tolist(), signals.popularity.tolist()))
    assert popularity == pytest.approx({"old": 0.5, "new": 1.5})
    assert signals.manifest["now"] == 30 * DAY and signals.manifest["interactions"] == 3


def test_neighbour_lists_keep_the_strongest(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [(f"u{rng.integers(30)}", f"i{rng.integers(25)}", float(t)) for t in range(400)]
    signals = build_log_signals(log(rows), max_neighbors=5)
    assert signals.neighbors.shape == (len(signals.item_ids), 5)
    assert (np.diff(signals.weights, axis=1) <= 1e-7).all()  # strongest first
    assert not any(r in set(signals.neighbors[r].tolist()) for r in range(len(signals.item_ids)))  # no self
    loaded = LogSignals.load(signals.save(tmp_path / "s"))
    for name in ("item_ids", "popularity", "neighbors", "weights"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(signals, name))


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="max_neighbors"):
        build_log_signals(log([("u", "a", 1.0)]), max_neighbors=0)
    with pytest.raises(ValueError, match="popularity_half_life_days"):
        build_log_signals(log([("u", "a", 1.0)]), popularity_half_life_days=-1)


def test_aligned_to_catalog_rows_by_id(tmp_path: Path) -> None:
    rows = [("u1", "a", 1), ("u1", "gone", 2), ("u2", "a", 3), ("u2", "b", 4)]
    signals = build_log_signals(log(rows), popularity_half_life_days=None)
    index = index_of(["new", "b", "a"], popularity=[100.0, 0.0, 0.0])  # other order, an item the log never saw
    popularity, cooccurrence = signals.aligned(index)
    np.testing.assert_allclose(popularity, [0.0, 1.0, 2.0])
    # a's neighbours: b (row 1) and "gone" (not in the catalog: dropped)
    assert [r for r in cooccurrence.neighbors[2].tolist() if r >= 0] == [1]
    assert (cooccurrence.neighbors[0] == -1).all() and (cooccurrence.weights[0] == 0).all()

    signals.save(tmp_path / "learned" / LOG_SIGNALS_DIRNAME)
    served = attach_learned(index, tmp_path / "learned")
    assert served.cooccurrence is not None
    np.testing.assert_allclose(served.popularity_prior, np.log1p([0.0, 1.0, 2.0]) / np.log1p(2.0))
    assert served.item_ids[served.popular_rows[0]] == "a"
    assert attach_learned(index, tmp_path / "nothing-here") is index  # no learned/: as before


def test_cooccurrence_scores_sum_weighted_neighbours() -> None:
    cooccurrence = Cooccurrence(
        np.array([[1, 2], [0, -1], [0, -1]], dtype=np.int32),
        np.array([[0.5, 0.25], [0.5, 0.0], [0.25, 0.0]], dtype=np.float32),
    )
    scores = cooccurrence.scores(np.array([0, 1]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(scores, [1.0, 0.5, 0.25])
    assert cooccurrence.scores(np.array([], dtype=np.int64), np.array([])).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="must be equal"):
        Cooccurrence(np.zeros((2, 3), np.int32), np.zeros((2, 2), np.float32))


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A real (briefly trained) user encoder over the 4-d items of ``index_of``."""
    from aisle_export.learn.user_encoder import UserEncoderConfig, train_user_encoder

    ids = [f"i{r}" for r in range(12)]
    index = index_of(ids)
    rng = np.random.default_rng(0)
    sequences = {
        f"u{u}": ([f"i{(s + j) % 12}" for j in range(6)], 1.7e9 + np.arange(6) * 3600.0, ["view"] * 6)
        for u, s in enumerate(rng.integers(0, 12, 30))
    }
    out = tmp_path_factory.mktemp("learned") / "user_encoder"
    train_user_encoder(
        ids,
        np.asarray(index.embeddings),
        sequences,
        out,
        UserEncoderConfig(max_len=8, hidden=8, heads=2, layers=1, epochs=1, batch_size=8),
        item_tower_sha256="a" * 64,
        progress=False,
    )
    return out


def test_user_encoder_attaches_only_to_the_item_tower_it_was_trained_on(tiny_encoder: Path) -> None:
    ids = [f"i{r}" for r in range(12)]
    same = replace_manifest(index_of(ids), "a" * 64)
    served = attach_learned(same, tiny_encoder.parent)
    assert served.user_encoder is not None and served.user_encoder.dim == 4
    with pytest.raises(ValueError, match="item tower"):
        attach_learned(replace_manifest(index_of(ids), "b" * 64), tiny_encoder.parent)


def replace_manifest(index: CatalogIndex, item_encoder_sha256: str) -> CatalogIndex:
    index.manifest["item_encoder_sha256"] = item_encoder_sha256
    return index


def test_replace_directory_swaps_whole_directories(tmp_path: Path) -> None:
    from aisle_export.core.files import replace_directory

    def write(files: dict[str, str]):
        def into(directory: Path) -> None:
            directory.mkdir(parents=True)
            for name, text in files.items():
                (directory / name).write_text(text)

        return into

    final = replace_directory(tmp_path / "signals", write({"a": "1", "b": "1"}))
    assert sorted(p.name for p in final.iterdir()) == ["a", "b"]
    replace_directory(final, write({"a": "2"}))
    assert [(p.name, p.read_text()) for p in final.iterdir()] == [("a", "2")]  # nothing of the old one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signals"]  # no staging or old directory left
