"""perf.bench_ranker_served's summary of one load: medians per side and what the ranker added, both
as the medians' difference and as the median of each round's own difference. No server."""

from __future__ import annotations

import pytest

from perf import bench_ranker_served as bench


def window(round_: int, side: str, p50: float, cpu: float) -> dict:
    return {
        "round": round_,
        "side": side,
        "result": {"p50_ms": p50, "p99_ms": 2 * p50, "throughput": 100.0},
        "busy_ms": cpu,
        "rerank_cpu_ms": cpu,
    }


def test_a_drifting_machine_shows_in_the_medians_difference_not_in_the_rounds_own():
    # the machine slows 3x between rounds; within each round the ranker adds 0.5 ms
    runs = [
        window(r, side, base + (0.5 if side == "with" else 0.0), base)
        for r, base in enumerate((1.0, 3.0, 1.1))
        for side in ("without", "with")
    ]
    runs[-1]["result"]["p50_ms"] = 9.0  # one round's "with" window hit by noise
    phase = bench.phase(runs)
    assert phase["p50_ms"] == {"without": 1.1, "with": 3.5}
    assert phase["added_p50_ms"] == pytest.approx(2.4)
    assert phase["paired_p50_ms"] == pytest.approx({"median": 0.5, "min": 0.5, "max": 7.9})
    assert not phase["met"]  # both readings must be within the target


def test_met_when_both_readings_are_within_the_target():
    runs = [window(r, side, 2.0 + (0.4 if side == "with" else 0.0), 1.0) for r in range(3) for side in bench.SIDES]
    phase = bench.phase(runs)
    assert phase["met"] and phase["paired_p50_ms"]["median"] == pytest.approx(0.4)


def test_the_interleaved_windows_give_the_rounds_own_difference_inside_each_window():
    def mixed(round_: int, with_p50: float, without_p50: float, errors: int = 0) -> dict:
        sides = {
            "with": {"p50_ms": with_p50, "p99_ms": 2 * with_p50},
            "without": {"p50_ms": without_p50, "p99_ms": 5.0},
        }
        return {"round": round_, "rate_per_s": 150.0, "result": {"sides": sides, "errors": errors}}

    summary = bench.interleaved_phase([mixed(0, 4.0, 3.5), mixed(1, 9.0, 7.5, errors=2), mixed(2, 3.1, 2.9)])
    assert summary["added_p50_ms"] == pytest.approx({"median": 0.5, "min": 0.2, "max": 1.5})
    assert summary["p50_ms"] == {"with": 4.0, "without": 3.5} and summary["errors"] == 2
    assert summary["met"] and summary["rate_per_s"] == 150.0
    assert not bench.interleaved_phase([mixed(0, 5.0, 3.5)])["met"]


def test_the_report_renders_every_phase_and_the_interleaved_windows(tmp_path):
    runs = [window(r, side, 2.0 + (0.4 if side == "with" else 0.0), 1.0) for r in range(2) for side in bench.SIDES]
    interleaved = bench.interleaved_phase(
        [
            {
                "round": 0,
                "rate_per_s": 150.0,
                "result": {
                    "errors": 0,
                    "sides": {s: {"p50_ms": p, "p99_ms": 2 * p} for s, p in (("with", 3.0), ("without", 2.5))},
                },
            }
        ]
    )
    report = {
        "feeds": 200,
        "items": 20_000,
        "trees": 150,
        "checked_feeds": 5,
        "rounds": 2,
        "seconds": 10.0,
        "open_share": 0.5,
        "command": "x",
        "machine": {},
        "phases": {"1": bench.phase(runs), "16, open loop at 150 req/s": bench.phase(runs)},
        "interleaved": interleaved,
    }
    text = bench.render_markdown(report)
    assert "the two sides request by request" in text and "+0.50 ms (+0.50 … +0.50" in text
    assert text.count("p50 +0.40 ms [+0.40, +0.40 … +0.40]") == 2
    png = bench.plot(report, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
