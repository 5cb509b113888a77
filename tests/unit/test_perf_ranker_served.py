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
