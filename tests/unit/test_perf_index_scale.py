"""``perf.bench_index_scale`` end to end at a size CI affords: the three phases run as their own
processes, the replica loads the index the way ``rerank`` does, and the report has every figure."""

from __future__ import annotations

import json

from aisle_server.ann import DEFAULT_REFINE
from perf import bench_index_scale


def test_small_run_reports_build_memory_recall_and_rank_latency(tmp_path):
    out = tmp_path / "results"
    bench_index_scale.main(
        [
            "--sizes",
            "3000",
            "--queries",
            "10",
            "--candidates",
            "20",
            "--nprobe",
            "4",
            "64",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ]
    )
    result = json.loads((out / "index_scale.json").read_text())["sizes"][0]
    assert result["items"] == 3000 and result["build"]["pq_m"] == 48
    serve = result["serve"]
    assert serve["refine"] == DEFAULT_REFINE
    assert [(q["nprobe"], q["refine"]) for q in serve["queries"]] == [(4, 4), (64, 4), (4, 16), (64, 16)]
    by_setting = {(q["nprobe"], q["refine"]): q["recall"] for q in serve["queries"]}
    # 3,000 items spread over 2,000 synthetic clusters: probing more lists is what finds them
    assert by_setting[(64, 16)] > by_setting[(4, 4)] + 0.2 and by_setting[(64, 16)] >= by_setting[(64, 4)]
    assert serve["memory_after_load_mib"]["RssAnon"] > 0 and set(serve["rank"]) == {"search", "feed"}
    table = (out / "index_scale.md").read_text()
    assert "| 3,000 |" in table and "feed (20 history ids)" in table
    assert not (tmp_path / "work" / "n3000").exists(), "indexes are removed unless --keep"
