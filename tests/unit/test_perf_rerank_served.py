"""perf.bench_rerank_served's pure pieces: the order of the load windows (the grown catalog: test_perf_bigbasket). No server."""

from __future__ import annotations

from perf import bench_rerank_served as bench


def test_every_window_runs_once_a_round_in_reversed_order_every_other_round():
    first = bench.window_order(["a", "b"], 0, fastapi=True)
    assert len(first) == 2 * len(bench.MODES) + 1 and len(set(first)) == len(first)
    assert first[-1] == (bench.FASTAPI, "") and first[0][0] == "a"
    assert bench.window_order(["a", "b"], 1, fastapi=True) == first[::-1]
    assert bench.window_order(["a"], 2) == [("a", mode) for mode in bench.MODES]
