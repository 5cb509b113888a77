"""Live catalog changes and shopper state on a real tritonserver whose ``rerank`` runs 2 instances.

One redis-server (AOF, ``appendfsync always``) and one tritonserver (explicit model control, so
``aisle catalog compact --load`` can hot-swap) over a copy of the session repository with
``rerank``'s instance count set to 2. Each check reads through bursts of concurrent calls, so both
instances answer, and waits for a change with a generous liveness bound (the visibility delay
itself is measured by ``python -m perf.bench_realtime``, not asserted here).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aisle_cli
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aisle import InvalidRequest, RecClient
from aisle_server.live_catalog import CHANGES_KEY
from aisle_server.state import connect
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

NOW = time.time()
LIVENESS_S = 15.0  # a change not visible by then is lost, not slow
BURST = 8  # concurrent calls per read: more than one instance answers


@pytest.fixture(scope="module")
def served(repo, tmp_path_factory) -> Path:
    served = tmp_path_factory.mktemp("live") / "model_repository"
    shutil.copytree(repo, served, ignore=shutil.ignore_patterns("__pycache__"))
    config = served / "rerank" / "config.pbtxt"
    text = config.read_text()
    assert "count: 1\n" in text
    config.write_text(text.replace("count: 1\n", "count: 2\n", 1))
    return served


@pytest.fixture(scope="module")
def live_server(served, redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver-live.log"
    server = TritonServer(
        served,
        log_file=log,
        state_url=redis_server.url,
        model_control_mode="explicit",
        extra_args=["--load-model=*"],
    )
    with server as running:
        yield running


@pytest.fixture
def client(live_server):
    with RecClient(live_server.grpc_url, timeout_s=30, retry=None, embed_cache_size=0) as sdk:
        yield sdk


def _burst(client: RecClient, **kwargs) -> list[list[str]]:
    """``BURST`` identical recommend calls at once (both instances answer some); their item ids."""
    with ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(lambda _: client.recommend(cache=False, **kwargs), range(BURST)))
    return [[r.item_id for r in recs] for recs in answers]


def _wait_until(check, what: str) -> float:
    """Seconds until ``check()`` held for a whole burst; fails after ``LIVENESS_S``."""
    start = time.monotonic()
    while time.monotonic() - start < LIVENESS_S:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{what}: not visible after {LIVENESS_S} s")


def _new_id() -> str:
    return f"live-{uuid.uuid4().hex[:10]}"


def test_an_inserted_item_is_found_by_search_on_every_instance(client, live_server):
    item = _new_id()
    title = f"Zorblax quantum espresso machine {item}"
    assert all(item not in ids for ids in _burst(client, query=title, k=5))
    changed = client.update_items(
        [{"item_id": item, "title": title, "description": "Milk frother", "category": "Kitchen"}]
    )
    assert [c.item_id for c in changed] == [item] and changed[0].change_id
    delay = _wait_until(lambda: all(ids[0] == item for ids in _burst(client, query=title, k=5)), "insert")
    print(f"insert visible on every instance after {delay:.2f} s")
    lexical = client.recommend(title, k=5, search_mode="lexical", cache=False)
    assert lexical[0].item_id == item  # the lexical half finds a live item before any BM25 rebuild
    # each rerank instance applied the change itself: two instances, each with the item in its overlay
    applied = _series(live_server, "aisle_catalog_changes_applied_total")
    assert len(applied) == 2 and all(value >= 1 for value in applied.values()), applied
    assert all(value >= 1 for value in _series(live_server, "aisle_catalog_overlay_items").values())


def _series(server, name: str) -> dict[str, float]:
    """``{instance: value}`` of the metric ``name`` on the server's metrics endpoint."""
    with urllib.request.urlopen(f"http://{server.host}:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            instance = dict(part.split("=", 1) for part in labels.split(","))["instance"].strip('"')
            found[instance] = float(value)
    return found


def test_out_of_stock_and_hidden_items_disappear_and_come_back(client):
    query = "star wars"
    top = _burst(client, query=query, k=5)[0][0]
    for fields, undo in (({"in_stock": False}, {"in_stock": True}), ({"hidden": True}, {"hidden": False})):
        client.update_items([{"item_id": top, **fields}])
        _wait_until(lambda: all(top not in ids for ids in _burst(client, query=query, k=5)), str(fields))
        client.update_items([{"item_id": top, **undo}])
        _wait_until(lambda: all(ids[0] == top for ids in _burst(client, query=query, k=5)), str(undo))


def test_a_field_change_applies_to_filters(client):
    query = "toy story"
    top = _burst(client, query=query, k=3)[0][0]
    client.update_items([{"item_id": top, "category": "Live Test Category"}])
    _wait_until(
        lambda: all(ids == [top] for ids in _burst(client, query=query, k=1, allow_categories=["Live Test Category"])),
        "category change",
    )


def test_a_click_changes_the_next_recommend_on_any_instance(client):
    for _ in range(5):  # alternate writes and bursts of reads: every answer after a click must show it
        user = f"shopper-{uuid.uuid4().hex[:12]}"
        item = str(np.random.default_rng().integers(1, 1600))
        client.track(user, item, "click", ts=NOW - 30)
        expected = [
            r.item_id for r in client.recommend(history=[(item, NOW - 30, "click")], k=10, now=NOW, cache=False)
        ]
        assert all(ids == expected for ids in _burst(client, user_id=user, k=10, now=NOW))


def test_bad_changes_are_refused_by_field_and_the_server_keeps_serving(client, live_server):
    with pytest.raises(InvalidRequest, match="colour"):
        client.update_items([{"item_id": "1", "colour": "red"}])
    with pytest.raises(InvalidRequest, match="popularity"):
        client.update_items([{"item_id": "1", "popularity": float("nan")}])
    with pytest.raises(InvalidRequest, match="TITLE"):  # a new item without a title: the server's check
        client.update_items([{"item_id": _new_id(), "in_stock": True}])
    with pytest.raises(InvalidRequest, match="ITEM_ID"):
        client.update_items([{"item_id": _new_id(), "op": "delete"}])
    raw = grpcclient.InferenceServerClient(live_server.grpc_url)
    try:
        for fields in ('{"popularity": NaN}', '{"colour": 1}', "[1]", "not json", '{"in_stock": "yes"}'):
            inputs = []
            for name, value in (("ITEM_ID", "1"), ("OP", "upsert"), ("FIELDS", fields)):
                tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[value.encode()]], dtype=object))
                inputs.append(tensor)
            with pytest.raises(InferenceServerException) as caught:
                raw.infer("catalog", inputs)
            assert (
                "INVALID_ARG" in str(caught.value.status())
                or "FIELDS" in str(caught.value)
                or "POPULARITY" in str(caught.value)
            ), caught.value
    finally:
        raw.close()
    assert client.recommend("star wars", k=3, cache=False)


class PacedSearch:
    """About 25 searches per second over 8 threads (each pausing 0.3 s between calls), every answer recorded."""

    def __init__(self, client: RecClient, queries: list[str]):
        self.client, self.queries = client, queries
        self.stop = threading.Event()
        self.records: list[dict] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker, args=(n,)) for n in range(8)]

    def worker(self, n: int) -> None:
        i = n
        while not self.stop.wait(0.3):
            query = self.queries[i % len(self.queries)]
            record: dict = {"query": query, "sent": time.monotonic()}
            try:
                record["ids"] = [r.item_id for r in self.client.recommend(query, k=5, cache=False)]
            except Exception as exc:  # noqa: BLE001 - recorded, asserted on below
                record["error"] = f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.records.append(record)
            i += 8

    def __enter__(self) -> PacedSearch:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def _aisle(*args: str) -> dict:
    return aisle_cli.ok(*args).last_json()


def test_compaction_under_load_loses_no_request_and_no_update(client, live_server, redis_server, served, tmp_path):
    doomed_query = "a close shave"  # MovieLens' "Close Shave, A (1995)"
    doomed = _burst(client, query=doomed_query, k=1)[0][0]
    client.update_items([{"item_id": doomed, "op": "delete"}])
    _wait_until(lambda: all(doomed not in ids for ids in _burst(client, query=doomed_query, k=10)), "delete")
    before = [_new_id() for _ in range(3)]
    client.update_items([{"item_id": i, "title": f"Flumbergast gadget {i}"} for i in before])
    during: list[str] = []
    with PacedSearch(client, [doomed_query, "star wars", *[f"Flumbergast gadget {i}" for i in before]]) as load:
        time.sleep(1.0)
        writer_stop = threading.Event()

        def write_during() -> None:
            while not writer_stop.wait(0.1):
                item = _new_id()
                client.update_items([{"item_id": item, "title": f"Snorkwidget device {item}"}])
                during.append(item)  # acknowledged

        writer = threading.Thread(target=write_during)
        writer.start()
        compaction_began = time.monotonic()
        compacted = _aisle(
            "catalog",
            "compact",
            "--repo",
            str(served),
            "--state",
            redis_server.url,
            "--load",
            "--url",
            live_server.grpc_url,
        )
        compaction_ended = time.monotonic()
        time.sleep(1.0)
        writer_stop.set()
        writer.join(timeout=60)
        time.sleep(1.0)
    assert compacted["compacted"] >= 4 and compacted["version"] == compacted["from_version"] + 1, compacted
    assert compacted["version"] in compacted["ready"], compacted
    manifest = json.loads((served / "rerank" / str(compacted["version"]) / "index" / "manifest.json").read_text())
    assert manifest["overlay_through"] == compacted["overlay_through"]

    errors = [r for r in load.records if "error" in r]
    assert not errors, errors[:5]
    # the load ran through the swap: requests were sent before, during and after the compaction
    # (counted, not timed: a rate would measure the machine, not the swap)
    phases = [
        sum(1 for r in load.records if when(r["sent"]))
        for when in (
            lambda t: t < compaction_began,
            lambda t: compaction_began <= t <= compaction_ended,
            lambda t: t > compaction_ended,
        )
    ]
    assert all(phases), phases
    assert all(doomed not in r["ids"] for r in load.records)  # before, during and after the swap
    assert during, "no update was acknowledged during the compaction"
    for item in [*before, *during]:  # every acknowledged change is served by the new version
        title = f"Flumbergast gadget {item}" if item in before else f"Snorkwidget device {item}"
        _wait_until(lambda: all(ids[0] == item for ids in _burst(client, query=title, k=3)), item)  # noqa: B023
    assert all(doomed not in ids for ids in _burst(client, query=doomed_query, k=10))
    # a second compaction trims what the first one's base holds, and the log keeps the rest
    redis = connect(redis_server.url)
    logged_before = redis.xlen(CHANGES_KEY)
    again = _aisle("catalog", "compact", "--repo", str(served), "--state", redis_server.url)
    if again["compacted"]:
        assert again["trimmed"] > 0 and redis.xlen(CHANGES_KEY) < logged_before


def test_the_store_down_keeps_recommend_answering_and_changes_survive_a_restart(client, redis_server):
    item = _new_id()
    title = f"Glorptastic widget {item}"
    client.update_items([{"item_id": item, "title": title}])
    _wait_until(lambda: all(ids[0] == item for ids in _burst(client, query=title, k=3)), "insert")
    redis_server.stop()
    try:
        for _ in range(5):  # served from the last applied catalog; nothing fails
            assert all(ids[0] == item for ids in _burst(client, query=title, k=3))
            time.sleep(0.2)
    finally:
        redis_server.start()
    assert connect(redis_server.url).xlen(CHANGES_KEY) > 0  # the acknowledged changes are on disk (AOF)
    after = _new_id()
    client.update_items([{"item_id": after, "title": f"Glorptastic widget {after}"}])
    _wait_until(
        lambda: all(ids[0] == after for ids in _burst(client, query=f"Glorptastic widget {after}", k=3)),
        "after restart",
    )
