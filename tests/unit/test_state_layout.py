"""State URLs, the cluster key layout and replicated acknowledgement (``state_url``, ``state_keys``,
``state_writes``): pure checks, and a real single redis-server for the sharded layout and WAIT."""

from __future__ import annotations

import pytest

from aisle_server.errors import StateUnavailable
from aisle_server.live_catalog import START, CatalogChanges, Change, marks_of, through_of
from aisle_server.redis_server import RedisServer
from aisle_server.state import Event, ShopperState, StateSettings, drain_stream, trim_through
from aisle_server.state_keys import LEGACY, SLOTS, KeyLayout, key_slot, shard_of, shard_tags
from aisle_server.state_url import parse_state_url
from aisle_server.state_writes import NotReplicated

NOW = 1_700_000_000.0

# --------------------------------------------------------------------------- URLs


def test_a_single_node_url_keeps_its_defaults_and_passes_the_rest_to_redis_py():
    spec = parse_state_url("redis://:s3cret@state:6380/2?health_check_interval=5")
    assert not spec.cluster and spec.nodes == (("state", 6380),)
    assert (spec.shards, spec.replicas, spec.password) == (1, 0, "s3cret")
    assert spec.redis_url == "redis://:s3cret@state:6380/2?health_check_interval=5"
    assert "s3cret" not in spec.shown and ":***@" in spec.shown


def test_a_cluster_url_names_its_nodes_and_waits_for_a_replica_by_default():
    spec = parse_state_url("redis-cluster://:pw@a:7000,b:7001, c:7002?shards=32&replica_timeout_ms=500")
    assert spec.cluster and spec.nodes == (("a", 7000), ("b", 7001), ("c", 7002))
    assert (spec.shards, spec.replicas, spec.replica_timeout_ms, spec.password) == (32, 1, 500, "pw")
    assert parse_state_url("rediss-cluster://a:7000").tls
    assert parse_state_url("redis://a:1?shards=4&replicas=2").replicas == 2


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://a:1", "scheme"),
        ("redis://a:1,b:2", "redis-cluster://"),
        ("redis-cluster://a:notaport", "HOST:PORT"),
        ("redis-cluster://a:1?shards=0", "shards"),
        ("redis-cluster://a:1?shards=x", "shards"),
        ("redis-cluster://a:1?replicas=-1", "replicas"),
        ("redis-cluster://a:1?replica_timeout_ms=0", "replica_timeout_ms"),
    ],
)
def test_a_bad_state_url_is_refused_naming_what_is_wrong(url, named):
    with pytest.raises(ValueError, match=named):
        parse_state_url(url)


def test_a_refused_url_never_shows_its_password():
    with pytest.raises(ValueError, match="shards") as caught:
        parse_state_url("redis-cluster://:top-secret@a:1?shards=0")
    assert "top-secret" not in str(caught.value) and ":***@" in str(caught.value)
    assert parse_state_url("redis-cluster://user:p%40ss@a:1").shown == "redis-cluster://user:***@a:1"


# --------------------------------------------------------------------------- key layout


def test_the_single_node_layout_keeps_the_names_aisle_always_used():
    assert KeyLayout.of(1, cluster=False) == LEGACY
    assert LEGACY.event_streams() == ["aisle:events"]
    assert LEGACY.user_key("u") == "aisle:user:u" and LEGACY.event_key("u", "e") == "aisle:event:e"
    assert (LEGACY.catalog_stream(0), LEGACY.catalog_items(0)) == ("aisle:catalog", "aisle:catalog:items")


def test_a_shoppers_keys_share_their_event_log_shards_slot():
    layout = KeyLayout.of(16, cluster=True)
    for user in ("alice", "bob", "{braces}", "ünï:code", ""):
        shard = layout.user_shard(user)
        slots = {key_slot(k) for k in (layout.user_key(user), layout.event_key(user, "e1"), layout.event_stream(shard))}
        assert len(slots) == 1, (user, slots)
    for item in ("1", "sku-9", "{x}"):
        shard = layout.item_shard(item)
        assert key_slot(layout.catalog_stream(shard)) == key_slot(layout.catalog_items(shard))


@pytest.mark.parametrize("shards", [1, 3, 16, 64])
def test_shard_slots_are_evenly_spaced_over_the_cluster(shards):
    slots = [key_slot(f"{{{tag}}}") for tag in shard_tags(shards)]
    assert [s * shards // SLOTS for s in slots] == list(range(shards))  # shard i in the i-th range
    # 3 masters with even slot ranges (what redis-cli --cluster create gives) get shards evenly
    per_master = [sum(1 for s in slots if s * 3 // SLOTS == m) for m in range(3)]
    assert max(per_master) - min(per_master) <= 1


def test_ids_spread_over_every_shard_and_always_land_in_the_same_one():
    assert shard_of("alice", 16) == shard_of("alice", 16) == 7  # crc32: the same in every process
    assert {shard_of(f"user-{i}", 16) for i in range(500)} == set(range(16))
    assert shard_of("anything", 1) == 0


def test_marks_round_trip_through_a_manifest_and_a_wrong_shard_count_is_refused():
    layout = KeyLayout.of(3, cluster=True)
    marks = {stream: f"{i + 1}-0" for i, stream in enumerate(layout.catalog_streams())}
    assert marks_of(through_of(marks, layout), layout) == marks
    assert marks_of(None, layout) == dict.fromkeys(layout.catalog_streams(), START)
    assert through_of({"aisle:catalog": "5-0"}, LEGACY) == "5-0"  # one shard: the manifest's old form
    with pytest.raises(ValueError, match="shards"):
        marks_of("5-0", layout)


# --------------------------------------------------------------------------- a real redis-server


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
def sharded(redis_server):
    store = ShopperState(f"{redis_server.url}?shards=4")
    store.redis.flushdb()
    return store


def test_a_sharded_store_writes_each_shoppers_events_to_its_shard_and_drains_them_all(sharded):
    layout = sharded.layout
    users = [f"u{i}" for i in range(12)]
    assert {layout.user_shard(u) for u in users} == set(range(4))
    events = [Event(f"e{i}", users[i % 12], f"i{i}", "view", NOW + i) for i in range(36)]
    assert sharded.store(events) == [True] * 36
    assert sharded.store(events[:2]) == [False, False]  # idempotent per shopper's event id
    assert sharded.recent(["u1"], 10)["u1"] == [
        ("i1", NOW + 1, "view"),
        ("i13", NOW + 13, "view"),
        ("i25", NOW + 25, "view"),
    ]
    for stream in layout.event_streams():
        in_stream = {f["user_id"] for _, f in sharded.redis.xrange(stream)}
        assert in_stream and all(layout.event_stream(layout.user_shard(u)) == stream for u in in_stream)
    entries, marks = drain_stream(sharded.redis, count=2, layout=layout)  # pages through each shard
    assert sorted(e["event_id"] for e in entries) == sorted(e.event_id for e in events)
    for user in users:  # each shopper's events in the order stored
        mine = [e["event_id"] for e in entries if e["user_id"] == user]
        assert mine == [e.event_id for e in events if e.user_id == user]
    sharded.store([Event("late", "u0", "i", "view", NOW)])
    assert trim_through(sharded.redis, marks) == 36
    assert [e["event_id"] for e in drain_stream(sharded.redis, layout=layout)[0]] == ["late"]


def test_a_sharded_change_log_is_read_in_order_per_item_across_shards(redis_server):
    changes = CatalogChanges(ShopperState(f"{redis_server.url}?shards=4").redis, f"{redis_server.url}?shards=4")
    changes.redis.flushdb()
    items = [f"sku-{i}" for i in range(8)]
    logged = [Change(item, "upsert", {"title": f"t{n}"}) for n in range(3) for item in items]
    ids = changes.append(logged, [dict(c.fields) for c in logged])
    assert len(ids) == len(logged) and all(ids)  # stream ids: unique per shard's stream, not across
    assert changes.states([*items[:2], "never"]) == [{"title": "t2"}, {"title": "t2"}, None]
    read, marks = changes.read_after(changes.start())
    assert sorted(c.change_id for c in read) == sorted(ids)
    for item in items:  # per item: the order it was changed in
        assert [c.fields["title"] for c in read if c.item_id == item] == ["t0", "t1", "t2"]
    assert changes.read_after(marks)[0] == []
    assert changes.trim_before(marks) == len(logged) - len(marks)  # each stream keeps its newest


def test_a_write_no_replica_confirms_is_refused_as_retryable_and_its_retry_is_not_stored_twice(redis_server):
    url = f"{redis_server.url}?replicas=1&replica_timeout_ms=50"  # a single node: no replica ever confirms
    store = ShopperState(url)
    store.redis.flushdb()
    with pytest.raises(NotReplicated, match="0 of 1 replicas") as caught:
        store.store([Event("e1", "u", "i", "view", NOW)])
    assert isinstance(caught.value, StateUnavailable)  # UNAVAILABLE on the wire: the SDK retries
    plain = ShopperState(redis_server.url)  # the master did take it: a retry finds it, stores nothing new
    assert plain.store([Event("e1", "u", "i", "view", NOW)]) == [False]
    assert plain.redis.xlen("aisle:events") == 1
    with pytest.raises(NotReplicated):
        CatalogChanges(store.redis, url).append([Change("x", "upsert", {"title": "X"})], [{"title": "X"}])


def test_a_cluster_down_at_load_is_a_store_error_per_call_not_a_failed_load():
    from aisle_server.state import StateReads
    from aisle_server.tritonserver import free_port

    state = ShopperState(f"redis-cluster://127.0.0.1:{free_port()}", StateSettings(timeout_s=0.2))  # nothing there
    assert state.check_durability() is None
    with pytest.raises(StateUnavailable, match="unavailable"):
        state.store([Event("e", "u", "i", "view", NOW)])
    with pytest.raises(StateUnavailable):
        state.recent(["u"], 5)
    assert StateReads(state)(["u"], 5) == {}  # recommend answers from the request's own history
    with pytest.raises(StateUnavailable):
        CatalogChanges(state.redis, state.spec).read_after({"aisle:{0.1}:catalog": START})
