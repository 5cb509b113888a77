"""``aisle index --server``: embeddings from a running deployment equal the offline path, and a
run killed with SIGKILL midway resumes from its checkpoint instead of starting over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aisle_export.core.encoding import embed_texts
from aisle_export.data.catalog import read_catalog
from aisle_export.index.remote import MANIFEST, embed_remote
from aisle_server.index import INDEX_DIRNAME, CatalogIndex

pytestmark = pytest.mark.integration

ITEMS = 480
CHUNK = 16


@pytest.fixture(scope="module")
def small_catalog(movielens_catalog, tmp_path_factory) -> Path:
    lines = movielens_catalog.read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path_factory.mktemp("remote") / "small.csv"
    path.write_text("".join(lines[: ITEMS + 1]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def offline(small_catalog, exported_repo) -> np.ndarray:
    return embed_texts(read_catalog(small_catalog).texts(), exported_repo / "item_encoder" / "1", progress=False)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def test_remote_embeddings_match_offline(server, small_catalog, offline, tmp_path):
    texts = read_catalog(small_catalog).texts()
    remote = embed_remote(texts, server.grpc_url, tmp_path / "ckpt", chunk_size=100, concurrency=4, progress=False)
    assert remote.shape == offline.shape
    assert min_cosine(remote, offline) >= 0.9999
    # a second call finds every chunk done and sends nothing
    again = embed_remote(
        texts, "127.0.0.1:1", tmp_path / "ckpt", chunk_size=100, progress=False, client_options={"wait_ready_s": None}
    )
    np.testing.assert_array_equal(np.asarray(again), np.asarray(remote))


def test_checkpoint_of_another_catalog_is_discarded(server, tmp_path):
    first = embed_remote(["red shoes", "blue hat"], server.grpc_url, tmp_path, chunk_size=1, progress=False)
    second = embed_remote(["green scarf", "blue hat"], server.grpc_url, tmp_path, chunk_size=1, progress=False)
    assert not np.allclose(first[0], second[0])
    np.testing.assert_allclose(first[1], second[1], atol=1e-6)


def test_cli_index_server_resumes_after_sigkill(server, exported_repo, small_catalog, offline, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(exported_repo, repo)
    checkpoint = tmp_path / "ckpt"
    cmd = [
        sys.executable,
        "-m",
        "aisle_export.cli",
        "index",
        "--catalog",
        str(small_catalog),
        "--repo",
        str(repo),
        "--server",
        server.grpc_url,
        "--chunk-size",
        str(CHUNK),
        "--concurrency",
        "1",
        "--checkpoint",
        str(checkpoint),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    chunks = -(-ITEMS // CHUNK)

    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(checkpoint.glob("chunk_*.npy"))) < 3:
        assert first.poll() is None, first.stdout.read().decode()
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    kept = sorted(checkpoint.glob("chunk_*.npy"))
    assert 3 <= len(kept) < chunks, f"killed too late: {len(kept)} of {chunks} chunks done"
    assert not (repo / "rerank" / "1" / INDEX_DIRNAME).exists(), "a killed run must leave no index behind"

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming: {len(kept)}/{chunks} chunks" in second.stdout
    assert not checkpoint.exists(), "the checkpoint is removed once the index is written"

    index = CatalogIndex.load(repo / "rerank" / "1" / INDEX_DIRNAME)
    assert len(index) == ITEMS
    assert index.manifest["embedded_by"] == server.grpc_url
    assert min_cosine(np.asarray(index.embeddings), offline) >= 0.9999


def test_resume_skips_finished_chunks(server, tmp_path):
    texts = [f"item number {i}" for i in range(10)]
    embed_remote(texts, server.grpc_url, tmp_path, chunk_size=4, progress=False)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["dim"] == 384 and manifest["count"] == 10
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("chunk_*.npy")}
    (tmp_path / "chunk_000001.npy").unlink()  # as if killed before chunk 1 was saved
    embed_remote(texts, server.grpc_url, tmp_path, chunk_size=4, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("chunk_*.npy")}
    assert after["chunk_000000.npy"] == before["chunk_000000.npy"]
    assert after["chunk_000002.npy"] == before["chunk_000002.npy"]
    assert "chunk_000001.npy" in after
