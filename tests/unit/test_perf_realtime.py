"""``perf.bench_realtime``'s pure parts on small fake numbers: the events it sends, the histories
it stores, the pair order, the summaries and the report. No server: the benchmark is run by hand."""

from __future__ import annotations

import json
import math
import random

import pytest

from aisle import TrackEvent
from perf.bench_realtime import report as rendering
from perf.bench_realtime import scenario

NOW = 1_700_000_000.0


def test_event_batches_are_valid_new_events_of_the_shop_mix():
    ids = iter(range(1000))
    batch = scenario.event_batch(random.Random(1), ["u1", "u2"], ["1", "50"], 64, NOW, new_id=lambda: f"e{next(ids)}")
    assert len(batch) == 64 and len({e["event_id"] for e in batch}) == 64
    assert all(NOW - 60 <= e["ts"] <= NOW for e in batch)
    assert {e["user_id"] for e in batch} <= {"u1", "u2"} and {e["item_id"] for e in batch} <= {"1", "50"}
    assert {e["event_type"] for e in batch} <= set(scenario.EVENT_TYPES)
    assert all(TrackEvent.coerce(e, i).event_id == e["event_id"] for i, e in enumerate(batch))  # the SDK takes them
    assert len({e["event_id"] for e in scenario.event_batch(random.Random(1), ["u"], ["i"], 10, NOW)}) == 10
    with pytest.raises(ValueError):
        scenario.event_batch(random.Random(1), [], ["i"], 1, NOW)


def test_shopper_histories_are_distinct_items_oldest_first_before_now():
    histories = scenario.shopper_histories(random.Random(2), [str(i) for i in range(100)], 3, 20, NOW)
    assert len(histories) == 3
    for history in histories.values():
        assert len(history) == 20 and len({item for item, _, _ in history}) == 20
        stamps = [ts for _, ts, _ in history]
        assert stamps == sorted(stamps) and stamps[-1] == NOW - 60
        assert {kind for _, _, kind in history} == {scenario.READ_EVENT_TYPE}
    with pytest.raises(ValueError, match="catalog of 5"):
        scenario.shopper_histories(random.Random(2), list("abcde"), 1, 6, NOW)


def test_pairs_alternate_which_side_goes_first():
    assert [scenario.pair_order(i) for i in range(3)] == [
        ("user_id", "history"),
        ("history", "user_id"),
        ("user_id", "history"),
    ]


def test_summarize_pairs_takes_p50s_per_round_then_medians():
    rounds = [
        {"user_id": [5.0, 6.0, 7.0], "history": [4.0, 5.0, 6.0]},
        {"user_id": [5.5, 5.5, 5.5], "history": [5.0, 5.0, 5.0]},
        {"user_id": [9.0, 9.0, 9.0], "history": [6.0, 6.0, 6.0]},
    ]
    s = scenario.summarize_pairs(rounds)
    assert [r["added_p50_ms"] for r in s["rounds"]] == pytest.approx([1.0, 0.5, 3.0])
    assert s["added_p50_ms"] == pytest.approx(1.0) and s["added_p50_ms_range"] == pytest.approx([0.5, 3.0])
    assert s["user_id_p50_ms"] == 6.0 and s["history_p50_ms"] == 5.0
    assert s["rounds"][0]["paired_median_ms"] == 1.0 and s["ratio_p50"] == pytest.approx(1.2)
    with pytest.raises(ValueError):
        scenario.summarize_pairs([{"user_id": [1.0], "history": []}])
    with pytest.raises(ValueError):
        scenario.summarize_pairs([])


def _ingest_run(round_: int, phase: str, events: float, errors: int = 0) -> dict:
    result = {"throughput": events / 64, "p50_ms": 10.0, "p95_ms": 20.0, "errors": errors}
    return {"round": round_, "phase": phase, "result": result, "events_per_s": events, "accepted_per_s": events * 0.9}


def test_summarize_ingest_takes_medians_per_phase_and_sums_errors():
    runs = [_ingest_run(0, "b64_t4", 6000.0), _ingest_run(1, "b64_t4", 4000.0, errors=2)]
    runs += [_ingest_run(0, "b256_t4", 9000.0), _ingest_run(1, "b256_t4", 9000.0)]
    s = scenario.summarize_ingest(runs)
    assert list(s) == ["b64_t4", "b256_t4"]
    assert s["b64_t4"]["events_per_s"] == 5000.0 and s["b64_t4"]["events_per_s_range"] == [4000.0, 6000.0]
    assert s["b64_t4"]["errors"] == 2 and s["b256_t4"]["accepted_per_s"] == pytest.approx(8100.0)


def test_series_sums_a_metric_over_its_label_sets():
    values = {
        'aisle_events_rejected_total{model="track",reason="invalid"}': 3.0,
        'aisle_events_rejected_total{model="track",reason="unavailable"}': 2.0,
        'aisle_events_accepted_total{model="track"}': 7.0,
    }
    assert scenario.series(values, "aisle_events_rejected_total") == 5.0
    assert scenario.series(values, "aisle_events_accepted_total") == 7.0 and scenario.series(values, "missing") == 0.0


def _report(added: float = 0.4, events: float = 6000.0) -> dict:
    runs = [_ingest_run(0, "b64_t4", events), _ingest_run(0, "b256_t4", events * 1.5)]
    reads = scenario.summarize_pairs([{"user_id": [5.0 + added] * 4, "history": [5.0] * 4}])
    return {
        "command": ".venv/bin/python -m perf.bench_realtime --rounds 1",
        "machine": {
            "cpus": 2,
            "platform": "x86_64 Linux",
            "python": "3.11.2",
            "load_before": [1.0, 1.0, 1.0],
            "load_after": [2.0, 1.5, 1.0],
        },
        "repo": "/tmp/repo",
        "rounds": 1,
        "seconds": 8.0,
        "setup": {
            "users": 10000,
            "items": 1682,
            "shoppers": 200,
            "redis_version": "7.0.15",
            "appendonly": "yes",
            "appendfsync": "always",
            "stream_len": 123456,
        },
        "check": {"sampled": 20, "same": 20},
        "ingest": scenario.summarize_ingest(runs),
        "ingest_runs": runs,
        "reads": reads,
        "lookup": {"count": 650.0, "mean_ms": 0.21},
        "catalog_visibility": None,
    }


def test_markdown_reports_figures_against_targets_and_how_they_were_measured():
    text = rendering.render_markdown(_report())
    assert "`.venv/bin/python -m perf.bench_realtime --rounds 1`" in text
    assert "before 1.00 / 1.00 / 1.00, after 2.00 / 1.50 / 1.00" in text
    assert "| (a) ingest, 64 events per call, 4 threads: events/s | 6,000 (6,000 … 6,000)" in text
    assert "best ingest vs target ≥ 5,000 events/s | 9,000/s: met |" in text
    assert "added p50 of `user_id=` (target ≤ 1 ms) | +0.400 ms (+0.400 … +0.400): met |" in text
    assert "appendfsync always" in text and "20 of 20 sampled shoppers" in text and "123,456 in the log" in text
    assert "0.210 ms over 650 lookups" in text
    assert "(c) catalog update visibility delay | not measured yet" in text


def test_markdown_flags_missed_targets_and_shows_a_filled_hook():
    text = rendering.render_markdown(_report(added=1.5, events=2000.0))
    assert "3,000/s: **not met**" in text and "+1.500 ms (+1.500 … +1.500): **not met**" in text
    report = _report()
    report["catalog_visibility"] = {"summary": "p50 0.8 s, max 1.2 s"}
    assert "(c) catalog update visibility delay | p50 0.8 s, max 1.2 s |" in rendering.render_markdown(report)


def test_report_survives_json_and_plots(tmp_path):
    report = json.loads(json.dumps(_report()))
    path = rendering.plot(report, tmp_path / "bench_realtime.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not math.isnan(report["reads"]["ratio_p50"])


def test_visibility_summary_takes_percentiles_over_every_change_and_checks_the_target():
    summary = scenario.visibility_summary({"insert": [100.0, 300.0, 200.0], "hide": [1500.0], "out_of_stock": []})
    assert summary["kinds"]["insert"] == {"n": 3, "p50_ms": 200.0, "p99_ms": 300.0, "max_ms": 300.0}
    assert "out_of_stock" not in summary["kinds"]
    assert summary["all"]["n"] == 4 and summary["all"]["max_ms"] == 1500.0 and summary["all"]["p99_ms"] == 1500.0
    assert "not met" in summary["summary"] and "insert 3, hide 1" in summary["summary"]
    assert "not met" not in scenario.visibility_summary({"insert": [10.0, 900.0]})["summary"]
