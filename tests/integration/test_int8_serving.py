"""The CPU INT8 encoders serve through the real tritonserver: both towers with ``--model-config-name int8``,
the query tower alone with ``aisle export --query-precision int8``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from aisle import RecClient
from aisle_export.build.pipeline import GateInputs, choose_query_graph
from aisle_export.build.precision_texts import CALIBRATION_PRODUCTS
from aisle_export.build.quantize import VARIANTS, write_variant
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import TextTokenizer
from aisle_server.tritonserver import TritonServer

TEXTS = ["space adventure with aliens", "Toy Story (1995)", "organic olive oil 1l"]


@pytest.fixture(scope="module")
def int8_repo(repo, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("int8") / "model_repository"
    shutil.copytree(repo, copy)
    for encoder in ("query_encoder", "item_encoder"):
        write_variant("int8", copy / encoder / "1", CALIBRATION_PRODUCTS)
    return copy


@pytest.fixture(scope="module")
def int8_client(int8_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver-int8.log"
    with TritonServer(int8_repo, model_config_name="int8", log_file=log) as server:
        with RecClient(server.grpc_url, timeout_s=20) as client:
            yield client


def local(directory: Path, filename: str) -> np.ndarray:
    return OnnxEncoder(directory / filename)(*TextTokenizer.from_directory(directory)(TEXTS))


@pytest.mark.parametrize("tower", ["query", "item"])
def test_int8_config_serves_the_int8_graph(int8_client, int8_repo, tower):
    directory = int8_repo / f"{tower}_encoder" / "1"
    served = int8_client.embed(TEXTS, tower=tower, cache=False)
    int8, fp32 = local(directory, VARIANTS["int8"].filename), local(directory, "model.onnx")
    np.testing.assert_allclose(served, int8, atol=1e-4)  # it is the INT8 graph ...
    assert np.abs(served - fp32).max() > 1e-3  # ... not the FP32 one
    assert (np.sum(served * fp32, axis=1) >= 0.98).all()  # and faithful to it


@pytest.fixture(scope="module")
def query_int8_repo(repo, movielens_catalog, tmp_path_factory) -> Path:
    """``aisle export --query-precision int8`` on the exported repository: its gate, then its config."""
    copy = tmp_path_factory.mktemp("query-int8") / "model_repository"
    shutil.copytree(repo, copy)
    chosen = choose_query_graph(copy, "int8", GateInputs(copy, movielens_catalog))
    assert chosen["served"] == "model.int8.onnx" and chosen["gate"]["passed"]
    return copy


def test_query_precision_int8_serves_int8_queries_over_the_fp32_index(query_int8_repo, tmp_path_factory):
    query_dir, item_dir = query_int8_repo / "query_encoder" / "1", query_int8_repo / "item_encoder" / "1"
    log = tmp_path_factory.mktemp("logs") / "tritonserver-query-int8.log"
    with TritonServer(query_int8_repo, log_file=log) as server, RecClient(server.grpc_url, timeout_s=20) as client:
        for text in TEXTS:  # one text a request: a batch's INT8 vectors depend on its other rows
            [served] = client.embed([text], tower="query", cache=False)
            [int8] = OnnxEncoder(query_dir / VARIANTS["int8"].filename)(
                *TextTokenizer.from_directory(query_dir)([text])
            )
            np.testing.assert_allclose(served, int8, atol=1e-4)
        items = client.embed(TEXTS, tower="item", cache=False)
        np.testing.assert_allclose(items, local(item_dir, "model.onnx"), atol=1e-5)  # the index's side: FP32
        recs = client.recommend(query="space adventure with aliens", k=10)
        assert len(recs) == 10 and all(r.item_id for r in recs)


def test_recommend_through_int8(int8_client):
    recs = int8_client.recommend(query="space adventure with aliens", k=10)
    assert len(recs) == 10 and all(r.item_id for r in recs)
