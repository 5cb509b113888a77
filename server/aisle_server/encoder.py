"""Run an exported tower (``model.onnx``: token ids → L2-normalized embedding) with ONNX Runtime.

Used by the ``query_encoder``/``item_encoder`` Python-backend models on machines whose Triton has
no ONNX Runtime backend (the pytriton build), and by ``aisle index`` so that catalog embeddings
come from the very graph the server runs. In the Triton container the same ``model.onnx`` is
served by the native ``onnxruntime_onnx`` or ``tensorrt_plan`` configs instead.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"


class OnnxEncoder:
    def __init__(self, model_path: Path, intra_op_threads: int = 0):
        import onnxruntime as ort  # noqa: PLC0415 - heavy import kept out of module import

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if input_ids.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        feeds = {
            INPUT_NAMES[0]: np.ascontiguousarray(input_ids, dtype=np.int64),
            INPUT_NAMES[1]: np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        return self.session.run([OUTPUT_NAME], feeds)[0]
