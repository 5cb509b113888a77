"""Precision variants of the exported encoder: each graph's form, and each against its gate on CPU.

One FP32 export and one set of variants per module (the expensive part); the gates score
held-out text and top-10 retrieval over the real MovieLens-100K catalog, as the export does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aisle_export.build.onnx_export import export_tower
from aisle_export.build.precision_gate import (
    MEAN_COSINE,
    MIN_COSINE,
    MIN_TOP10_AGREEMENT,
    Fp32Cache,
    GateReport,
    PrecisionGateError,
    TowerPair,
    check,
    evaluate,
    top_k_agreement,
)
from aisle_export.build.precision_texts import CALIBRATION_PRODUCTS, gate_texts
from aisle_export.build.quantize import (
    FP16_KEEP_FP32,
    VARIANTS,
    attention_projection_matmuls,
    ffn_down_matmuls,
    write_variant,
)
from aisle_export.data.catalog import read_catalog
from aisle_export.data.movielens import fetch_movielens, write_catalog_csv


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("encoder")
    export_tower(None, directory)
    return directory


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    data = fetch_movielens(tmp_path_factory.mktemp("data"))
    return gate_texts(read_catalog(write_catalog_csv(data, data.parent / "movies.csv")).texts())


@pytest.fixture(scope="module")
def variants(encoder_dir, texts) -> dict[str, Path]:
    return {name: write_variant(name, encoder_dir, texts.calibration) for name in VARIANTS}


@pytest.fixture(scope="module")
def cache() -> Fp32Cache:
    return Fp32Cache()


def test_calibration_and_evaluation_text_do_not_overlap(texts):
    assert not set(texts.calibration) & set(texts.evaluation)
    assert not set(texts.calibration) & set(texts.queries)
    assert set(CALIBRATION_PRODUCTS) <= set(texts.calibration)
    assert len(texts.evaluation) >= 200 and len(texts.queries) >= 80 and len(texts.catalog) == 1682


def test_top_k_agreement():
    reference = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert top_k_agreement(reference, reference) == 1.0
    assert top_k_agreement(reference, np.array([[3, 2, 1, 0], [4, 5, 8, 9]])) == 0.75


def test_failed_gate_raises_after_writing_its_figures(tmp_path):
    report = GateReport(
        "int8", 3, 0.9, 0.95, "worst", 2, 5, 0.5, MIN_COSINE, MEAN_COSINE, MIN_TOP10_AGREEMENT, False, 0.0
    )
    with pytest.raises(PrecisionGateError, match=r"min cosine 0.9000.*top-10 agreement 0.500.*'worst'"):
        check(report, save_to=tmp_path / "gate.json")
    assert json.loads((tmp_path / "gate.json").read_text())["passed"] is False


def _interface(path: Path) -> tuple:
    model = onnx.load(str(path))
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input]
    [output] = model.graph.output
    dims = [d.dim_value or d.dim_param for d in output.type.tensor_type.shape.dim]
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return inputs, (output.name, output.type.tensor_type.elem_type, dims), opset


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_keeps_the_fp32_interface(encoder_dir, variants, name):
    fp32_inputs, fp32_output, _ = _interface(encoder_dir / "model.onnx")
    inputs, output, opset = _interface(variants[name])
    assert inputs == fp32_inputs == [("input_ids", onnx.TensorProto.INT64), ("attention_mask", onnx.TensorProto.INT64)]
    assert output == fp32_output == ("embedding", onnx.TensorProto.FLOAT, ["batch", 384])
    assert opset >= 17


def test_fp16_graph_keeps_overflow_prone_ops_in_fp32(variants):
    model = onnx.load(str(variants["fp16"]))
    fp16_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(fp16_weights) > 30
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*model.graph.value_info, *model.graph.output]}
    kept = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert kept, "the tower has LayerNormalization and Softmax nodes"
    for node in kept:
        assert types.get(node.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT, node.name
    assert "LayerNormalization" in FP16_KEEP_FP32


def test_qdq_graph_is_symmetric_per_channel(encoder_dir, variants):
    model = onnx.load(str(variants["int8-qdq"]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize
    for node in dequantize:
        zero_point = inits.get(node.input[2]) if len(node.input) > 2 else None
        assert zero_point is None or (zero_point.dtype == np.int8 and not zero_point.any()), node.name
    per_channel = [
        n for n in dequantize if n.input[0] in inits and inits[n.input[1]].ndim == 1 and inits[n.input[1]].size > 1
    ]
    fp32 = onnx.load(str(encoder_dir / "model.onnx"))
    assert len(per_channel) == len(attention_projection_matmuls(fp32)) == 24  # Q, K, V, out × 6 layers


def test_dynamic_int8_graph_leaves_ffn_down_in_fp32(encoder_dir, variants):
    model = onnx.load(str(variants["int8"]))
    ops = [n.op_type for n in model.graph.node]
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    fp32_down = set(ffn_down_matmuls(onnx.load(str(encoder_dir / "model.onnx"))))
    assert len(fp32_down) == 6 and fp32_down <= {n.name for n in model.graph.node if n.op_type == "MatMul"}


@pytest.mark.parametrize("name", ["fp32", *sorted(VARIANTS)])
def test_variant_passes_its_gate_on_cpu(encoder_dir, variants, texts, cache, name, tmp_path):
    path = encoder_dir / "model.onnx" if name == "fp32" else variants[name]
    pair = TowerPair(fp32=encoder_dir / "model.onnx", variant=path, tokenizer_dir=encoder_dir)
    report = check(evaluate(name, pair, pair, texts, cache), save_to=tmp_path / "gate.json")
    assert report.passed and report.min_cosine >= MIN_COSINE and report.mean_cosine >= MEAN_COSINE
    assert report.top10_agreement >= MIN_TOP10_AGREEMENT
    if name == "fp32":
        assert report.min_cosine > 0.999999 and report.top10_agreement == 1.0
        assert report.batch_top10_identical == 1.0  # FP32's vectors do not depend on the batch


def test_unknown_variant_and_missing_source(tmp_path):
    with pytest.raises(ValueError, match="unknown precision variant"):
        write_variant("int4", tmp_path)
    with pytest.raises(FileNotFoundError, match="export the FP32 graph first"):
        write_variant("int8", tmp_path)


def test_the_query_gate_judges_int8_queries_against_the_fp32_index(encoder_dir, variants, texts, cache):
    """As served: the query side INT8, the item side (the index) FP32; only the query side is scored."""
    query = TowerPair(fp32=encoder_dir / "model.onnx", variant=variants["int8"], tokenizer_dir=encoder_dir)
    items = TowerPair(fp32=encoder_dir / "model.onnx", variant=encoder_dir / "model.onnx", tokenizer_dir=encoder_dir)
    both_sides = evaluate("int8", query, query, texts, cache)
    query_side = evaluate("int8 query tower", query, items, texts, cache)
    assert query_side.passed and query_side.n_texts == both_sides.n_texts
    assert query_side.min_cosine == pytest.approx(both_sides.min_cosine)  # the same texts, the same graph
    assert query_side.top10_agreement != both_sides.top10_agreement  # the index side is FP32 here
    # why FP32 stays the default: one activation scale per batch makes a query's top-10 depend on
    # the queries batched with it
    assert query_side.batch_top10_identical < 0.9 and query_side.batch_top10_overlap < 1.0


@pytest.fixture(scope="module")
def gate_catalog(tmp_path_factory) -> Path:
    data = fetch_movielens(tmp_path_factory.mktemp("gate-data"))
    return write_catalog_csv(data, data.parent / "movies.csv")


def _repo(tmp_path: Path, encoder_dir: Path) -> Path:
    from aisle_export.build.repository import write_configs

    for model in ("query_encoder", "item_encoder"):
        (tmp_path / model / "1").mkdir(parents=True)
        for name in ("model.onnx", "tokenizer.json", "tokenizer_settings.json"):
            (tmp_path / model / "1" / name).write_bytes((encoder_dir / name).read_bytes())
    write_configs(tmp_path)
    return tmp_path


def test_query_precision_auto_serves_the_int8_query_graph_where_its_gate_passes(encoder_dir, gate_catalog, tmp_path):
    from aisle_export.build.pipeline import QUERY_GATE_FILE, GateInputs, choose_query_graph
    from aisle_export.build.repository import served_onnx_file

    repo = _repo(tmp_path / "auto", encoder_dir)
    chosen = choose_query_graph(repo, "auto", GateInputs(repo, gate_catalog))
    assert chosen["served"] == "model.int8.onnx" and chosen["gate"]["passed"]
    assert served_onnx_file(repo, "query_encoder") == repo / "query_encoder" / "1" / "model.int8.onnx"
    assert served_onnx_file(repo, "item_encoder") == repo / "item_encoder" / "1" / "model.onnx"  # the index's side
    assert json.loads((repo / QUERY_GATE_FILE).read_text())["top10_agreement"] >= MIN_TOP10_AGREEMENT

    repo = _repo(tmp_path / "fp32", encoder_dir)
    assert choose_query_graph(repo, "fp32", GateInputs(repo, gate_catalog)) == {
        "served": "model.onnx",
        "why": "the default, batch-invariant",
    }
    assert served_onnx_file(repo, "query_encoder").name == "model.onnx"
    assert not (repo / "query_encoder" / "1" / "model.int8.onnx").exists()


def test_a_failed_query_gate_serves_fp32_or_fails_the_export(encoder_dir, gate_catalog, tmp_path, monkeypatch):
    from aisle_export.build import precision_gate
    from aisle_export.build.pipeline import QUERY_GATE_FILE, GateInputs, choose_query_graph
    from aisle_export.build.repository import served_onnx_file

    monkeypatch.setattr(precision_gate, "MIN_COSINE", 1.01)  # no INT8 graph can pass this
    repo = _repo(tmp_path / "auto", encoder_dir)
    chosen = choose_query_graph(repo, "auto", GateInputs(repo, gate_catalog))
    assert chosen["served"] == "model.onnx" and "failed" in chosen["why"] and not chosen["gate"]["passed"]
    assert served_onnx_file(repo, "query_encoder").name == "model.onnx"
    assert json.loads((repo / QUERY_GATE_FILE).read_text())["passed"] is False

    repo = _repo(tmp_path / "int8", encoder_dir)
    with pytest.raises(PrecisionGateError, match="min cosine"):
        choose_query_graph(repo, "int8", GateInputs(repo, gate_catalog))
    assert json.loads((repo / QUERY_GATE_FILE).read_text())["passed"] is False


def test_a_static_student_query_tower_is_served_as_it_is(encoder_dir, gate_catalog, tmp_path):
    from aisle_export.build.pipeline import GateInputs, choose_query_graph
    from aisle_export.build.repository import served_onnx_file

    repo = _repo(tmp_path, encoder_dir)
    chosen = choose_query_graph(repo, "auto", GateInputs(repo, gate_catalog), static=True)
    assert chosen == {"served": "model.onnx", "why": "a static student: a lookup table, nothing to quantize"}
    assert served_onnx_file(repo, "query_encoder").name == "model.onnx"
    with pytest.raises(ValueError, match="static student"):
        choose_query_graph(repo, "int8", GateInputs(repo, gate_catalog), static=True)
    with pytest.raises(ValueError, match="query_precision must be one of"):
        choose_query_graph(repo, "fp16", GateInputs(repo, gate_catalog))
