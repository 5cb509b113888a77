"""Catalog hot swap and rollback under load, without a restart (Triton explicit model control).

While ≥ 20 recommend/s run through the SDK with retries *off* (a failure cannot hide behind a
retry): ``aisle index --version next`` writes ``rerank/2/``, ``aisle catalog load`` swaps it in,
``aisle catalog rollback`` swaps back, and a broken version 3 is refused while the served one keeps
answering. Version 2's item ids are disjoint from version 1's (``v2-…`` vs MovieLens' numbers), so
an answer drawn from a mix of versions would be caught.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import aisle_cli
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from aisle import RecClient
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration

TARGET_RPS = 25.0
THREADS = 6
NEW_ITEM = ("v2-new-espresso", "Quantum espresso machine with milk frother", "A brand new kitchen gadget", "Kitchen")
QUERIES = ["star wars", "toy story", "a romantic comedy", "space adventure", NEW_ITEM[1].lower()]


def _aisle(*args: str) -> dict:
    return aisle_cli.ok(*args).last_json()


def _version_of(ids: list[str]) -> str:
    kinds = {"v2" if i.startswith("v2-") else "v1" if i.isdigit() else "?" for i in ids}
    return kinds.pop() if len(kinds) == 1 else "mixed:" + ",".join(sorted(kinds))


@pytest.fixture(scope="module")
def v2_catalog(catalog, tmp_path_factory) -> Path:
    """200 MovieLens titles under new ids plus one brand-new item."""
    path = tmp_path_factory.mktemp("v2") / "catalog_v2.jsonl"
    with path.open("w") as handle:
        for item_id, title, category in list(zip(catalog.item_ids, catalog.titles, catalog.categories))[:200]:
            handle.write(
                json.dumps({"item_id": f"v2-{item_id}", "title": str(title), "category": str(category)}) + "\n"
            )
        item_id, title, description, category = NEW_ITEM
        handle.write(
            json.dumps(
                {"item_id": item_id, "title": title, "description": description, "category": category, "popularity": 1}
            )
            + "\n"
        )
    return path


class PacedLoad:
    """``TARGET_RPS`` calls per second over ``THREADS`` threads; every answer recorded with its times."""

    def __init__(self, client: RecClient) -> None:
        self.client = client
        self.stop = threading.Event()
        self.records: list[dict] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.worker, args=(n,)) for n in range(THREADS)]

    def worker(self, n: int) -> None:
        period = THREADS / TARGET_RPS
        next_at = time.monotonic() + n * period / THREADS
        i = n
        while not self.stop.is_set():
            if (delay := next_at - time.monotonic()) > 0:
                self.stop.wait(delay)
            next_at += period
            sent = time.monotonic()
            record: dict = {"sent": sent, "query": QUERIES[i % len(QUERIES)]}
            try:
                recs = self.client.recommend(record["query"], k=5, cache=False)
                record["version"] = _version_of([r.item_id for r in recs])
                record["ids"] = [r.item_id for r in recs]
            except Exception as exc:  # noqa: BLE001 - recorded, asserted on below
                record["error"] = f"{type(exc).__name__}: {exc}"
            record["done"] = time.monotonic()
            with self.lock:
                self.records.append(record)
            i += THREADS

    def __enter__(self) -> PacedLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_hot_swap_and_rollback_under_load(repo, v2_catalog, tmp_path):
    served = tmp_path / "model_repository"
    shutil.copytree(repo, served, ignore=shutil.ignore_patterns("__pycache__"))
    server = TritonServer(
        served, model_control_mode="explicit", extra_args=["--load-model=*"], log_file=tmp_path / "tritonserver.log"
    )
    marks: dict[str, float] = {}
    with server, RecClient(server.grpc_url, timeout_s=30, retry=None, embed_cache_size=0) as client:
        assert _version_of([r.item_id for r in client.recommend("star wars", k=5)]) == "v1"
        with PacedLoad(client) as load:
            time.sleep(2.0)
            indexed = _aisle("index", "--catalog", str(v2_catalog), "--repo", str(served), "--version", "next")
            assert indexed["version"] == 2 and indexed["indexed"] == 201
            marks["swap_start"] = time.monotonic()
            assert 2 in _aisle("catalog", "load", "--url", server.grpc_url)["ready"]
            marks["swap_done"] = time.monotonic()
            time.sleep(3.0)

            # a broken version 3 is refused; version 2 keeps answering
            broken = served / "rerank" / "3"
            shutil.copytree(served / "rerank" / "2", broken)
            (broken / "index" / "embeddings.npy").write_bytes(b"not a numpy file")
            control = grpcclient.InferenceServerClient(server.grpc_url)
            with pytest.raises(InferenceServerException):
                control.load_model("rerank")
            marks["broken_refused"] = time.monotonic()
            shutil.rmtree(broken)
            control.close()
            time.sleep(2.0)

            marks["rollback_start"] = time.monotonic()
            rolled = _aisle("catalog", "rollback", "--repo", str(served), "--url", server.grpc_url)
            marks["rollback_done"] = time.monotonic()
            assert rolled["retired"] == [2] and rolled["ready"] == [1]
            time.sleep(3.0)
        status = _aisle("catalog", "status", "--url", server.grpc_url, "--repo", str(served))
        assert status["on_disk"] == [1]

    records = sorted(load.records, key=lambda r: r["sent"])
    duration = records[-1]["sent"] - records[0]["sent"]
    errors = [r for r in records if "error" in r]
    versions = {v: sum(r.get("version") == v for r in records) for v in {r.get("version") for r in records}}
    summary = {
        "requests": len(records),
        "seconds": round(duration, 1),
        "rps": round(len(records) / duration, 1),
        "failures": len(errors),
        "answers_by_version": versions,
        "swap_s": round(marks["swap_done"] - marks["swap_start"], 2),
        "rollback_s": round(marks["rollback_done"] - marks["rollback_start"], 2),
    }
    first_v2 = next((r for r in records if r.get("version") == "v2"), None)
    new_item_found = [r for r in records if NEW_ITEM[0] in r.get("ids", [])]
    if first_v2:
        summary["first_v2_answer_after_swap_start_s"] = round(first_v2["done"] - marks["swap_start"], 2)
    if new_item_found:
        summary["new_item_first_recommended_after_swap_start_s"] = round(
            new_item_found[0]["done"] - marks["swap_start"], 2
        )
    print("hot swap:", json.dumps(summary))

    assert not errors, errors[:5]
    assert all(r["version"] in ("v1", "v2") for r in records), [r for r in records if r["version"] not in ("v1", "v2")]
    assert summary["rps"] >= 20, summary
    # before the swap began: v1 only; sent after the swap returned and before rollback began: v2 only
    assert all(r["version"] == "v1" for r in records if r["done"] < marks["swap_start"])
    assert all(
        r["version"] == "v2" for r in records if marks["swap_done"] < r["sent"] and r["done"] < marks["rollback_start"]
    )
    # sent after the rollback returned: v1 only
    after = [r for r in records if r["sent"] > marks["rollback_done"]]
    assert after and all(r["version"] == "v1" for r in after)
    assert new_item_found and new_item_found[0]["done"] - marks["swap_start"] < 30, summary
