"""Load generator math and bookkeeping (perf/lib/loadgen.py, perf/lib/timing.py); no assertion on wall-clock time."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from perf.lib import loadgen, timing


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
def test_percentile_matches_numpy_linear(q, n):
    values = np.random.default_rng(n).exponential(10.0, n).tolist()
    assert timing.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges():
    assert math.isnan(timing.percentile([], 50))
    assert timing.percentile([3.0], 99) == 3.0
    assert timing.percentile([1, 2, 3, 4], 50) == 2.5
    with pytest.raises(ValueError):
        timing.percentile([1.0], 101)


def test_summarize_converts_to_ms_and_rates():
    result = loadgen.summarize(4, [0.010, 0.020, 0.030, 0.040], errors=1, window_s=2.0)
    assert result.completed == 4 and result.errors == 1
    assert result.throughput == 2.0
    assert result.p50_ms == pytest.approx(25.0)
    assert result.mean_ms == pytest.approx(25.0)
    assert result.p99_ms == pytest.approx(39.7)


def test_summarize_empty_window():
    result = loadgen.summarize(1, [], errors=0, window_s=0.0)
    assert result.completed == 0 and math.isnan(result.throughput) and math.isnan(result.p50_ms)


def test_run_uses_every_worker_and_counts_errors_apart():
    seen, lock = [], threading.Lock()
    made = []

    def make_call():
        made.append(1)

        def call(request):
            with lock:
                seen.append(request["i"])
            if request["i"] % 5 == 0:
                raise RuntimeError("rejected")

        return call

    requests = [{"i": i} for i in range(20)]
    result = loadgen.run(make_call, requests, concurrency=3, duration_s=30.0, warmup_s=0.0, max_requests=60)
    assert len(made) == 3
    assert len(seen) == 60
    assert set(seen) == set(range(20))  # the mix is walked round-robin by all workers
    assert result.completed + result.errors <= 60
    assert result.errors > 0 and result.completed > 0
    assert result.completed / (result.completed + result.errors) == pytest.approx(0.8, abs=0.1)


def test_run_rejects_bad_arguments():
    with pytest.raises(ValueError):
        loadgen.run(lambda: lambda r: None, [{"q": 1}], concurrency=0)
    with pytest.raises(ValueError):
        loadgen.run(lambda: lambda r: None, [], concurrency=1)


def test_inprocess_target_passes_query_and_k():
    calls = []
    call = loadgen.make_inprocess(lambda q, k: calls.append((q, k)))()
    call({"query": "toy story", "k": 10})
    assert calls == [("toy story", 10)]


def test_an_open_loop_run_sends_each_due_request_once_in_order_with_at_most_concurrency_in_flight():
    seen, lock, flying = [], threading.Lock(), [0, 0]  # requests seen; in flight now, at most

    def make_call():
        def call(request):
            with lock:
                seen.append(request["i"])
                flying[0] += 1
                flying[1] = max(flying[1], flying[0])
            with lock:
                flying[0] -= 1

        return call

    requests = [{"i": i} for i in range(10_000)]
    result = loadgen.run(make_call, requests, concurrency=2, duration_s=0.2, warmup_s=0.0, rate_per_s=2000.0)
    assert seen and sorted(seen) == list(range(len(seen)))  # slot by slot from the mix: no gap, no repeat
    assert len(seen) <= 2000.0 * 0.2 + 1  # nothing sent before it fell due
    assert flying[1] <= 2 and result.completed + result.errors <= len(seen)


def test_each_side_of_an_interleaved_mix_is_summarized_apart():
    def make_call():
        def call(request):
            if request["side"] == "with" and request["i"] % 4 == 1:
                raise RuntimeError("rejected")

        return call

    requests = [{"i": i, "side": "with" if i % 2 else "without"} for i in range(40)]
    result = loadgen.run(
        make_call, requests, concurrency=1, duration_s=30.0, warmup_s=0.0, max_requests=40, side_of=lambda r: r["side"]
    )
    assert result.sides is not None and set(result.sides) == {"with", "without"}
    with_, without = result.sides["with"], result.sides["without"]
    assert without["completed"] == 20 and without["errors"] == 0
    assert with_["completed"] == 10 and with_["errors"] == 10  # i = 1, 5, 9, ... failed
    assert with_["completed"] + without["completed"] == result.completed and with_["errors"] == result.errors
    assert loadgen.run(make_call, requests, concurrency=1, duration_s=30.0, warmup_s=0.0, max_requests=4).sides is None
