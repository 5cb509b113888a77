"""aisle experiment report: joins, statistics, SRM, and simulated A/A and A/B experiments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from aisle_export.cli import main
from aisle_export.experiments.report import (
    ShopperTable,
    build_report,
    proportion_estimate,
    ratio_estimate,
    render_markdown,
    shopper_table,
    srm_test,
)
from aisle_export.experiments.simulation import aa_false_positive_rate, ab_detection_rate, needed_shoppers


def exposure(user, arm, request_id, items, ts, experiment="exp"):
    properties = {"experiment": experiment, "arm": arm, "request_id": request_id, "items": items}
    return {"user_id": user, "item_id": items[0], "event_type": "exposure", "ts": ts, "properties": properties}


def outcome(user, item, kind, ts, **properties):
    return {"user_id": user, "item_id": item, "event_type": kind, "ts": ts, "properties": properties}


EVENTS = [
    exposure("u1", "control", "r1", ["a", "b"], 100.0),
    exposure("u1", "control", "r2", ["c"], 200.0),
    exposure("u2", "treatment", "r3", ["a", "d"], 100.0),
    exposure("u9", "other", "r9", ["a"], 100.0, experiment="another-experiment"),
    outcome("u1", "a", "click", 110.0, request_id="r1"),  # by request id
    outcome("u1", "c", "add_to_cart", 250.0),  # by window: c was shown to u1 at 200
    outcome("u1", "c", "purchase", 260.0, price=12.5, quantity=2),
    outcome("u2", "d", "click", 100.0 + 2 * 86400.0),  # too late for the window: unattributed
    outcome("u2", "a", "click", 150.0, request_id="r3"),
    outcome("u3", "a", "click", 150.0),  # never exposed
    outcome("u1", "a", "view", 120.0),  # not an outcome the report counts
]


def test_outcomes_join_by_request_id_or_by_shopper_and_item_within_the_window():
    table, joined = shopper_table(EVENTS, "exp", window_s=86400.0)
    rows = {arm: table.select(arm) for arm in ("control", "treatment")}
    assert sorted(table.arm.tolist()) == ["control", "treatment"]
    assert rows["control"].exposures.tolist() == [2] and rows["control"].clicks.tolist() == [1]
    assert rows["control"].add_to_carts.tolist() == [1] and rows["control"].purchases.tolist() == [1]
    assert rows["control"].revenue.tolist() == [25.0]
    assert rows["treatment"].clicks.tolist() == [1]
    assert (joined.outcomes_joined_by_request_id, joined.outcomes_joined_by_window) == (2, 2)
    assert joined.outcomes_unattributed == 2 and joined.exposures == 3


def test_explored_slots_and_their_clicks_are_counted_apart_from_the_ranked_ones():
    explored = exposure("u1", "t", "r1", ["a", "new", "b"], 100.0)
    explored["properties"]["explored"] = [{"position": 1, "rule": "new-items", "arm": "thompson"}]
    events = [
        explored,
        exposure("u2", "t", "r2", ["a", "b"], 100.0),
        exposure("u2", "t", "r3", ["new", "c"], 300.0),  # shown again, ranked this time
        outcome("u1", "new", "click", 110.0, request_id="r1"),  # on the explored slot, by request id
        outcome("u1", "a", "click", 120.0, request_id="r1"),  # on a ranked slot of the same page
        outcome("u2", "new", "click", 310.0),  # by window: the latest page showing it ranked it
        outcome("u2", "a", "click", 320.0),
    ]
    table, _ = shopper_table(events, "exp")
    assert table.slots.sum() == 7 and table.explored_slots.sum() == 1 and table.explored_clicks.sum() == 1
    report = build_report(table, "exp")
    arm = report["arms"]["t"]
    assert (arm["slots"], arm["explored_slots"], arm["explored_clicks"], arm["clicks"]) == (7, 1, 1, 4)
    assert arm["per_slot"]["explored_ctr"]["value"] == pytest.approx(1.0)
    assert arm["per_slot"]["ranked_ctr"]["value"] == pytest.approx(3 / 6)
    assert "## Explored positions" in render_markdown(report)
    plain, _ = shopper_table(EVENTS, "exp")  # no explore rule anywhere: no such section
    assert "Explored positions" not in render_markdown(build_report(plain, "exp"))


def test_interval_formulas_match_known_values():
    wilson = proportion_estimate(10, 100)
    assert (round(wilson.low, 4), round(wilson.high, 4)) == (0.0552, 0.1744)  # Wilson 95% for 10/100
    ones = np.ones(400)
    clicks = np.r_[np.ones(40), np.zeros(360)]
    ratio = ratio_estimate(clicks, ones)  # one impression per shopper: the binomial variance
    assert ratio.value == pytest.approx(0.1) and ratio.variance == pytest.approx(0.1 * 0.9 / 399, rel=1e-9)


def test_srm_flags_a_skewed_split_and_passes_a_fair_one():
    assert srm_test({"a": 5000, "b": 5000}, {"a": 0.5, "b": 0.5})["mismatch"] is False
    skewed = srm_test({"a": 5200, "b": 4800}, {"a": 0.5, "b": 0.5})
    assert skewed["mismatch"] is True and skewed["p_value"] < 0.001
    assert srm_test({"a": 1980, "b": 8020}, {"a": 0.2, "b": 0.8})["mismatch"] is False


def test_the_cli_writes_markdown_json_and_png(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    rng = np.random.default_rng(0)
    lines = []
    for i in range(400):
        arm = "control" if i % 2 else "treatment"
        lines.append(exposure(f"u{i}", arm, f"r{i}", ["a"], 10.0 + i))
        if rng.random() < (0.1 if arm == "control" else 0.3):
            lines.append(outcome(f"u{i}", "a", "click", 20.0 + i, request_id=f"r{i}"))
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = tmp_path / "exp.json"
    shares = [{"name": "control", "share": 0.5}, {"name": "treatment", "share": 0.5}]
    config.write_text(json.dumps({"name": "exp", "salt": "s", "arms": shares}))
    out = tmp_path / "report"
    assert (
        main(
            [
                "experiment",
                "report",
                "--events",
                str(events),
                "--experiment",
                "exp",
                "--config",
                str(config),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["arms"]["control"]["shoppers"] == 200 and report["srm"]["mismatch"] is False
    assert report["arms"]["treatment"]["versus_control"]["ctr_per_impression"]["significant"] is True
    assert "treatment" in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["experiment", "report", "--events", str(events), "--experiment", "nope", "--out", str(out)]) != 0
    assert "no exposures of experiment 'nope'" in capsys.readouterr().err


def test_aa_experiments_call_a_difference_at_about_the_nominal_rate():
    rate, p_values = aa_false_positive_rate(runs=200, shoppers=2000, seed=0)
    print(f"\nA/A false-positive rate over 200 experiments: {rate:.3f}")
    assert 0.01 <= rate <= 0.10  # 5% ± ~3 binomial standard deviations
    counts, _ = np.histogram(p_values, bins=4, range=(0.0, 1.0))
    assert counts.min() >= 30  # p-values roughly uniform, not piled at 0 or 1


def test_ab_lift_is_detected_at_the_size_the_report_asks_for_and_not_much_below():
    lift = 0.2
    n = needed_shoppers(lift, pilot_shoppers=4000, seed=0)
    rate = ab_detection_rate(runs=200, shoppers_per_arm=n, lift=lift, seed=1)
    small = ab_detection_rate(runs=100, shoppers_per_arm=n // 4, lift=lift, seed=2)
    print(f"\nA/B +{lift:.0%}: {n} shoppers/arm needed; detected {rate:.3f} (at n/4: {small:.3f})")
    assert 0.7 <= rate <= 0.93  # power 0.8 asked for
    assert small < 0.5


def test_build_report_without_a_control_arm_still_reports_each_arm():
    table = ShopperTable(np.array(["x", "x"], dtype=object), *(np.array([1.0, 2.0]) for _ in range(5)))
    report = build_report(table, "e")
    assert report["control"] == "x" and report["arms"]["x"]["shoppers"] == 2
    assert not math.isnan(report["arms"]["x"]["per_impression"]["ctr"]["value"])
