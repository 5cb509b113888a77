"""perf_analyzer (tritonclient 2.50's bin/perf_analyzer) runs a short scenario against the test server.

Skipped, with the reason, where the binary cannot start: it needs Debian's libb64-0d
(``make system-deps``) and libcudart.so.12 from ``nvidia-cuda-runtime-cu12`` (the ``bench`` extra).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from perf.lib import triton_stats as stats
from perf.perf_analyzer import inputs, runner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def perf_analyzer():
    try:
        return runner.check()
    except runner.PerfAnalyzerError as exc:  # the project's own setup installs it: a failure, not a skip
        pytest.fail(f"perf_analyzer cannot run (make system-deps and the bench extra install it): {exc}")


def test_perf_analyzer_runs_a_search_scenario_and_writes_csv(perf_analyzer, server, movielens_catalog, tmp_path):
    with open(movielens_catalog, newline="", encoding="utf-8") as f:
        titles = [row["title"] for row in csv.DictReader(f)]
    data = tmp_path / "search.json"
    data.write_text(json.dumps(inputs.pa_search(inputs.search_queries(titles, 32))))
    csv_path = tmp_path / "recommend.csv"
    before = stats.snapshot(server.grpc_url)
    # three 700 ms windows at concurrency 2: about 2 seconds of load
    result = runner.run(
        runner.Scenario("recommend", data, server.grpc_url, csv_path, concurrency=2, measurement_ms=700, max_trials=3),
        timeout_s=50,
    )
    after = stats.snapshot(server.grpc_url)
    rows = runner.read_csv(csv_path)
    assert len(rows) == 1 and rows[0]["Concurrency"] == 2
    assert result["throughput"] > 0 and result["p50_ms"] <= result["p99_ms"]
    delta = stats.diff(after, before)
    assert delta["recommend"]["requests"] > 0
    assert delta["tokenizer"]["requests"] == delta["query_encoder"]["requests"] >= delta["recommend"]["requests"]
