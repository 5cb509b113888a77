"""A catalog update through model control, as docs/deploy.md prescribes for every replica: write
``rerank/2``, POST ``/v2/repository/models/rerank/load`` on a server in explicit mode, and the
new catalog is served with no failed request while it loads."""

from __future__ import annotations

import shutil
import threading
import urllib.request

import pytest

from aisle import RecClient
from aisle_export.data.catalog import read_catalog
from aisle_export.index.writing import write_index
from aisle_server.tritonserver import TritonServer

pytestmark = pytest.mark.integration


def test_new_rerank_version_loads_without_failed_requests(exported_repo, movielens_catalog, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(exported_repo, repo)
    lines = movielens_catalog.read_text(encoding="utf-8").splitlines(keepends=True)
    first, second = tmp_path / "v1.csv", tmp_path / "v2.csv"
    first.write_text("".join(lines[:41]), encoding="utf-8")  # items 1..40
    second.write_text(lines[0] + "".join(lines[41:81]), encoding="utf-8")  # items 41..80
    write_index(read_catalog(first), repo, version="1", progress=False)
    with (
        TritonServer(
            repo, model_control_mode="explicit", extra_args=["--load-model=*"], log_file=tmp_path / "triton.log"
        ) as server,
        RecClient(server.grpc_url, timeout_s=20) as client,
    ):
        old_ids = {r.item_id for r in client.recommend(query="comedy", k=40)}
        errors: list[BaseException] = []
        calls = 0
        stop = threading.Event()

        def traffic() -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    client.recommend(query="a funny movie", k=5)
                    calls += 1
                except BaseException as exc:  # noqa: BLE001 - every failure counts
                    errors.append(exc)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            write_index(read_catalog(second), repo, version="2", progress=False)
            request = urllib.request.Request(
                f"{server.http_url}/v2/repository/models/rerank/load", data=b"{}", method="POST"
            )
            with urllib.request.urlopen(request, timeout=120) as response:  # loopback
                assert response.status == 200
        finally:
            stop.set()
            worker.join()
        new_ids = {r.item_id for r in client.recommend(query="comedy", k=40)}
    assert not errors, errors[:3]
    assert calls > 0
    assert new_ids and new_ids.isdisjoint(old_ids), "version 2's catalog is served after the load"
