"""Write reduced-precision copies of an exported encoder graph (``model.onnx``) beside it.

Three variants, each a plain ONNX file with the FP32 graph's interface (int64 ``input_ids`` /
``attention_mask`` → float32 ``embedding``), so every consumer — the Python-backend encoder, Triton's
ONNX Runtime backend, the TensorRT builder — takes any of them unchanged:

``int8`` → ``model.int8.onnx``
    ONNX Runtime *dynamic* INT8 for CPU serving: weights quantized once per output channel,
    activations per batch at run time. Per-channel matters: one scale per weight matrix is set by
    its widest output channel and leaves the narrow channels few of the INT8 levels; on this tower
    per-tensor scales moved the embeddings well below the precision gate's minimum cosine
    (:mod:`.precision_gate`), per-channel scales pass it. Only ``MatMul`` is quantized, and not the
    feed-forward down-projections (see :func:`quantize_int8_dynamic`); the embedding ``Gather``
    stays FP32 (quantizing it made the graph slower on CPU and no more accurate).
``fp16`` → ``model.fp16.onnx``
    FP16 weights and activations for TensorRT, with LayerNorm, Softmax, the pooling reductions,
    the L2 norm and other overflow-prone ops kept in FP32 (:data:`FP16_KEEP_FP32`) and FP32
    inputs/outputs, so the graph runs strongly typed without a precision flag.
``int8-qdq`` → ``model.int8.qdq.onnx``
    Static INT8 in QuantizeLinear/DequantizeLinear form, the input TensorRT ≥ 10 expects for INT8
    (it dropped implicit calibration): symmetric activations and per-channel symmetric weights,
    activation ranges calibrated on real text. Only the attention projections (Q, K, V and the
    attention output — the square ``hidden × hidden`` weights) are quantized: quantizing the
    feed-forward pair too drove the min cosine far below the precision gate's (the GELU output that
    feeds the second FFN matrix has outliers a per-tensor symmetric scale cannot hold; percentile
    calibration did not fix it), while the attention projections alone pass it. Q/DQ runs *slower*
    than FP32 on ONNX Runtime's CPU provider; it pays off only inside TensorRT.

The figures behind these choices are on docs/results.md: the shipped variants' gate results under
"Encoders", the rejected variants under "Design measurements behind code decisions".

Everything uses ``onnxruntime.quantization`` and ``onnxruntime.transformers.float16``, not
hand-written graph surgery.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from aisle_server.tokenization import TextTokenizer

MODEL_FILE = "model.onnx"
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class Variant:
    """One precision variant: its name on the command line, its file, and what it is for."""

    name: str
    filename: str
    purpose: str


VARIANTS: dict[str, Variant] = {
    "int8": Variant("int8", "model.int8.onnx", "CPU serving (ONNX Runtime dynamic INT8, per-channel)"),
    "fp16": Variant("fp16", "model.fp16.onnx", "TensorRT FP16 (strongly typed), FP32 islands for overflow-prone ops"),
    "int8-qdq": Variant("int8-qdq", "model.int8.qdq.onnx", "TensorRT INT8 (strongly typed) from Q/DQ, calibrated"),
}

#: Ops kept in FP32 inside the FP16 graph. LayerNormalization/Softmax/reductions accumulate or
#: exponentiate (overflow past 65504 or lose the small terms); Pow/Sqrt/Div/Erf are the L2 norm,
#: the mean-pooling division and GELU; Range/CumSum/Min/Max are ORT's defaults (index maths).
FP16_KEEP_FP32: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Div",
    "Erf",
    "Exp",
    "Clip",
    "Range",
    "CumSum",
    "Min",
    "Max",
)


def _say(message: str, started: float) -> None:
    print(f"[aisle export] {message} ({time.perf_counter() - started:.1f}s)", flush=True)


def quantize_int8_dynamic(source: Path, target: Path) -> Path:
    """ONNX Runtime dynamic INT8 of the MatMuls, per-channel symmetric weights (CPU serving).

    The feed-forward down-projections (:func:`ffn_down_matmuls`) stay FP32: with them quantized
    the vectors barely move (min cosine within the gate) but top-10 retrieval over MovieLens falls
    below the gate's agreement with FP32 — the GELU output they read has outliers that one
    per-batch activation scale cannot hold. Keeping them FP32 costs part of the speed-up and brings
    the agreement back over the gate (figures: docs/results.md, "Encoders" and "Design measurements
    behind code decisions").
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=ffn_down_matmuls(onnx.load(str(source))),
    )
    return target


def convert_fp16(source: Path, target: Path) -> Path:
    """FP16 graph with FP32 inputs/outputs and FP32 islands (:data:`FP16_KEEP_FP32`), opset unchanged (≥ 17)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, op_block_list=list(FP16_KEEP_FP32))
    # the converter appends its Cast nodes at the end of the node list; ONNX (and TensorRT's
    # parser) require topological order, which ORT's own graph helper restores
    wrapped = OnnxModel(model)
    wrapped.topological_sort()
    model = wrapped.model
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def _constant_matmul_weights(model: onnx.ModelProto) -> dict[str, list[int]]:
    """MatMul node name → dims of its one constant 2-D weight (MatMuls of two activations left out)."""
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        dims = [weights[name] for name in node.input if name in weights] if node.op_type == "MatMul" else []
        if len(dims) == 1 and len(dims[0]) == 2:
            found[node.name] = dims[0]
    return found


def ffn_down_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the feed-forward down-projections: constant weights taller than wide (4·hidden × hidden)."""
    return [name for name, (rows, cols) in _constant_matmul_weights(model).items() if rows > cols]


def attention_projection_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMuls with a square constant weight (Q, K, V and attention-output projections).

    Structural rather than by BERT's node names, so any BERT-family tower works: the feed-forward
    matrices are ``hidden × 4·hidden`` and back, everything square and constant is attention.
    """
    return [name for name, (rows, cols) in _constant_matmul_weights(model).items() if rows == cols]


class TextCalibrationReader:
    """Feeds tokenized real text to ``quantize_static``'s calibrator, a batch at a time."""

    def __init__(self, tokenizer: TextTokenizer, texts: Sequence[str], batch_size: int = CALIBRATION_BATCH):
        if not texts:
            raise ValueError("calibration needs at least one text")
        self._batches = [tokenizer(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        self._iter: Iterator[tuple[np.ndarray, np.ndarray]] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {"input_ids": batch[0], "attention_mask": batch[1]}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize_int8_qdq(source: Path, target: Path, tokenizer: TextTokenizer, calibration_texts: Sequence[str]) -> Path:
    """Static INT8 Q/DQ for TensorRT: symmetric, per-channel weights, MinMax ranges from real text."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):  # the calibrator checks for this base class
        def __init__(self) -> None:
            self.inner = TextCalibrationReader(tokenizer, calibration_texts)

        def get_next(self):  # signature fixed by onnxruntime
            return self.inner.get_next()

    with tempfile.TemporaryDirectory(prefix="aisle-qdq-") as tmp:
        # ORT's recommended pre-processing (shape inference + folding) so quantization sees typed tensors
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        nodes = attention_projection_matmuls(onnx.load(str(prepared)))
        if not nodes:
            raise ValueError(f"{source}: no square constant-weight MatMul to quantize; is this a transformer tower?")
        quantize_static(
            str(prepared),
            str(target),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    return target


def write_variant(name: str, encoder_dir: Path, calibration_texts: Sequence[str] = ()) -> Path:
    """Write variant ``name`` of ``encoder_dir/model.onnx`` next to it and return its path."""
    if name not in VARIANTS:
        raise ValueError(f"unknown precision variant {name!r}; expected one of {sorted(VARIANTS)}")
    encoder_dir = Path(encoder_dir)
    source, target = encoder_dir / MODEL_FILE, encoder_dir / VARIANTS[name].filename
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: export the FP32 graph first")
    started = time.perf_counter()
    if name == "int8":
        quantize_int8_dynamic(source, target)
    elif name == "fp16":
        convert_fp16(source, target)
    else:
        quantize_int8_qdq(source, target, TextTokenizer.from_directory(encoder_dir), calibration_texts)
    _say(f"wrote {target} ({target.stat().st_size / 2**20:.0f} MiB)", started)
    return target
