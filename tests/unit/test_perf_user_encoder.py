"""``perf.bench_user_encoder``'s pure parts on small fake numbers: the feeds it sends, the A/B
interleaving, the in-round ratio math and the report. No server: the benchmark itself is run by hand."""

from __future__ import annotations

import json
import math

import pytest

from perf.bench_user_encoder import report as rendering
from perf.bench_user_encoder import scenario


def _result(p50: float, p95: float, throughput: float, errors: int = 0) -> dict:
    return {
        "concurrency": 1,
        "completed": 100,
        "errors": errors,
        "window_s": 5.0,
        "throughput": throughput,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p95 + 1,
        "mean_ms": p50,
    }


def _runs(phase: str, pairs: list[tuple[tuple, tuple]]) -> list[dict]:
    """Runs of one phase: ``pairs[r] = ((p50, p95, tput) with, (p50, p95, tput) without)``."""
    return [
        {
            "round": r,
            "phase": phase,
            "side": side,
            "result": _result(*figures),
            "rerank_busy_ms_per_feed": 2.0 if side == "with" else 1.5,
        }
        for r, pair in enumerate(pairs)
        for side, figures in zip(scenario.SIDES, pair)
    ]


# --------------------------------------------------------------------------- requests


def test_feed_requests_keep_the_most_recent_items_with_their_events_and_skip_short_histories():
    histories = {
        "b": [(str(i), 100.0 + i) for i in range(60)],
        "a": [("x", 1.0), ("y", 2.0), ("z", 3.0), ("w", 4.0), ("v", 5)],
        "short": [("x", 1.0), ("y", 2.0)],
    }
    events = {"b": [f"rated_{i % 5 + 1}" for i in range(60)], "a": ["rated_4"] * 5, "short": ["rated_1"] * 2}
    requests = scenario.feed_requests(histories, events, now=500)
    assert [r["user"] for r in requests] == ["a", "b"]  # sorted, "short" left out
    b = requests[1]["history"]
    assert len(b) == 50 and b[0] == ("10", 110.0, "rated_1") and b[-1] == ("59", 159.0, "rated_5")
    assert requests[0]["history"][-1] == ("v", 5.0, "rated_4") and isinstance(requests[0]["history"][-1][1], float)
    assert all(r["now"] == 500.0 for r in requests)


def test_feed_requests_send_pairs_when_events_do_not_cover_the_history_and_refuse_no_shoppers():
    histories = {"a": [(str(i), float(i)) for i in range(6)]}
    assert scenario.feed_requests(histories, {"a": ["rated_1"] * 3}, now=9.0)[0]["history"][0] == ("0", 0.0)
    assert scenario.feed_requests(histories, {}, now=9.0, max_len=2)[0]["history"] == [("4", 4.0), ("5", 5.0)]
    with pytest.raises(ValueError, match="at least 7"):
        scenario.feed_requests(histories, {}, now=9.0, min_len=7)


def test_feed_call_sends_an_uncached_feed_with_the_sides_knob():
    calls = []

    class FakeClient:
        def recommend(self, *args, **kwargs):
            calls.append((args, kwargs))

    request = {"history": [("1", 2.0, "rated_3")], "now": 7.0}
    for side in scenario.SIDES:
        scenario.feed_call(FakeClient(), side)(request)
    assert [c[1]["user_encoder"] for c in calls] == [True, False]
    assert all(
        c[0] == (None, request["history"]) and c[1]["cache"] is False and c[1]["now"] == 7.0 and c[1]["k"] == scenario.K
        for c in calls
    )
    assert not hasattr(scenario.feed_call(FakeClient(), "with"), "close"), "loadgen would close the shared client"
    with pytest.raises(ValueError, match="side"):
        scenario.knobs("both")


# --------------------------------------------------------------------------- interleaving


def test_schedule_alternates_sides_within_every_round_and_phase():
    slots = scenario.schedule(2)
    assert len(slots) == 2 * len(scenario.PHASES) * 2
    assert [s.side for s in slots] == ["with", "without"] * (len(slots) // 2)
    assert [(s.round, s.phase.name) for s in slots[:4]] == [(0, "c1"), (0, "c1"), (0, "c16"), (0, "c16")]
    assert [s.round for s in slots] == sorted(s.round for s in slots)
    assert slots[-1].round == 1 and slots[-1].phase == scenario.PHASES[-1]
    with pytest.raises(ValueError):
        scenario.schedule(0)


def test_phases_are_what_the_brief_measures():
    c1, c16, batched = scenario.PHASES
    assert (c1.concurrency, c1.max_delay_ms) == (1, None) and (c16.concurrency, c16.max_delay_ms) == (16, None)
    assert (batched.concurrency, batched.max_delay_ms, batched.max_batch) == (16, 2.0, 16)
    assert "unbatched" in c16.label and "max_delay_ms=2" in batched.label


# --------------------------------------------------------------------------- summary math


def test_summarize_phase_takes_medians_of_rounds_and_ratios_inside_each_round():
    runs = _runs(
        "c1",
        [
            ((12.0, 20.0, 80.0), (10.0, 16.0, 100.0)),
            ((15.0, 30.0, 60.0), (10.0, 20.0, 100.0)),
            ((11.0, 18.0, 90.0), (10.0, 18.0, 90.0)),
        ],
    )
    s = scenario.summarize_phase(runs)
    assert s["rounds"] == 3
    assert s["sides"]["with"] == {"p50_ms": 12.0, "p95_ms": 20.0, "throughput": 80.0}
    assert s["sides"]["without"] == {"p50_ms": 10.0, "p95_ms": 18.0, "throughput": 100.0}
    assert s["added_p50_ms"] == pytest.approx(2.0) and s["added_p50_ms_range"] == pytest.approx([1.0, 5.0])
    assert s["ratio"]["p50"] == pytest.approx(1.2) and s["ratio_range"]["p50"] == pytest.approx([1.1, 1.5])
    assert s["ratio"]["p95"] == pytest.approx(1.25) and s["ratio_range"]["p95"] == pytest.approx([1.0, 1.5])
    assert s["ratio"]["throughput"] == pytest.approx(0.8) and s["ratio_range"]["throughput"] == pytest.approx(
        [0.6, 1.0]
    )
    assert s["rerank_busy_ms_per_feed"] == {"with": 2.0, "without": 1.5}


def test_summarize_pairs_rounds_counts_errors_and_ignores_a_round_missing_a_side():
    runs = _runs("c16", [((20.0, 40.0, 500.0), (10.0, 20.0, 1000.0))])
    runs[0]["result"]["errors"], runs[1]["result"]["errors"] = 2, 1
    runs.append({"round": 1, "phase": "c16", "side": "with", "result": _result(99.0, 99.0, 1.0)})
    s = scenario.summarize(runs)
    assert list(s) == ["c16"] and s["c16"]["rounds"] == 1
    assert s["c16"]["ratio"]["throughput"] == 0.5 and s["c16"]["errors"] == {"with": 2, "without": 1}
    assert math.isnan(
        scenario.summarize_phase(_runs("c1", [((1.0, 1.0, 1.0), (1.0, 1.0, 0.0))]))["ratio"]["throughput"]
    )
    with pytest.raises(ValueError, match="both sides"):
        scenario.summarize_phase(runs[2:])


# --------------------------------------------------------------------------- report


def _report(added: float = 1.0) -> dict:
    runs = _runs("c1", [((10.0 + added, 14.0, 90.0), (10.0, 13.0, 100.0))] * 2) + _runs(
        "c16", [((30.0, 50.0, 450.0), (25.0, 40.0, 600.0))] * 2
    )
    return {
        "command": ".venv/bin/python -m perf.bench_user_encoder --rounds 2 --seconds 5",
        "machine": {
            "cpus": 2,
            "platform": "x86_64 Linux",
            "python": "3.11.7",
            "load_before": [1.5, 1.25, 1.0],
            "load_after": [3.0, 2.0, 1.0],
        },
        "repo": "/tmp/repo",
        "encoder": {"max_len": 50, "dim": 384},
        "rounds": 2,
        "seconds": 5.0,
        "feeds": {"shoppers": 108, "events": True, "mean_history": 45.25, "now": 1.0},
        "check": {"sampled": 20, "differ": 19},
        "phases": scenario.summarize(runs),
        "runs": runs,
    }


def test_markdown_says_how_where_and_what_was_measured():
    text = rendering.render_markdown(_report(added=1.0))
    assert "`.venv/bin/python -m perf.bench_user_encoder --rounds 2 --seconds 5`" in text
    assert "2 cores" in text and "before 1.50 / 1.25 / 1.00, after 3.00 / 2.00 / 1.00" in text
    assert "| c=1, unbatched: p50 with / without | 11.00 / 10.00 ms |" in text
    assert "added p50 (target ≤ 2 ms) | +1.00 ms (+1.00 … +1.00): met |" in text
    assert "| c=16, unbatched: throughput with / without | 450.0 / 600.0 calls/s |" in text
    assert "throughput ratio with/without (rounds) | 0.75× (0.75 … 0.75) |" in text
    assert "| c=1, unbatched: `rerank` busy per feed with / without (Triton statistics) | 2.00 / 1.50 ms |" in text
    assert "19 of 20 sampled feeds" in text and "108 MovieLens test shoppers" in text
    assert text.count("| 1 | c=16, unbatched | without | 600.0 | 25.00 | 40.00 | 0 | 1.50 |") == 1
    assert "micro-batched" not in text, "a phase that did not run has no rows"


def test_markdown_flags_a_missed_latency_target():
    assert "+3.00 ms (+3.00 … +3.00): **not met**" in rendering.render_markdown(_report(added=3.0))


def test_report_survives_json_and_plots_both_panels(tmp_path):
    report = json.loads(json.dumps(_report()))
    path = rendering.plot(report, tmp_path / "bench_user_encoder.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_a_repository_without_a_user_encoder_is_refused_with_how_to_build_one(tmp_path):
    (tmp_path / "rerank" / "1" / "index").mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        scenario.check_repo(tmp_path)
    message = str(exc.value)
    assert str(tmp_path / "rerank" / "learned" / "user_encoder") in message
    assert "make demo" in message and "aisle export --finetuned" in message
    encoder = tmp_path / "rerank" / "learned" / "user_encoder"
    encoder.mkdir(parents=True)
    (encoder / "model.onnx").write_bytes(b"onnx")
    (encoder / "config.json").write_text(json.dumps({"max_len": 50, "dim": 384}))
    assert scenario.check_repo(tmp_path) == {"path": str(encoder), "max_len": 50, "dim": 384, "model_bytes": 4}
