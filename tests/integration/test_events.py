"""Events and shopper state on a real tritonserver and a real redis-server (``aisle_server.state``).

One redis-server (AOF, ``appendfsync always``) and one tritonserver that uses it, for the module.
The last test kills Redis and starts it again over the same data directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aisle import AsyncRecClient, InvalidRequest, RecClient, StateUnavailable, TrackEvent
from aisle_export.data.interactions import read_interactions
from aisle_server.state import STREAM_KEY, connect, user_key
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = time.time()  # events of this module happen just before it: recent, never in the future
STAR_WARS, TOY_STORY = "50", "1"


@pytest.fixture(scope="module")
def state_server(repo, redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver-state.log"
    with TritonServer(repo, log_file=log, state_url=redis_server.url) as running:
        running.log_path = log  # type: ignore[attr-defined]  # read by the failure test
        yield running


@pytest.fixture
def client(state_server):
    with RecClient(state_server.grpc_url, timeout_s=20, retry=None) as sdk:
        yield sdk


@pytest.fixture
def redis(redis_server):
    return connect(redis_server.url)


def _user() -> str:
    return f"shopper-{uuid.uuid4().hex[:12]}"


def _ids(recs) -> list[str]:
    return [rec.item_id for rec in recs]


def test_tracked_click_shows_in_the_very_next_recommend(client):
    user = _user()
    cold = client.recommend(user_id=user, k=10, now=NOW)
    tracked = client.track(user, STAR_WARS, "click", ts=NOW - 60)
    assert tracked.stored and tracked.event_id
    after = client.recommend(user_id=user, k=10, now=NOW)
    as_history = client.recommend(history=[(STAR_WARS, NOW - 60, "click")], k=10, now=NOW)
    assert _ids(after) == _ids(as_history)
    assert _ids(after) != _ids(cold)
    assert STAR_WARS not in _ids(after)  # exclude_history applies to stored events too


def test_stored_events_merge_with_the_requests_history(client):
    user = _user()
    client.track_many(
        [
            {"user_id": user, "item_id": STAR_WARS, "event_type": "purchase", "ts": NOW - 300},
            TrackEvent(user, "181", "view", ts=NOW - 200),
        ]
    )
    merged = client.recommend(user_id=user, history=[(TOY_STORY, NOW - 100)], k=10, now=NOW)
    for item in (STAR_WARS, "181", TOY_STORY):
        assert item not in _ids(merged)
    alone = client.recommend(history=[(TOY_STORY, NOW - 100)], k=10, now=NOW)
    assert _ids(merged) != _ids(alone)


def test_async_client_tracks_and_reads_its_writes(state_server):
    user = _user()

    async def scenario():
        async with AsyncRecClient(state_server.grpc_url, timeout_s=20, retry=None) as sdk:
            tracked = await sdk.track(user, STAR_WARS, "click", ts=NOW - 60)
            after = await sdk.recommend(user_id=user, k=10, now=NOW)
            expected = await sdk.recommend(history=[(STAR_WARS, NOW - 60, "click")], k=10, now=NOW)
            return tracked, after, expected

    tracked, after, expected = asyncio.run(scenario())
    assert tracked.stored
    assert _ids(after) == _ids(expected)


def test_the_same_event_id_is_stored_once(client, redis):
    user = _user()
    event_id = uuid.uuid4().hex
    first = client.track(user, TOY_STORY, "view", ts=NOW - 30, event_id=event_id)
    again = client.track(user, TOY_STORY, "view", ts=NOW - 30, event_id=event_id)
    assert (first.stored, again.stored) == (True, False)
    assert first.event_id == again.event_id == event_id
    batch = client.track_many([TrackEvent(user, STAR_WARS, "click", NOW - 20, "dup")] * 2)
    assert [t.stored for t in batch] == [True, False]
    in_log = [fields for _, fields in redis.xrange(STREAM_KEY) if fields["user_id"] == user]
    assert sorted(f["event_id"] for f in in_log) == sorted([event_id, "dup"])
    assert redis.zcard(user_key(user)) == 2


def _raw_track(raw, **columns) -> None:
    inputs = []
    for name, value in columns.items():
        array = np.array([[value]], dtype=np.float64 if name == "TS" else object)
        tensor = grpcclient.InferInput(name, [1, 1], "FP64" if name == "TS" else "BYTES")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    raw.infer("track", inputs)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("USER_ID", {"USER_ID": b"  "}),
        ("EVENT_TYPE", {"EVENT_TYPE": b"purchse"}),
        ("TS", {"TS": NOW + 7 * 86400}),
        ("TS", {"TS": float("nan")}),
        ("PROPERTIES", {"PROPERTIES": json.dumps({"note": "x" * 5000}).encode()}),
        ("PROPERTIES", {"PROPERTIES": b"[1, 2]"}),
        ("ITEM_ID", {"ITEM_ID": b"i" * 300}),
    ],
)
def test_invalid_events_are_invalid_argument_naming_the_field(state_server, client, field, change):
    raw = grpcclient.InferenceServerClient(state_server.grpc_url)
    try:
        columns = {"USER_ID": b"someone", "ITEM_ID": TOY_STORY.encode(), "EVENT_TYPE": b"view", **change}
        with pytest.raises(InferenceServerException) as caught:
            _raw_track(raw, **columns)
        assert "INVALID_ARGUMENT" in str(caught.value.status())
        assert caught.value.message().startswith(f"{field}: row 0:"), caught.value.message()
    finally:
        raw.close()
    assert client.track(_user(), TOY_STORY, "view").stored  # the server keeps serving
    assert len(client.recommend(query="space", k=3)) == 3


def test_sdk_checks_events_before_sending_and_maps_server_errors(client):
    with pytest.raises(InvalidRequest, match="user_id"):
        client.track("", TOY_STORY, "view")
    with pytest.raises(InvalidRequest, match="ts"):
        client.track("someone", TOY_STORY, "view", ts=float("inf"))
    with pytest.raises(InvalidRequest, match="properties"):
        client.track("someone", TOY_STORY, "view", properties={"blob": "x" * 5000})
    with pytest.raises(InvalidRequest, match="EVENT_TYPE: row 0"):  # which types: the server's config
        client.track("someone", TOY_STORY, "purchse")
    with pytest.raises(InvalidRequest, match=r"events\[1\]: user_id"):
        client.track_many([TrackEvent("a", TOY_STORY, "view"), {"user_id": " ", "item_id": "1", "event_type": "view"}])


def test_events_export_is_an_interaction_log(client, redis, redis_server, tmp_path):
    user = _user()
    client.track_many(
        [
            TrackEvent(user, TOY_STORY, "view", ts=NOW - 50, properties={"page": "home"}),
            TrackEvent(user, STAR_WARS, "add_to_cart", ts=NOW - 40),
            TrackEvent(user, STAR_WARS, "purchase", ts=NOW - 30),
        ]
    )
    out = tmp_path / "events.parquet"
    command = [
        sys.executable,
        "-m",
        "aisle_export.cli",
        "events",
        "export",
        "--state",
        redis_server.url,
        "--out",
        str(out),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("client", "contract", "export", "server")),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    interactions, _ = read_interactions(out)
    mine = interactions.subset(interactions.user_id == user)
    assert mine.item_id.tolist() == [TOY_STORY, STAR_WARS, STAR_WARS]
    assert mine.event_type.tolist() == ["view", "add_to_cart", "purchase"]
    np.testing.assert_allclose(mine.timestamp, [NOW - 50, NOW - 40, NOW - 30])
    np.testing.assert_allclose(mine.weight, [0.1, 0.5, 1.0])  # the log format's event weights
    assert redis.xlen(STREAM_KEY) == 0  # drained: the exported events left the log
    again = subprocess.run(
        [*command[:-1], str(tmp_path / "again.parquet")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0 and "no events" in again.stdout
    assert client.recommend(user_id=user, k=5, now=NOW)  # the shopper's state is not the log: still read


def _metric(server: TritonServer, name: str, **labels: str) -> float:
    """The value of the series ``name`` with (at least) ``labels`` on the server's metrics endpoint; 0 if absent."""
    with urllib.request.urlopen(f"http://{server.host}:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        found, _, rest = series.partition("{")
        pairs = {k: v.strip('"') for k, _, v in (p.partition("=") for p in rest.rstrip("}").split(",") if p)}
        if found == name and all(pairs.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def test_events_and_state_lookups_are_counted_on_the_metrics_endpoint(state_server, client):
    """``aisle_server.metrics``: accepted, duplicate and rejected events from ``track``, and the count
    and latency histogram of ``rerank``'s state reads, as Prometheus scrapes them."""
    names = {
        "accepted": ("aisle_events_accepted_total", {"model": "track"}),
        "duplicate": ("aisle_events_duplicate_total", {"model": "track"}),
        "invalid": ("aisle_events_rejected_total", {"model": "track", "reason": "invalid"}),
        "lookups": ("aisle_state_lookups_total", {"model": "rerank"}),
        "histogram": ("aisle_state_lookup_seconds_count", {"model": "rerank"}),
        "inf_bucket": ("aisle_state_lookup_seconds_bucket", {"model": "rerank", "le": "+Inf"}),
        "fast_bucket": ("aisle_state_lookup_seconds_bucket", {"model": "rerank", "le": "0.5"}),
        "seconds": ("aisle_state_lookup_seconds_sum", {"model": "rerank"}),
    }

    def scrape() -> dict[str, float]:
        return {key: _metric(state_server, name, **labels) for key, (name, labels) in names.items()}

    before = scrape()
    user, first, second = _user(), uuid.uuid4().hex, uuid.uuid4().hex
    client.track_many(
        [TrackEvent(user, TOY_STORY, "view", NOW - 30, first), TrackEvent(user, STAR_WARS, "click", NOW - 20, second)]
    )
    assert [t.stored for t in client.track_many([TrackEvent(user, TOY_STORY, "view", NOW - 30, first)])] == [False]
    raw = grpcclient.InferenceServerClient(state_server.grpc_url)
    try:
        for event_type in (b"purchse", b"clik"):
            with pytest.raises(InferenceServerException):
                _raw_track(raw, USER_ID=user.encode(), ITEM_ID=TOY_STORY.encode(), EVENT_TYPE=event_type)
    finally:
        raw.close()
    for _ in range(3):
        assert client.recommend(user_id=user, k=5, now=NOW)
    assert client.recommend(query="space", k=3)  # no USER_ID: no lookup
    delta = {key: value - before[key] for key, value in scrape().items()}
    assert (delta["accepted"], delta["duplicate"], delta["invalid"]) == (2, 1, 2), delta
    assert delta["lookups"] == delta["histogram"] == delta["inf_bucket"] == delta["fast_bucket"] == 3, delta
    assert 0 < delta["seconds"] < 1.5, delta


def test_redis_down_then_restarted(state_server, redis_server, client):
    user = _user()
    acked = [client.track(user, item, "click", ts=NOW - 100 + i) for i, item in enumerate(("1", "50", "181", "100"))]
    assert all(t.stored for t in acked)
    expected = client.recommend(user_id=user, k=10, now=NOW)
    failures_before = _metric(state_server, "aisle_state_read_failures_total")

    redis_server.kill()  # SIGKILL: only what was fsynced survives
    own = [(TOY_STORY, NOW - 10)]
    for _ in range(3):
        answer = client.recommend(user_id=user, history=own, k=10, now=NOW)
        assert _ids(answer) == _ids(client.recommend(history=own, k=10, now=NOW))  # its own history only
    unavailable_before = _metric(state_server, "aisle_events_rejected_total", reason="unavailable")
    with pytest.raises(StateUnavailable) as caught:
        client.track(user, "7", "view")
    assert caught.value.retryable
    assert _metric(state_server, "aisle_events_rejected_total", reason="unavailable") == unavailable_before + 1
    assert _metric(state_server, "aisle_state_read_failures_total") == failures_before + 3
    log = state_server.log_path.read_text(errors="replace")  # type: ignore[attr-defined]  # the fixture sets it on the server it started
    assert log.count("recommend answers from each request's own history") == 1  # logged once

    redis_server.start()  # same port, same data directory
    redis = connect(redis_server.url)
    stored = [json.loads(member)[0] for member in redis.zrange(user_key(user), 0, -1)]
    assert stored == [t.event_id for t in acked]  # every acknowledged event survived
    in_log = {fields["event_id"] for _, fields in redis.xrange(STREAM_KEY) if fields["user_id"] == user}
    assert in_log == {t.event_id for t in acked}
    assert _ids(client.recommend(user_id=user, k=10, now=NOW)) == _ids(expected)  # read again after the restart
    assert client.track(user, "7", "view").stored
