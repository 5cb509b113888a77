"""Events and shopper state without Triton: validation (contract, ``track`` tensors, SDK), the merge
of stored events into a request's history, and the Redis key logic on a real redis-server."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from aisle import InvalidRequest, ServerUnavailable, StateUnavailable, TrackEvent
from aisle.errors import from_triton
from aisle.requests import RecommendRequest, batch_recommend_tensors, track_tensors
from aisle_contract import DEFAULT_EVENT_TYPES, MAX_PROPERTIES_BYTES, EventError, check_event
from aisle_server.errors import InvalidInput
from aisle_server.errors import StateUnavailable as StoreDown
from aisle_server.processes import process_group_members
from aisle_server.ranking import RankingConfig, session_interest
from aisle_server.redis_server import RedisServer
from aisle_server.rerank_io import merge_history, parse_requests
from aisle_server.state import (
    STREAM_KEY,
    Event,
    ShopperState,
    StateReads,
    StateSettings,
    drain_stream,
    event_key,
    trim_through,
    user_key,
)
from aisle_server.track_io import parse_event_types, parse_events

NOW = 1_700_000_000.0


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("user_id", {"user_id": ""}),
        ("user_id", {"user_id": "   "}),
        ("user_id", {"user_id": 7}),
        ("item_id", {"item_id": "x" * 257}),
        ("event_type", {"event_type": "purchse"}),
        ("ts", {"ts": math.nan}),
        ("ts", {"ts": math.inf}),
        ("ts", {"ts": True}),
        ("ts", {"ts": -1.0}),
        ("ts", {"ts": NOW + 301}),
        ("event_id", {"event_id": ""}),
        ("properties", {"properties_json": json.dumps({"k": "v" * MAX_PROPERTIES_BYTES})}),
    ],
)
def test_check_event_names_the_first_bad_field(field, kwargs):
    event = {"user_id": "u", "item_id": "i", "event_type": "view", "ts": NOW, "now": NOW, **kwargs}
    with pytest.raises(EventError) as caught:
        check_event(**event)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_check_event_accepts_clock_skew_and_any_type_without_a_list():
    check_event("u", "i", "view", NOW + 299, NOW)
    check_event("u", "i", "wishlist", NOW, NOW, allowed_event_types=None)
    with pytest.raises(EventError, match="event_type"):
        check_event("u", "i", "wishlist", NOW, NOW)


# --------------------------------------------------------------------------- track tensors


def column(*values):
    return np.array([[v] for v in values], dtype=object if not isinstance(values[0], float) else np.float64)


def track_inputs(n=2, **extra):
    inputs = {
        "USER_ID": column(*[b"u%d" % i for i in range(n)]),
        "ITEM_ID": column(*[b"i%d" % i for i in range(n)]),
        "EVENT_TYPE": column(*[b"view"] * n),
    }
    inputs.update(extra)
    return inputs


def test_parse_events_defaults_ts_and_event_id():
    ids = iter(["gen-1", "gen-2"])
    events = parse_events(track_inputs(), clock=lambda: NOW, new_id=lambda: next(ids))
    assert events == [Event("gen-1", "u0", "i0", "view", NOW), Event("gen-2", "u1", "i1", "view", NOW)]


def test_parse_events_keeps_given_ids_stamps_and_compacts_properties():
    inputs = track_inputs(
        TS=column(NOW - 5.0, NOW - 1.0),
        EVENT_ID=column(b"e-1", b""),  # b"": generate one
        PROPERTIES=column(b'{ "page" : "home" }', b""),
    )
    events = parse_events(inputs, clock=lambda: NOW, new_id=lambda: "gen")
    assert [(e.event_id, e.ts, e.properties) for e in events] == [
        ("e-1", NOW - 5, '{"page":"home"}'),
        ("gen", NOW - 1, ""),
    ]


@pytest.mark.parametrize(
    ("tensor", "change"),
    [
        ("USER_ID", {"USER_ID": column(b"u", b"")}),
        ("ITEM_ID", {"ITEM_ID": column(b"i", b"x" * 400)}),
        ("EVENT_TYPE", {"EVENT_TYPE": column(b"view", b"like")}),
        ("TS", {"TS": column(NOW, NOW + 3600.0)}),
        ("TS", {"TS": column(NOW, math.nan)}),
        ("EVENT_ID", {"EVENT_ID": column(b"e", b"\xff")}),
        ("PROPERTIES", {"PROPERTIES": column(b"", b"{not json")}),
        ("PROPERTIES", {"PROPERTIES": column(b"", b'"a string"')}),
        ("PROPERTIES", {"PROPERTIES": column(b"", b"1" * (4 * MAX_PROPERTIES_BYTES + 1))}),
        ("PROPERTIES", {"PROPERTIES": column(b"", json.dumps({"k": "v" * MAX_PROPERTIES_BYTES}).encode())}),
    ],
)
def test_parse_events_rejects_a_bad_row_naming_tensor_and_row(tensor, change):
    with pytest.raises(InvalidInput) as caught:
        parse_events(track_inputs(**change), clock=lambda: NOW)
    assert caught.value.field == tensor
    assert str(caught.value).startswith(f"{tensor}: ")
    assert "row 1" in str(caught.value) or tensor == "EVENT_ID"


def test_parse_events_needs_the_required_tensors_in_shape():
    with pytest.raises(InvalidInput, match="USER_ID"):
        parse_events({"ITEM_ID": column(b"i"), "EVENT_TYPE": column(b"view")})
    with pytest.raises(InvalidInput, match="EVENT_TYPE"):
        parse_events({"USER_ID": column(b"u"), "ITEM_ID": column(b"i")})
    with pytest.raises(InvalidInput, match="ITEM_ID"):
        parse_events(track_inputs(ITEM_ID=column(b"i", b"j", b"k")))


def test_event_types_come_from_the_config():
    assert parse_event_types(None) == DEFAULT_EVENT_TYPES
    assert parse_event_types(" view, wishlist ,") == ("view", "wishlist")
    events = parse_events(track_inputs(1, EVENT_TYPE=column(b"wishlist")), ("wishlist",), clock=lambda: NOW)
    assert events[0].event_type == "wishlist"


# --------------------------------------------------------------------------- merging stored events


def test_merge_history_orders_by_time_weights_by_type_and_counts_a_resent_event_once():
    stored = [("a", 10.0, "view"), ("b", 20.0, "purchase"), ("c", 30.0, "click")]
    ids, ts, events, weights = merge_history(["b", "x"], np.array([20.0, 25.0]), [], stored, max_history=10)
    assert ids == ["a", "b", "x", "c"]
    assert ts.tolist() == [10.0, 20.0, 25.0, 30.0]
    assert events == ["view", "", "", "click"]  # b: the request's own copy (no type given)
    assert weights.tolist() == [0.1, 1.0, 1.0, 0.25]


def test_merge_history_keeps_the_newest_and_puts_the_request_last_on_ties():
    stored = [("a", 5.0, "view"), ("b", 5.0, "wishlist")]
    ids, _, events, weights = merge_history(["r"], np.array([5.0]), ["click"], stored, max_history=2)
    assert ids == ["b", "r"]
    assert events == ["wishlist", "click"]
    assert weights.tolist() == [1.0, 1.0]  # unknown types weigh 1


def test_event_weights_shape_the_session_interest():
    embeddings = np.eye(2, dtype=np.float32)
    even = session_interest(embeddings, np.array([NOW, NOW]), NOW, 3600.0)
    purchase_heavy = session_interest(embeddings, np.array([NOW, NOW]), NOW, 3600.0, np.array([1.0, 0.1]))
    assert even[0] == pytest.approx(even[1])
    assert purchase_heavy[0] > 5 * purchase_heavy[1]


def rerank_inputs(users, **extra):
    inputs = {
        "QUERY": np.array([[b""]] * len(users), dtype=object),
        "QUERY_EMBEDDING": np.zeros((len(users), 4), dtype=np.float32),
        "USER_ID": np.array([[u] for u in users], dtype=object),
    }
    inputs.update(extra)
    return inputs


def test_parse_requests_reads_each_user_once_and_merges():
    calls = []

    def state(user_ids, n):
        calls.append((list(user_ids), n))
        return {"u1": [("s1", NOW - 60, "purchase")]}

    config = RankingConfig(state_events=7)
    inputs = rerank_inputs(
        [b"u1", b"", b"u1"],
        HISTORY_IDS=np.array([[b"h"], [b"h"], [b""]], dtype=object),
        HISTORY_TS=np.array([[NOW - 30], [NOW - 30], [0.0]]),
    )
    rows = parse_requests(inputs, config, 50, 4, clock=lambda: NOW, state=state)
    assert calls == [(["u1", "", "u1"], 7)]
    assert [list(r.history_ids) for r in rows] == [["s1", "h"], ["h"], ["s1"]]
    assert rows[0].history_weights.tolist() == [1.0, 1.0]
    assert list(rows[0].history_events) == ["purchase", ""]
    assert rows[1].history_weights is None  # no user: exactly the request as before


def test_parse_requests_ignores_user_id_without_a_store_and_checks_its_shape():
    rows = parse_requests(rerank_inputs([b"u1"]), RankingConfig(), 50, 4, clock=lambda: NOW)
    assert list(rows[0].history_ids) == []
    with pytest.raises(InvalidInput, match="USER_ID"):
        parse_requests(rerank_inputs([b"u"], USER_ID=np.array([[b"a", b"b"]], dtype=object)), RankingConfig(), 50, 4)
    with pytest.raises(InvalidInput, match="USER_ID"):
        parse_requests(rerank_inputs([b"u" * 300]), RankingConfig(), 50, 4, state=lambda u, n: {})


# --------------------------------------------------------------------------- Redis key logic


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
def state(redis_server):
    store = ShopperState(redis_server.url, StateSettings(max_user_events=3, user_ttl_s=1000, dedupe_ttl_s=500))
    store.redis.flushdb()
    return store


def test_the_local_redis_fsyncs_every_write(state):
    assert state.check_durability() is None
    config = state.redis.config_get("append*")
    assert (config["appendonly"], config["appendfsync"]) == ("yes", "always")


def test_store_is_idempotent_by_event_id(state):
    first = Event("e1", "u", "i1", "view", NOW, '{"a":1}')
    assert state.store([first, first, Event("e2", "u", "i2", "click", NOW + 1)]) == [True, False, True]
    assert state.store([Event("e1", "u", "other", "purchase", NOW + 2)]) == [False]  # the id decides
    entries, last = drain_stream(state.redis)
    assert [(e["event_id"], e["item_id"], e["properties"]) for e in entries] == [
        ("e1", "i1", '{"a":1}'),
        ("e2", "i2", ""),
    ]
    assert 0 < state.redis.ttl(event_key("e1")) <= 500
    assert {STREAM_KEY: state.redis.get(event_key("e2"))} == last  # the key holds the stream id


def test_recent_keeps_the_newest_per_user_in_time_order(state):
    events = [Event(f"e{i}", "u", f"i{i}", "view", NOW + ts) for i, ts in enumerate([5, 1, 4, 2, 3])]
    state.store(events)
    assert state.recent(["u", "nobody", ""], 10) == {
        "u": [("i4", NOW + 3, "view"), ("i2", NOW + 4, "view"), ("i0", NOW + 5, "view")],  # max_user_events 3
        "nobody": [],
    }
    assert state.recent(["u"], 2)["u"] == [("i2", NOW + 4, "view"), ("i0", NOW + 5, "view")]
    assert state.redis.zcard(user_key("u")) == 3
    assert 0 < state.redis.ttl(user_key("u")) <= 1000
    assert state.recent([], 5) == {}


def test_user_and_item_ids_round_trip_whatever_their_characters(state):
    user, item = 'ünï "quoted" :colon', "item\twith\ttabs ✓"
    state.store([Event("e", user, item, "click", NOW)])
    assert state.recent([user], 5) == {user: [(item, NOW, "click")]}


def test_trim_through_removes_only_what_was_read(state):
    state.store([Event("a", "u", "i", "view", NOW), Event("b", "u", "i", "view", NOW)])
    entries, last = drain_stream(state.redis, count=1)  # pages through the stream
    assert [e["event_id"] for e in entries] == ["a", "b"]
    state.store([Event("c", "u", "i", "view", NOW)])  # tracked during the export
    assert trim_through(state.redis, last) == 2
    assert [e["event_id"] for e in drain_stream(state.redis)[0]] == ["c"]


def test_a_down_store_is_state_unavailable_counted_and_logged_once(tmp_path, caplog):
    with RedisServer(tmp_path / "down") as server:
        store = ShopperState(server.url)
        store.store([Event("e", "u", "i", "view", NOW)])
        counted = []
        reads = StateReads(store, on_failure=lambda: counted.append(1))
        assert reads(["u"], 5) == {"u": [("i", NOW, "view")]}
        server.kill()
        with pytest.raises(StoreDown):
            store.store([Event("f", "u", "i", "view", NOW)])
        with caplog.at_level(logging.WARNING, logger="aisle.state"):
            assert reads(["u"], 5) == {} and reads(["u"], 5) == {}
        assert reads.failures == 2 and len(counted) == 2
        assert len([r for r in caplog.records if "own history" in r.getMessage()]) == 1
        server.start()
        assert reads(["u"], 5) == {"u": [("i", NOW, "view")]}  # reconnects; the event survived the kill
        assert not reads.down


def test_state_settings_are_checked():
    assert StateSettings.from_parameters({"max_user_events": "10"}).max_user_events == 10
    with pytest.raises(ValueError, match="dedupe_ttl_s"):
        StateSettings.from_parameters({"dedupe_ttl_s": "0"})


# --------------------------------------------------------------------------- SDK


def test_track_event_checks_fields_fixes_an_id_and_compacts_properties():
    event = TrackEvent("u", "i", "view", properties={"b": 1, "a": [1, 2]})
    assert event.event_id and len(event.event_id) == 32
    assert event.properties == '{"b":1,"a":[1,2]}'
    assert isinstance(event.ts, float) and math.isfinite(event.ts)
    assert TrackEvent("u", "i", "view").event_id != TrackEvent("u", "i", "view").event_id
    for bad, field in [
        ({"user_id": ""}, "user_id"),
        ({"item_id": None}, "item_id"),
        ({"ts": math.nan}, "ts"),
        ({"properties": ["not", "a", "mapping"]}, "properties"),
        ({"properties": {"x": object()}}, "properties"),
        ({"properties": {"x": "y" * MAX_PROPERTIES_BYTES}}, "properties"),
    ]:
        with pytest.raises(InvalidRequest, match=field):
            TrackEvent(**{"user_id": "u", "item_id": "i", "event_type": "view", **bad})
    with pytest.raises(InvalidRequest, match=r"events\[3\]: unknown"):
        TrackEvent.coerce({"user_id": "u", "item_id": "i", "event_type": "view", "colour": 1}, 3)
    with pytest.raises(InvalidRequest, match="event_type"):
        TrackEvent.coerce({"user_id": "u", "item_id": "i"})


def test_track_tensors():
    events = [TrackEvent("u", "i", "view", 1.5, "e1"), TrackEvent("ü", "j", "click", 2.5, "e2", {"k": 1})]
    tensors = {t.name: t for t in track_tensors(events)}
    assert tensors["USER_ID"].array.tolist() == [[b"u"], ["ü".encode()]]
    assert tensors["TS"].array.tolist() == [[1.5], [2.5]] and tensors["TS"].datatype == "FP64"
    assert tensors["EVENT_ID"].array.tolist() == [[b"e1"], [b"e2"]]
    assert tensors["PROPERTIES"].array.tolist() == [[b""], [b'{"k":1}']]
    assert "PROPERTIES" not in {t.name for t in track_tensors(events[:1])}
    with pytest.raises(InvalidRequest):
        track_tensors([events[0]] * 65)


def test_user_id_travels_as_an_optional_tensor():
    plain = batch_recommend_tensors([RecommendRequest("q")])
    assert "USER_ID" not in {t.name for t in plain}
    rows = [RecommendRequest("q", user_id="u1"), RecommendRequest("q")]
    users = {t.name: t for t in batch_recommend_tensors(rows)}["USER_ID"]
    assert users.array.tolist() == [[b"u1"], [b""]]
    assert RecommendRequest.coerce({"user_id": "u2"}).user_id == "u2"
    for bad in ("", " ", 5, "u" * 257):
        with pytest.raises(InvalidRequest, match="user_id"):
            RecommendRequest(user_id=bad)


def test_a_down_state_store_maps_to_state_unavailable():
    error = from_triton(
        InferenceServerException("state store redis://x unavailable: ConnectionError", "StatusCode.UNAVAILABLE")
    )
    assert type(error) is StateUnavailable and error.retryable and isinstance(error, ServerUnavailable)
    other = from_triton(InferenceServerException("connection refused", "StatusCode.UNAVAILABLE"))
    assert type(other) is ServerUnavailable
    assert error.code == grpc.StatusCode.UNAVAILABLE


def test_a_local_redis_stops_with_the_process_that_started_it_even_when_killed(tmp_path):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(root / d) for d in ("contract", "server"))}
    script = (
        "import sys, time\nfrom aisle_server.redis_server import RedisServer\n"
        "r = RedisServer(sys.argv[1]).start()\nprint(r.pid, flush=True)\ntime.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid = int(owner.stdout.readline())
        assert process_group_members(pid) == [pid]  # its own process group, alive
    finally:
        owner.kill()  # no cleanup runs in the owner
        owner.wait()
    for _ in range(600):  # pdeathsig: SIGTERM as soon as the owner is gone
        if not process_group_members(pid):
            break
        time.sleep(0.05)
    assert not process_group_members(pid), "redis-server outlived the process that started it"
