"""IVF's ``nprobe`` (IVF-FP16, IVF-Flat) measured at build time: the ladder it tries, the choice from a recall
curve, the exact top-k it is measured against, and the chosen value saved and loaded with the index."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import aisle_server.ann as ann
from aisle_server.ann import ANN_META, AnnIndex, calibrate_nprobe, exact_top, nprobe_ladder, smallest_reaching


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((40, 32), dtype=np.float32)
    x = centers[rng.integers(0, 40, 4000)] + 0.8 * rng.standard_normal((4000, 32), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ladder_steps_by_about_root_two_and_ends_at_every_list():
    assert nprobe_ladder(1) == [1] and nprobe_ladder(2) == [1, 2]
    assert nprobe_ladder(100) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 100]
    steps = nprobe_ladder(4000)
    assert steps[-1] == 4000 and all(b / a <= 2 for a, b in itertools.pairwise(steps))


def test_smallest_reaching_picks_the_first_step_at_the_target_else_the_largest():
    curve = {4: 0.90, 8: 0.985, 12: 0.992, 16: 0.999}
    assert smallest_reaching(curve, 0.99) == 12
    assert smallest_reaching(curve, 0.98) == 8
    assert smallest_reaching({4: 0.5, 8: 0.7}, 0.99) == 8


def test_exact_top_matches_a_full_sort_across_chunks(vectors, monkeypatch):
    monkeypatch.setattr(ann, "EXACT_CHUNK", 333)  # chunks smaller than k, and a ragged last one
    queries = vectors[[5, 77, 1234]]
    found = exact_top(vectors, queries, 50)
    for row, query in zip(found, queries):
        assert set(row.tolist()) == set(np.argsort(-(vectors @ query))[:50].tolist())


def test_calibration_picks_the_smallest_step_reaching_the_target_and_holds_on_other_queries(vectors):
    built = AnnIndex.build(vectors, nlist=64, nprobe=1)
    nprobe, recall, curve = calibrate_nprobe(built.index, vectors, target=0.99, queries=100)
    steps = nprobe_ladder(64)
    assert recall >= 0.99 and curve[nprobe] == recall
    assert 1 < nprobe < 64, "a clustered catalog needs some lists, not all"
    assert curve[steps[steps.index(nprobe) - 1]] < 0.99, "the step below fell short"
    assert list(curve) == steps[: steps.index(nprobe) + 1], "the steps stop at the first that reaches it"
    assert built.index.nprobe == 1, "the index's own nprobe is left as it was"
    fresh = ann.sample_queries(vectors, 100, seed=9)  # queries the choice was not made on
    truth = exact_top(vectors, fresh, 200)
    chosen = AnnIndex(built.index, nprobe)
    held = np.mean([len(np.intersect1d(chosen.search(q, 200), t)) / 200 for q, t in zip(fresh, truth)])
    assert held >= 0.98


def test_build_saves_the_calibrated_nprobe_and_a_given_one_wins(vectors, tmp_path):
    built = AnnIndex.build(vectors, nlist=64)
    assert built.nprobe_recall is not None and built.nprobe_recall >= ann.NPROBE_RECALL
    built.save(tmp_path)
    meta = json.loads((tmp_path / ANN_META).read_text())
    assert meta["nprobe"] == built.nprobe and meta["nprobe_recall"] == round(built.nprobe_recall, 4)
    loaded = AnnIndex.load(tmp_path)
    assert loaded.nprobe == built.nprobe and loaded.index.nprobe == built.nprobe
    assert loaded.nprobe_recall == meta["nprobe_recall"]
    given = AnnIndex.build(vectors, nlist=64, nprobe=5)
    given.save(tmp_path)
    assert given.nprobe == 5 and "nprobe_recall" not in json.loads((tmp_path / ANN_META).read_text())
    (tmp_path / ANN_META).write_text('{"kind": "ivf_flat", "nprobe": 7, "refine": 0}\n')  # before calibration
    old = AnnIndex.load(tmp_path)
    assert old.nprobe == 7 and old.nprobe_recall is None
