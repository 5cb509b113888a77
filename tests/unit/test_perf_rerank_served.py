"""perf.bench_rerank_served's pure pieces: the order of the load windows, the paths served and the hop
table (the grown catalog: test_perf_proxy_catalog). No server."""

from __future__ import annotations

from perf import bench_rerank_served as bench


def test_every_window_runs_once_a_round_in_reversed_order_every_other_round():
    first = bench.window_order(["a", "b"], 0, fastapi=True)
    assert len(first) == 2 * len(bench.MODES) + 1 and len(set(first)) == len(first)
    assert first[-1] == (bench.FASTAPI, "") and first[0][0] == "a"
    assert bench.window_order(["a", "b"], 1, fastapi=True) == first[::-1]
    assert bench.window_order(["a"], 2) == [("a", mode) for mode in bench.MODES]


def test_the_chosen_paths_are_the_windows_of_a_round():
    paths = [next(iter(bench.MODES)), bench.BASELINE_CODE]
    assert bench.window_order(["a"], 0, variants=paths) == [("a", paths[0]), ("a", paths[1])]
    assert bench.window_order(["a"], 1, variants=paths) == [("a", paths[1]), ("a", paths[0])]


def test_the_baseline_code_serves_the_same_index_with_that_checkout_s_template_and_packages(tmp_path):
    repo, checkout = tmp_path / "work" / "model_repository", tmp_path / "checkout"
    (repo / "rerank" / "1" / "index").mkdir(parents=True)
    (repo / "rerank" / "1" / "index" / "vectors.npy").write_text("index")
    (repo / "rerank" / "config.pbtxt").write_text("new")
    (checkout / "model_repository" / "rerank" / "1").mkdir(parents=True)
    (checkout / "model_repository" / "rerank" / "config.pbtxt").write_text("old")
    (checkout / "model_repository" / "rerank" / "1" / "model.py").write_text("old model")
    paths = bench.variants(repo, no_exact=True, baseline_code=checkout)
    assert list(paths) == [next(iter(bench.MODES)), bench.BASELINE_CODE]
    engines, baseline = paths.values()
    assert engines.repo == repo and engines.site is None and engines.exact == baseline.exact == "False"
    assert (baseline.repo / "rerank" / "config.pbtxt").read_text() == "old"
    assert (baseline.repo / "rerank" / "1" / "model.py").read_text() == "old model"
    assert (baseline.repo / "rerank" / "1" / "index" / "vectors.npy").read_text() == "index"
    assert (repo / "rerank" / "config.pbtxt").read_text() == "new"  # this checkout's repository untouched
    assert baseline.site is not None and baseline.site[:2] == (str(checkout / "server"), str(checkout / "contract"))
    assert list(bench.variants(repo, no_exact=False, baseline_code=None)) == list(bench.MODES)


def test_the_hop_table_has_a_row_per_tower_and_path_with_every_stage():
    stage = {"compute_ms": 1.0, "queue_ms": 2.0, "latency_ms": 3.0, "cpu_ms": 0.5, "avg_batch": 4.0}
    hops = {
        "stages": dict.fromkeys(("tokenizer", "query_encoder", "rerank"), stage),
        "ensemble_latency_ms": 9.0,
        "ensemble_overhead_ms": 0.25,
        "tritonserver_cpu_ms": 0.6,
        "requests": 10,
    }
    results = {"served": {bench.TEACHER: {"top-k engines": {"hops": hops}, "other": {}}}}
    lines = bench.hops_markdown(results)
    rows = [line for line in lines if line.startswith(f"| {bench.TEACHER}")]
    assert rows == [
        f"| {bench.TEACHER} | top-k engines | "
        + " | ".join(["1.00 / 2.00 / 0.50 / 4.0"] * 3)
        + " | 9.00 | 0.25 | 0.60 |"
    ]
    assert bench.median_hops([hops, {**hops, "ensemble_overhead_ms": 0.75}, hops])["ensemble_overhead_ms"] == 0.25


def test_rerank_busy_target_is_the_median_of_the_rounds_on_the_proxy_catalog_and_at_1m_only(tmp_path):
    engines = next(iter(bench.MODES))
    stage = {"compute_ms": 1.0, "queue_ms": 2.0, "latency_ms": 3.0, "cpu_ms": 1.2, "avg_batch": 6.0}

    def row(*busy):
        runs = [{"busy_ms": {"rerank": b}} for b in busy]
        return {"requests_per_s": 500.0, "runs": runs, "hops": {"stages": {"rerank": stage}}}

    served = {bench.STATIC: {engines: row(1.9, 2.4, 1.7)}, bench.TEACHER: {engines: row(2.1, 2.6, 2.5)}}
    busy = [t for t in bench.targets(served, None, bench.CATALOG_ITEMS) if "rerank busy" in t["what"]]
    assert [(t["value"], t["met"]) for t in busy] == [(1.9, True), (2.5, False)]
    assert "rounds 1.70–2.40" in busy[0]["what"] and "1.2 ms" in busy[0]["what"]
    assert not [t for t in bench.targets(served, None, 55_108) if "rerank busy" in t["what"]]
    at_1m = [t for t in bench.targets(served, None, bench.MILLION) if "rerank busy" in t["what"]]
    assert [(t["value"], t["met"]) for t in at_1m] == [(1.9, True), (2.5, True)]  # the 1M bound is 5 ms
    assert "1,000,000 items" in at_1m[0]["target"]
    results = {"served": served, "items": bench.CATALOG_ITEMS, "fastapi": None}
    for rows in served.values():
        rows[engines]["busy_ms_per_request"] = {"rerank": 1.9}
    assert bench.plot(results, tmp_path / "served.png").stat().st_size > 0
