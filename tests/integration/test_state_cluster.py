"""Shopper state and live catalog changes on a real Redis Cluster, served by two tritonservers.

The session's ``redis_cluster`` (3 masters, one replica each) and two tritonservers over one copy
of the session repository, both with ``AISLE_STATE_URL=redis-cluster://…`` (16 shards, acknowledged
writes replicated to 1 replica: ``aisle_server.state_url``). The two servers start side by side.
The failover test runs last: it kills a master and starts it again as a replica.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aisle_cli
import pytest

from aisle import RecClient, RetryPolicy, StateUnavailable
from aisle_server.index import INDEX_DIRNAME, CatalogIndex
from aisle_server.live_catalog import START
from aisle_server.state import stream_order
from aisle_server.state_keys import KeyLayout
from aisle_server.state_url import connect, parse_state_url
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

NOW = time.time()
LIVENESS_S = 15.0  # a change not visible by then is lost, not slow
STAR_WARS = "50"


@pytest.fixture(scope="module")
def cluster_repo(repo, tmp_path_factory) -> Path:
    """A copy of the session repository: compaction writes a new ``rerank`` version into it."""
    copy = tmp_path_factory.mktemp("cluster-served") / "model_repository"
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="module")
def servers(cluster_repo, redis_cluster, tmp_path_factory):
    """Two tritonservers on the cluster, started side by side."""
    logs = tmp_path_factory.mktemp("logs")
    both = [
        TritonServer(cluster_repo, log_file=logs / f"tritonserver-cluster-{n}.log", state_url=redis_cluster.url)
        for n in (0, 1)
    ]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda server: server.start(), both))
        yield both
    finally:
        for server in both:
            server.stop()


@pytest.fixture
def clients(servers):
    sdks = [RecClient(server.grpc_url, timeout_s=30, retry=None, embed_cache_size=0) for server in servers]
    yield sdks
    for sdk in sdks:
        sdk.close()


@pytest.fixture(scope="module")
def layout(redis_cluster) -> KeyLayout:
    spec = parse_state_url(redis_cluster.url)
    return KeyLayout.of(spec.shards, spec.cluster)


@pytest.fixture(scope="module")
def store(redis_cluster):
    return connect(redis_cluster.url, timeout_s=5.0)


def _ids_covering_every_shard(layout: KeyLayout, prefix: str, shard_of) -> list[str]:
    """Fresh ids, at least one in every shard."""
    ids, covered = [], set()
    while len(covered) < layout.shards:
        candidate = f"{prefix}-{uuid.uuid4().hex[:10]}"
        if shard_of(candidate) not in covered:
            covered.add(shard_of(candidate))
            ids.append(candidate)
    return ids


def _wait_until(check, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < LIVENESS_S:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{what}: not visible after {LIVENESS_S} s")


def _ids(recs) -> list[str]:
    return [r.item_id for r in recs]


def test_a_click_tracked_on_one_server_is_in_the_next_recommend_on_the_other(clients, layout):
    users = _ids_covering_every_shard(layout, "shopper", layout.user_shard)
    for n, user in enumerate(users):  # every shard, both directions
        writer, reader = clients[n % 2], clients[(n + 1) % 2]
        item = str(1 + (n * 37) % 1600)
        assert writer.track(user, item, "click", ts=NOW - 30).stored
        expected = _ids(reader.recommend(history=[(item, NOW - 30, "click")], k=10, now=NOW, cache=False))
        assert _ids(reader.recommend(user_id=user, k=10, now=NOW, cache=False)) == expected, user


def test_a_catalog_change_reaches_every_rerank_instance(clients, layout):
    items = _ids_covering_every_shard(layout, "live", layout.item_shard)[:4]
    for item in items:
        title = f"Quuxomatic cluster kettle {item}"
        clients[0].update_items([{"item_id": item, "title": title, "category": "Kitchen"}])
        delays = [
            _wait_until(lambda c=c, t=title, i=item: _ids(c.recommend(t, k=3, cache=False))[:1] == [i], item)
            for c in clients
        ]
        print(f"{item}: visible on both servers after {max(delays):.2f} s (poll every 0.2 s)")


def test_events_export_reads_and_trims_every_shard(clients, layout, redis_cluster, store, tmp_path):
    users = _ids_covering_every_shard(layout, "exported", layout.user_shard)
    tracked = {clients[0].track(user, STAR_WARS, "view", ts=NOW - 10).event_id for user in users}
    out = tmp_path / "events.jsonl"
    aisle_cli.ok("events", "export", "--state", redis_cluster.url, "--out", str(out), "--raw")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert tracked <= {row["event_id"] for row in rows}
    assert {layout.user_shard(row["user_id"]) for row in rows} == set(range(layout.shards))
    assert all(store.xlen(stream) == 0 for stream in layout.event_streams())  # every shard drained


def test_compaction_reads_every_shard_of_the_change_log(clients, layout, cluster_repo, redis_cluster, store):
    items = _ids_covering_every_shard(layout, "compacted", layout.item_shard)
    clients[1].update_items([{"item_id": item, "title": f"Plinthwise gadget {item}"} for item in items])
    done = aisle_cli.ok("catalog", "compact", "--repo", str(cluster_repo), "--state", redis_cluster.url).last_json()
    assert done["compacted"] >= len(items), done
    through = done["overlay_through"]
    assert isinstance(through, list) and len(through) == layout.shards and START not in through
    for stream, mark in zip(layout.catalog_streams(), through):  # each shard's mark is its newest change
        newest = store.xrevrange(stream, count=1)[0][0]
        assert stream_order(mark) == stream_order(newest)
    index = CatalogIndex.load(cluster_repo / "rerank" / str(done["version"]) / INDEX_DIRNAME, searchable=False)
    assert all(row >= 0 for row in index.rows_of(items).tolist())


class TrackStream:
    """Track calls for one shopper in a loop: what each call ended with (its event id or its error)."""

    def __init__(self, client: RecClient, user: str):
        self.client, self.user = client, user
        self.acked: list[str] = []
        self.errors: list[Exception] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.acked.append(self.client.track(self.user, str(1 + n % 1600), "view", ts=NOW - 5).event_id)
            except Exception as exc:  # noqa: BLE001 - recorded, asserted on below
                self.errors.append(exc)
                time.sleep(0.05)

    def __enter__(self) -> TrackStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def test_killing_the_master_of_a_shoppers_slot_loses_no_acknowledged_event(servers, layout, redis_cluster, store):
    user = f"failover-{uuid.uuid4().hex[:10]}"
    key = layout.user_key(user)
    master = redis_cluster.master_of(key)
    assert master is not None
    retrying = RetryPolicy(max_attempts=60, initial_backoff_s=0.1, max_backoff_s=0.5, jitter=False)
    with (
        RecClient(servers[0].grpc_url, timeout_s=60, retry=retrying) as patient,
        RecClient(servers[1].grpc_url, timeout_s=10, retry=None) as raw,
    ):
        with TrackStream(patient, user) as retried, TrackStream(raw, user + "-raw") as unretried:
            time.sleep(1.0)
            master.kill()
            _wait_until(lambda: redis_cluster.master_of(key) not in (None, master), "a replica promoted")
            promoted = redis_cluster.master_of(key)
            assert promoted is not None
            master.start()  # back as a replica of the promoted one, as a restarted pod would
            redis_cluster.wait_ok()
            time.sleep(1.0)
    assert promoted is not master and promoted.is_running()
    assert not retried.errors, retried.errors[:3]  # the SDK's retries completed every call
    assert unretried.errors, "the failover went unnoticed: no call failed while the slot had no master"
    assert all(isinstance(e, StateUnavailable) and e.retryable for e in unretried.errors), unretried.errors[:3]
    for stream in (retried, unretried):
        assert stream.acked
        shard_stream = layout.event_stream(layout.user_shard(stream.user))
        logged = {f["event_id"] for _, f in store.xrange(shard_stream) if f["user_id"] == stream.user}
        missing = set(stream.acked) - logged
        assert not missing, f"{len(missing)} of {len(stream.acked)} acknowledged events lost"
    print(
        f"failover: {len(retried.acked)} retried calls all acknowledged; "
        f"{len(unretried.errors)} unretried calls refused (retryable), {len(unretried.acked)} acknowledged"
    )
