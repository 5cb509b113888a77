"""The static-embedding student: one vector per token, masked mean, L2 normalisation.

Its ONNX graph takes what every encoder takes (``input_ids``, ``attention_mask`` from the served
tokenizer) and returns ``embedding`` ``[batch, dim]``, so it serves through the same
``query_encoder`` Python-backend model (``aisle_server.encoder.OnnxEncoder``) and the same ensemble
as a transformer tower: no TensorRT, no new model, just a ``Gather`` and three reductions.

:func:`static_reference` is the same function in numpy; a unit test keeps the two equal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from aisle_server.tokenization import SETTINGS_FILE, TOKENIZER_FILE, TextTokenizer

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
OPSET = 17
EPS = 1e-12  # what the transformer towers' L2 normalisation clamps the norm to


def static_reference(table: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """``normalize(sum(table[ids] * mask) / max(sum(mask), 1e-9))`` per row, float32."""
    vectors = table[input_ids].astype(np.float64)  # [batch, seq, dim]
    weights = attention_mask.astype(np.float64)[..., None]
    pooled = (vectors * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), EPS)
    return (pooled / norms).astype(np.float32)


def static_graph(table: np.ndarray) -> onnx.ModelProto:
    """ONNX: Gather(table, input_ids) → mask-weighted mean over tokens → L2 normalisation."""
    table = np.ascontiguousarray(table, dtype=np.float32)
    dim = int(table.shape[1])
    const = lambda name, value: numpy_helper.from_array(np.asarray(value), name)
    initializers = [
        numpy_helper.from_array(table, "token_table"),
        const("axis_seq", np.array([1], dtype=np.int64)),
        const("axis_last", np.array([-1], dtype=np.int64)),
        const("min_count", np.array(1e-9, dtype=np.float32)),
        const("min_norm", np.array(EPS, dtype=np.float32)),
    ]
    nodes = [
        helper.make_node("Gather", ["token_table", "input_ids"], ["tokens"], axis=0),  # [b, s, d]
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),  # [b, s]
        helper.make_node("Unsqueeze", ["mask_f", "axis_last"], ["mask_3d"]),  # [b, s, 1]
        helper.make_node("Mul", ["tokens", "mask_3d"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis_seq"], ["summed"], keepdims=0),  # [b, d]
        helper.make_node("ReduceSum", ["mask_3d", "axis_seq"], ["count"], keepdims=0),  # [b, 1]
        helper.make_node("Max", ["count", "min_count"], ["count_safe"]),
        helper.make_node("Div", ["summed", "count_safe"], ["pooled"]),
        helper.make_node("ReduceL2", ["pooled"], ["norm"], axes=[-1], keepdims=1),  # [b, 1]; axes: attribute < opset 18
        helper.make_node("Max", ["norm", "min_norm"], ["norm_safe"]),
        helper.make_node("Div", ["pooled", "norm_safe"], [OUTPUT_NAME]),
    ]
    token_shape = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "aisle_static_student",
        [helper.make_tensor_value_info(name, TensorProto.INT64, token_shape) for name in INPUT_NAMES],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", dim])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="aisle distill")
    model.ir_version = 8  # readable by every ONNX Runtime the project supports
    onnx.checker.check_model(model, full_check=True)
    return model


def write_static_onnx(table: np.ndarray, path: Path) -> Path:
    """Save :func:`static_graph` of ``table`` to ``path``."""
    onnx.save(static_graph(table), str(path))
    return Path(path)


def table_of(path: Path) -> np.ndarray:
    """The token table of a static student's ``model.onnx`` (to re-check or re-train it)."""
    for init in onnx.load(str(path)).graph.initializer:
        if init.name == "token_table":
            return numpy_helper.to_array(init)
    raise ValueError(f"{path} is not a static student graph (no token_table)")


def install_static(student_dir: Path, target: Path, sentences: list[str]) -> dict:
    """Copy a static student's graph and tokenizer files into ``target``; check the graph against numpy.

    The check is this tower's export parity: the graph (through the server's tokenizer) against
    :func:`static_reference` of its own table on ``sentences``; a mismatch raises ``ValueError``.
    """

    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", TOKENIZER_FILE, SETTINGS_FILE):
        shutil.copyfile(Path(student_dir) / name, target / name)
    ids, mask = TextTokenizer.from_directory(target)(sentences)
    session = ort.InferenceSession(str(target / "model.onnx"), providers=["CPUExecutionProvider"])
    graph = session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})[0]
    table = table_of(target / "model.onnx")
    reference = static_reference(table, ids, mask)
    min_cosine = float(np.min(np.sum(graph.astype(np.float64) * reference, axis=1)))
    if min_cosine < 0.9999:
        raise ValueError(
            f"{target / 'model.onnx'}: the static graph disagrees with its table (min cosine {min_cosine})"
        )
    return {
        "tower": str(student_dir),
        "dim": int(table.shape[1]),
        "parity": {"n": len(sentences), "min_cosine": min_cosine},
    }
