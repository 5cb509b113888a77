"""An A/B experiment end to end: real tritonserver, real redis-server, the CLI's export and report.

60 synthetic shoppers under a two-arm ``Experiment`` whose knobs differ; each gets two pages from
``recommend(user_id=…, experiment=…)`` (a third from ``recommend_many``), their exposures are
logged (by the caller, or by the client's background log), and a hidden click model clicks
shown items — far more often in the ``diverse`` arm. Half of the clicks carry the page's
``request_id``, the others join by shopper and item within the window. Then ``aisle events export
--raw`` and ``aisle experiment report`` run through the command's own ``main``, and the report must count exactly what
was sent.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path

import aisle_cli
import pytest

from aisle import Arm, AsyncRecClient, Experiment, ExposureStats, RecClient, TrackEvent, exposure_event
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

SHOPPERS = 60
PAGES = 2
K = 10
#: The hidden click model: chance that a shopper clicks one shown item, per arm.
CLICK_P = {"control": 0.04, "diverse": 0.25}
EXPERIMENT = Experiment(
    "e2e-feed",
    salt="e2e-2026",
    arms=[Arm("control", 0.5), Arm("diverse", 0.5, {"diversity": 0.6, "popularity_weight": 0.2})],
    control="control",
)


def _aisle(*args: str) -> str:
    return aisle_cli.ok(*args).stdout


@pytest.fixture(scope="module")
def experiment_server(repo, redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver-experiment.log"
    with TritonServer(repo, log_file=log, state_url=redis_server.url) as running:
        yield running


def _clicks(recs, shopper: str, rng: random.Random, sent: dict) -> list[TrackEvent]:
    """Count the page shown; the hidden click model's clicks on it (half carry the page's request_id)."""
    assert recs.arm == EXPERIMENT.arm_of(shopper) and recs.experiment == EXPERIMENT.name
    assert len(recs) == K
    sent["exposures"][recs.arm] += 1
    clicks = []
    for rec in recs:
        if rng.random() >= CLICK_P[recs.arm]:
            continue
        by_request = rng.random() < 0.5
        properties = {"request_id": recs.request_id} if by_request else None
        clicks.append(TrackEvent(shopper, rec.item_id, "click", properties=properties))
        sent["clicks"][recs.arm] += 1
        sent["by_request_id" if by_request else "by_window"] += 1
    return clicks


def _shop_explicitly(url: str, shoppers: list[str], rng: random.Random, sent: dict) -> None:
    """The caller sends each exposure itself (``exposure_event`` + ``track_many``)."""
    with RecClient(url, timeout_s=20, retry=None) as client:
        for shopper in shoppers:
            for _ in range(PAGES):
                recs = client.recommend(user_id=shopper, k=K, experiment=EXPERIMENT)
                client.track_many([exposure_event(recs, shopper), *_clicks(recs, shopper, rng, sent)])
        assert client.exposure_stats() is None


def _shop_logged(url: str, shoppers: list[str], rng: random.Random, sent: dict) -> ExposureStats:
    """``log_exposures=True``: the client sends every exposure in the background; only clicks are sent here."""
    with RecClient(url, timeout_s=20, retry=None, log_exposures=True, exposure_flush_ms=50) as client:
        for shopper in shoppers:
            for _ in range(PAGES):
                clicks = _clicks(client.recommend(user_id=shopper, k=K, experiment=EXPERIMENT), shopper, rng, sent)
                if clicks:
                    client.track_many(clicks)
    return client.exposure_stats()


def _shop_async_many(url: str, shoppers: list[str], rng: random.Random, sent: dict) -> ExposureStats:
    """The asyncio client, logging exposures, with one ``recommend_many(experiment=…)`` per round of pages."""

    async def scenario() -> ExposureStats:
        async with AsyncRecClient(url, timeout_s=20, retry=None, log_exposures=True) as client:
            for _ in range(PAGES):
                pages = await client.recommend_many([{"user_id": s, "k": K} for s in shoppers], experiment=EXPERIMENT)
                clicks = [c for s, recs in zip(shoppers, pages, strict=True) for c in _clicks(recs, s, rng, sent)]
                if clicks:
                    await client.track_many(clicks)
        return client.exposure_stats()

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def report(experiment_server, redis_server, tmp_path_factory) -> tuple[dict, dict, Path]:
    """Run the experiment, export the raw log and report on it: (report.json, what was sent, out dir).

    A third of the shoppers each: exposures sent by the caller, by a ``RecClient`` logging them, by
    an ``AsyncRecClient`` logging them (its pages from ``recommend_many``).
    """
    work = tmp_path_factory.mktemp("experiment")
    shoppers = [f"e2e-shopper-{i:03d}" for i in range(SHOPPERS)]
    sent: dict = {"exposures": Counter(), "clicks": Counter(), "by_request_id": 0, "by_window": 0}
    sent["shoppers"] = Counter(EXPERIMENT.arm_of(s) for s in shoppers)
    rng = random.Random(18)
    url = experiment_server.grpc_url
    _shop_explicitly(url, shoppers[0::3], rng, sent)
    sent["logged"] = [_shop_logged(url, shoppers[1::3], rng, sent), _shop_async_many(url, shoppers[2::3], rng, sent)]
    config = work / "exp.json"
    config.write_text(
        json.dumps(
            {
                "name": EXPERIMENT.name,
                "salt": EXPERIMENT.salt,
                "control": "control",
                "arms": [{"name": a.name, "share": a.share, "knobs": dict(a.knobs)} for a in EXPERIMENT.arms],
            }
        )
    )
    events = work / "events.jsonl"
    _aisle("events", "export", "--state", redis_server.url, "--raw", "--out", str(events))
    out = work / "report"
    _aisle(
        "experiment", "report", "--events", str(events), "--experiment", EXPERIMENT.name,
        "--config", str(config), "--out", str(out),
    )  # fmt: skip
    figures = json.loads((out / "report.json").read_text())
    for arm, row in figures["arms"].items():  # shown with pytest -s
        ctr = row["per_impression"]["ctr"]
        print(f"{arm}: shoppers={row['shoppers']} exposures={row['exposures']} clicks={row['clicks']} "
              f"ctr={ctr['value']:.3f} [{ctr['low']:.3f}, {ctr['high']:.3f}]")  # fmt: skip
    print("versus control:", figures["arms"]["diverse"]["versus_control"]["ctr_per_impression"], figures["join"])
    return figures, sent, out


def test_both_arms_have_shoppers_and_their_knobs_change_the_answers(experiment_server):
    by_arm = {arm.name: None for arm in EXPERIMENT.arms}
    with RecClient(experiment_server.grpc_url, timeout_s=20, retry=None) as client:
        for i in range(200):
            shopper = f"knobs-{i}"
            arm = EXPERIMENT.arm_of(shopper)
            if by_arm[arm] is None:
                by_arm[arm] = [r.item_id for r in client.recommend(user_id=shopper, k=K, experiment=EXPERIMENT)]
            if all(v is not None for v in by_arm.values()):
                break
    assert by_arm["control"] != by_arm["diverse"]


def test_the_exposure_logs_sent_every_page_in_the_background(report):
    _, sent, _ = report
    for stats in sent["logged"]:
        assert stats.logged == stats.sent == SHOPPERS // 3 * PAGES
        assert (stats.queued, stats.dropped, stats.failed) == (0, 0, 0)
        assert 1 <= stats.batches <= stats.sent


def test_the_report_counts_every_exposure_sent_per_arm(report):
    figures, sent, _ = report
    assert {arm: figures["arms"][arm]["exposures"] for arm in figures["arms"]} == dict(sent["exposures"])
    assert figures["join"]["exposures"] == SHOPPERS * PAGES


def test_shoppers_per_arm_match_the_sdk_assignment(report):
    figures, sent, _ = report
    assert {arm: figures["arms"][arm]["shoppers"] for arm in figures["arms"]} == dict(sent["shoppers"])
    assert figures["join"]["shoppers_in_several_arms"] == 0
    assert not figures["srm"]["mismatch"]


def test_every_click_sent_joins_its_exposure(report):
    figures, sent, _ = report
    assert {arm: figures["arms"][arm]["clicks"] for arm in figures["arms"]} == dict(sent["clicks"])
    assert figures["join"]["outcomes_joined_by_request_id"] == sent["by_request_id"] > 0
    assert figures["join"]["outcomes_joined_by_window"] == sent["by_window"] > 0
    assert figures["join"]["outcomes_unattributed"] == 0


def test_the_arm_with_the_better_click_model_has_the_higher_ctr(report):
    figures, _, _ = report
    ctr = {arm: figures["arms"][arm]["per_impression"]["ctr"]["value"] for arm in figures["arms"]}
    assert ctr["diverse"] > ctr["control"]
    assert figures["arms"]["diverse"]["versus_control"]["ctr_per_impression"]["p_value"] < 0.05


def test_the_report_writes_markdown_json_and_a_plot(report):
    _, _, out = report
    for name in ("report.md", "report.json", "report.png"):
        assert (out / name).stat().st_size > 0
    assert "diverse" in (out / "report.md").read_text()
