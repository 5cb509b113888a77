"""``perf.bench_state_cluster``'s pure parts on small fake numbers: the URLs it compares, the summary
over rounds and the report it renders (Markdown and PNG)."""

from __future__ import annotations

import random

from aisle_server.state_url import parse_state_url
from perf.bench_state_cluster import report as rendering
from perf.bench_state_cluster import scenario


def test_the_three_stores_are_the_default_single_node_and_the_cluster_without_and_with_wait():
    urls = scenario.store_urls("redis://127.0.0.1:1/0", "redis-cluster://127.0.0.1:2,127.0.0.1:3")
    specs = {name: parse_state_url(url) for name, url in urls.items()}
    assert tuple(urls) == scenario.STORES
    assert (specs["single"].cluster, specs["single"].replicas, specs["single"].shards) == (False, 0, 1)
    assert (specs["cluster"].cluster, specs["cluster"].replicas) == (True, 0)
    assert (specs["cluster_wait"].cluster, specs["cluster_wait"].replicas) == (True, 1)


def _round(rng: random.Random, slow: float) -> dict:
    def store(scale: float) -> dict:
        return {
            "ingest": {"events_per_s": 4000 / scale, "result": {"p50_ms": 5 * scale, "errors": 0}},
            "ack_ms": [rng.uniform(2, 3) * scale for _ in range(20)],
            "reads": {
                "user_id": [10.5 + rng.random() for _ in range(10)],
                "history": [10 + rng.random() for _ in range(10)],
            },
            "direct": {"store_ms": [scale] * 10, "recent_ms": [0.2] * 10},
        }

    return {"single": store(1.0), "cluster": store(1.5), "cluster_wait": store(1.5 * slow)}


def test_summary_and_report_say_what_replicated_acknowledgement_costs(tmp_path):
    rng = random.Random(0)
    summary = scenario.summarize([_round(rng, 2.0) for _ in range(3)])
    wait = summary["wait_cost"]
    assert abs(wait["events_per_s_ratio"] - 0.5) < 1e-9  # twice as slow, as built
    assert abs(wait["store_p50_added_ms"] - 1.5) < 1e-9
    assert wait["track_p50_added_ms"] > 0
    assert abs(summary["cluster_vs_single"]["events_per_s_ratio"] - 1 / 3) < 1e-9
    report = {
        "command": ".venv/bin/python -m perf.bench_state_cluster --rounds 3",
        "machine": {"cpus": 2, "platform": "x86_64 Linux", "load_before": [1.0], "load_after": [2.0]},
        "rounds": 3,
        "seconds": 6.0,
        "setup": {
            "redis_version": "7.0.15",
            "cluster": "3 masters + 1 replica each",
            "shards": 16,
            "replica_timeout_ms": 200,
            "ingest_phase": "64 events per call, 4 threads",
            "calls": 20,
            "pairs": 10,
            "shoppers": 5,
            "same_answers": {name: {"sampled": 5, "same": 5} for name in scenario.STORES},
        },
        "stores": summary,
    }
    text = rendering.render_markdown(report)
    assert ".venv/bin/python -m perf.bench_state_cluster --rounds 3" in text
    assert "0.50× the events/s" in text and "+1.500 ms per store call" in text
    assert all(scenario.LABELS[name] in text for name in scenario.STORES)
    path = rendering.plot(report, tmp_path / "bench_state_cluster.png")
    assert path.stat().st_size > 10_000
