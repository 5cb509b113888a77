"""Integration fixtures: one exported repository, one MovieLens index, one real tritonserver per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from aisle import RecClient
from aisle_export.build.pipeline import export_repository
from aisle_export.data.catalog import read_catalog
from aisle_export.data.movielens import fetch_movielens, write_catalog_csv
from aisle_export.index.writing import write_index
from aisle_server.redis_cluster import LocalRedisCluster
from aisle_server.redis_server import RedisServer
from aisle_server.tritonserver import TritonServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def exported_repo(tmp_path_factory) -> Path:
    """ONNX towers + configs, no index yet (copied by tests that index their own catalog)."""
    repo = tmp_path_factory.mktemp("exported") / "model_repository"
    export_repository(repo)
    return repo


@pytest.fixture(scope="session")
def movielens_catalog(tmp_path_factory) -> Path:
    data = fetch_movielens(tmp_path_factory.mktemp("data"))
    return write_catalog_csv(data, data.parent / "movielens_catalog.csv")


@pytest.fixture(scope="session")
def catalog(movielens_catalog):
    return read_catalog(movielens_catalog)


@pytest.fixture(scope="session")
def repo(exported_repo, movielens_catalog, catalog, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("served") / "model_repository"
    shutil.copytree(exported_repo, repo)
    # the HNSW graph although MovieLens is below --dense-engine auto's size: every served test then
    # reads its dense candidates through the graph rerank loads (the exact path is tested beside it)
    write_index(catalog, repo, source=movielens_catalog, progress=False, dense_engine="hnsw")
    return repo


@pytest.fixture(scope="session")
def server(repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    with TritonServer(repo, log_file=log) as running:
        yield running


@pytest.fixture
def client(server):
    with RecClient(server.grpc_url, timeout_s=20) as sdk:
        yield sdk


@pytest.fixture
def raw(server):
    """A plain tritonclient, for requests the SDK would refuse to send."""
    triton = grpcclient.InferenceServerClient(server.grpc_url)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A real redis-server (AOF, ``appendfsync always``) of the module's own: state tests may kill it."""
    with RedisServer(tmp_path_factory.mktemp("state")) as running:
        yield running


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real local Redis Cluster: 3 masters with a replica each (AOF, ``appendfsync always``), one
    for the session; ``redis_cluster.url`` is a ``redis-cluster://`` state URL. A test that kills a
    node starts it again (``LocalRedisCluster.wait_ok``) before it ends."""
    with LocalRedisCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1) as running:
        yield running
