"""The exported encoder graph: interface Triton relies on, parity with sentence-transformers, padding/batching invariance."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aisle_export.build.onnx_export import (
    DEFAULT_PARITY_SENTENCES,
    PARITY_FILE,
    ExportResult,
    ParityError,
    check_parity,
    export_tower,
)
from aisle_export.core.towers import TowerError, load_tower, resolve_tower
from aisle_server.tokenization import TextTokenizer, TokenizerSettings

ATOL = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    return export_tower(None, tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def session(exported: ExportResult) -> ort.InferenceSession:
    return ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])


def embed(session: ort.InferenceSession, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    return session.run(["embedding"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]


def test_graph_interface(exported: ExportResult) -> None:
    model = onnx.load(str(exported.onnx_path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17

    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for tensor in inputs.values():
        assert tensor.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "sequence"]

    [output] = model.graph.output
    assert output.name == "embedding"
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    batch, dim = output.type.tensor_type.shape.dim
    assert batch.dim_param == "batch"
    assert dim.dim_value == exported.tower.dim == 384


def test_export_writes_tokenizer_files(exported: ExportResult) -> None:
    out_dir = exported.onnx_path.parent
    assert (out_dir / "tokenizer.json").read_bytes() == (exported.tower.path / "tokenizer.json").read_bytes()
    assert TokenizerSettings.load(out_dir) == TokenizerSettings(max_length=256, pad_to_multiple_of=16)


def test_parity_with_sentence_transformers(exported: ExportResult) -> None:
    report = exported.parity
    assert report.n == len(DEFAULT_PARITY_SENTENCES)
    assert report.passed and report.min_cosine >= 0.9999
    assert report.max_abs_diff < 1e-4
    assert json.loads((exported.onnx_path.parent / PARITY_FILE).read_text())["min_cosine"] == report.min_cosine


def test_parity_sentences_exercise_truncation() -> None:
    tower = load_tower(None)
    unbounded = TextTokenizer(
        tower.path / "tokenizer.json", TokenizerSettings(max_length=100_000, pad_to_multiple_of=1)
    )
    longest = max(unbounded([s])[0].shape[1] for s in DEFAULT_PARITY_SENTENCES)
    assert longest > tower.max_length
    assert any(not s.isascii() for s in DEFAULT_PARITY_SENTENCES)


def test_batch_independence(exported: ExportResult, session: ort.InferenceSession) -> None:
    tokenizer = TextTokenizer.from_directory(exported.onnx_path.parent)
    sentence = "crème brûlée ramekins"
    batch = [DEFAULT_PARITY_SENTENCES[-1], sentence, "usb-c charger 65w"]  # padded to the long one's length
    alone = embed(session, *tokenizer([sentence]))[0]
    together = embed(session, *tokenizer(batch))[1]
    np.testing.assert_allclose(together, alone, atol=ATOL)


def test_padding_does_not_change_embedding(exported: ExportResult, session: ort.InferenceSession) -> None:
    unpadded = TextTokenizer(exported.onnx_path.parent / "tokenizer.json", TokenizerSettings(pad_to_multiple_of=1))
    input_ids, attention_mask = unpadded(["red running shoes size 10"])
    extra = 64 - input_ids.shape[1]
    padded_ids = np.pad(input_ids, ((0, 0), (0, extra)))
    padded_mask = np.pad(attention_mask, ((0, 0), (0, extra)))
    np.testing.assert_allclose(
        embed(session, padded_ids, padded_mask), embed(session, input_ids, attention_mask), atol=ATOL
    )


def test_embeddings_are_unit_norm(exported: ExportResult, session: ort.InferenceSession) -> None:
    tokenizer = TextTokenizer.from_directory(exported.onnx_path.parent)
    embeddings = embed(session, *tokenizer(list(DEFAULT_PARITY_SENTENCES[:16])))
    assert embeddings.shape == (16, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=ATOL)


def test_check_parity_raises_when_threshold_unreachable(exported: ExportResult, tmp_path: Path) -> None:
    # A copy, so the failing run's parity.json does not overwrite the shared export's.
    out_dir = shutil.copytree(exported.onnx_path.parent, tmp_path / "copy")
    with pytest.raises(ParityError, match=r"min cosine .* < threshold 1\.01.*worst sentence"):
        check_parity(None, out_dir, ["Toy Story (1995)", "yoga mat"], threshold=1.01)
    assert json.loads((out_dir / PARITY_FILE).read_text())["passed"] is False


def test_resolve_tower_rejects_missing_path() -> None:
    with pytest.raises(TowerError, match="/nonexistent"):
        resolve_tower("/nonexistent")


def test_resolve_tower_rejects_non_model_directory(tmp_path: Path) -> None:
    with pytest.raises(TowerError, match=re.escape(str(tmp_path))):
        resolve_tower(tmp_path)


def test_default_tower() -> None:
    tower = load_tower(None)
    assert tower.path == resolve_tower(None)
    assert (tower.max_length, tower.dim) == (256, 384)
