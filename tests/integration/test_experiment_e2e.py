"""An A/B experiment end to end: real tritonserver, real redis-server, the CLI's export and report.

60 synthetic shoppers under a two-arm ``Experiment`` whose knobs differ; each gets two pages from
``recommend(user_id=…, experiment=…)``, their exposures are logged, and a hidden click model clicks
shown items — far more often in the ``diverse`` arm. Half of the clicks carry the page's
``request_id``, the others join by shopper and item within the window. Then ``aisle events export
--raw`` and ``aisle experiment report`` run as subprocesses, and the report must count exactly what
was sent.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from aisle import Arm, Experiment, RecClient, TrackEvent, exposure_event
from aisle_server.redis_server import RedisServer
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

AISLE = [sys.executable, "-m", "aisle_export.cli"]
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
    done = subprocess.run([*AISLE, *args], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def experiment_redis(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("experiment-state")) as running:
        yield running


@pytest.fixture(scope="module")
def experiment_server(repo, experiment_redis, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver-experiment.log"
    with TritonServer(repo, log_file=log, state_url=experiment_redis.url) as running:
        yield running


def _shop(client: RecClient, shopper: str, rng: random.Random, sent: dict) -> None:
    """Two pages for ``shopper``: recommend, log the exposure, click by the hidden model."""
    for _ in range(PAGES):
        recs = client.recommend(user_id=shopper, k=K, experiment=EXPERIMENT)
        assert recs.arm == EXPERIMENT.arm_of(shopper) and recs.experiment == EXPERIMENT.name
        assert len(recs) == K
        client.track_many([exposure_event(recs, shopper)])
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
        if clicks:
            client.track_many(clicks)


@pytest.fixture(scope="module")
def report(experiment_server, experiment_redis, tmp_path_factory) -> tuple[dict, dict, Path]:
    """Run the experiment, export the raw log and report on it: (report.json, what was sent, out dir)."""
    work = tmp_path_factory.mktemp("experiment")
    shoppers = [f"e2e-shopper-{i:03d}" for i in range(SHOPPERS)]
    sent: dict = {"exposures": Counter(), "clicks": Counter(), "by_request_id": 0, "by_window": 0}
    sent["shoppers"] = Counter(EXPERIMENT.arm_of(s) for s in shoppers)
    rng = random.Random(18)
    with RecClient(experiment_server.grpc_url, timeout_s=20, retry=None) as client:
        for shopper in shoppers:
            _shop(client, shopper, rng, sent)
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
    _aisle("events", "export", "--state", experiment_redis.url, "--raw", "--out", str(events))
    out = work / "report"
    _aisle(
        "experiment", "report", "--events", str(events), "--experiment", EXPERIMENT.name,
        "--config", str(config), "--out", str(out),
    )  # fmt: skip
    return json.loads((out / "report.json").read_text()), sent, out


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
