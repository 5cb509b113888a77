"""A static student serves as the query tower through the real tritonserver, against the teacher's index.

The student here is the untrained initialisation the issue allows (the teacher's own input token
embeddings as the table): what is under test is the serving path, not the training. It goes in
the way ``aisle export --query-tower`` puts it in (pairing check, ``install_static``), the item
tower and the index stay the teacher's, and the served answers must be the offline student's.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from aisle import RecClient
from aisle_export.build.onnx_export import DEFAULT_PARITY_SENTENCES
from aisle_export.build.repository import serve_onnx_file
from aisle_export.build.static_student import install_static, write_static_onnx
from aisle_export.core.spaces import DISTILL_FILE, check_pairing, teacher_fingerprint
from aisle_export.core.towers import default_tower_path
from aisle_server.encoder import OnnxEncoder
from aisle_server.index import INDEX_DIRNAME, CatalogIndex
from aisle_server.ranking import RankingConfig, RankRequest, rank
from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE, TextTokenizer
from aisle_server.tritonserver import TritonServer

QUERIES = ["space adventure with aliens", "toy story", "romantic comedy in paris", "godfather"]


@pytest.fixture(scope="module")
def student(repo, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("static_student")
    weights = load_file(str(default_tower_path() / "model.safetensors"))
    table = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))
    write_static_onnx(table, directory / "model.onnx")
    for name in (TOKENIZER_FILE, SETTINGS_FILE):
        shutil.copyfile(repo / "query_encoder" / "1" / name, directory / name)
    record = {
        "student": "static",
        "item_tower": str(default_tower_path()),
        "item_tower_sha256": teacher_fingerprint(default_tower_path()),
        "gate": {"verdict": {"passed": True}},
    }
    (directory / DISTILL_FILE).write_text(json.dumps(record))
    return directory


@pytest.fixture(scope="module")
def static_repo(repo, student, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("static") / "model_repository"
    shutil.copytree(repo, copy)
    check_pairing(student, default_tower_path())
    install_static(student, copy / "query_encoder" / "1", list(DEFAULT_PARITY_SENTENCES))
    serve_onnx_file(copy, "query_encoder", "model.onnx")  # the export served the teacher's INT8 graph
    return copy


@pytest.fixture(scope="module")
def static_client(static_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver-static.log"
    with TritonServer(static_repo, log_file=log) as server:
        with RecClient(server.grpc_url, timeout_s=20) as client:
            yield client


def offline(student: Path, texts: list[str]) -> np.ndarray:
    return OnnxEncoder(student / "model.onnx")(*TextTokenizer.from_directory(student)(texts))


def test_the_query_tower_serves_the_static_graph_and_the_item_tower_stays_the_teachers(static_client, student, repo):
    served = static_client.embed(QUERIES, tower="query", cache=False)
    np.testing.assert_allclose(served, offline(student, QUERIES), atol=1e-5)
    teacher = OnnxEncoder(repo / "query_encoder" / "1" / "model.onnx")(
        *TextTokenizer.from_directory(repo / "query_encoder" / "1")(QUERIES)
    )
    assert np.abs(served - teacher).max() > 1e-2  # not the transformer any more
    items = static_client.embed(QUERIES, tower="item", cache=False)
    np.testing.assert_allclose(items, teacher, atol=1e-4)  # the item tower is still the teacher


def test_served_search_returns_the_offline_students_top_k_over_the_teachers_index(static_client, student, static_repo):
    index = CatalogIndex.load(static_repo / "rerank" / "1" / INDEX_DIRNAME)
    vectors = offline(student, QUERIES)
    for query, vector in zip(QUERIES, vectors):
        served = static_client.recommend(query=query, k=10, search_mode="dense", cache=False)
        request = RankRequest(vector, [], np.zeros(0), 10, time.time(), RankingConfig(search_mode="dense"), query)
        expected = rank(index, request).item_ids
        assert [r.item_id for r in served] == list(expected), query
