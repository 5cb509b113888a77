"""Run an exported tower (``model.onnx``: token ids → L2-normalized embedding) with ONNX Runtime.

Used by the ``query_encoder``/``item_encoder`` Python-backend models on machines whose Triton has
no ONNX Runtime backend (the pytriton build), and by ``aisle index`` so that catalog embeddings
come from the very graph the server runs. In the Triton container the same ``model.onnx`` is
served by the native ``onnxruntime_onnx`` or ``tensorrt_plan`` configs instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"


def token_limits(directory: Path) -> tuple[int, int | None]:
    """(longest sequence, vocabulary size) the tower accepts, from the tokenizer files beside it.

    The sequence bound is the tokenizer's ``max_length`` rounded up to its padding multiple (what our
    own tokenizer never exceeds);
    without it a raw request of 100,000 tokens would ask the attention layers for O(n²) memory.
    """
    from .tokenization import TOKENIZER_FILE, TokenizerSettings

    settings = TokenizerSettings.load(Path(directory))
    pad = settings.pad_to_multiple_of
    longest = -(-settings.max_length // pad) * pad  # our tokenizer pads a max_length sequence up to this
    vocab = None
    if (Path(directory) / TOKENIZER_FILE).exists():
        from tokenizers import Tokenizer

        vocab = Tokenizer.from_file(str(Path(directory) / TOKENIZER_FILE)).get_vocab_size()
    return longest, vocab


def check_token_inputs(
    input_ids: np.ndarray, attention_mask: np.ndarray, max_length: int, vocab_size: int | None
) -> None:
    """Refuse (``InvalidInput``) token tensors the graph would fail on or could not afford."""
    from .errors import InvalidInput

    if input_ids.ndim != 2 or not 1 <= input_ids.shape[1] <= max_length:
        raise InvalidInput(INPUT_NAMES[0], f"expected shape [batch, 1..{max_length}], got {list(input_ids.shape)}")
    if attention_mask.shape != input_ids.shape:
        raise InvalidInput(
            INPUT_NAMES[1], f"shape {list(attention_mask.shape)} differs from input_ids {list(input_ids.shape)}"
        )
    if input_ids.size and (input_ids.min() < 0 or (vocab_size is not None and input_ids.max() >= vocab_size)):
        raise InvalidInput(INPUT_NAMES[0], f"token ids must be in [0, {vocab_size})")
    if attention_mask.size and not np.isin(attention_mask, (0, 1)).all():
        raise InvalidInput(INPUT_NAMES[1], "values must be 0 or 1")


class OnnxEncoder:
    def __init__(self, model_path: Path, intra_op_threads: int = 0):
        import onnxruntime as ort  # heavy import kept out of module import

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


class EmptyTextMemo:
    """An encoder that answers rows holding the empty text from an embedding computed once.

    Every feed call (a shopper's history, no query) sends the tokenized empty string through the
    query tower, and its embedding never changes: answering those rows from memory takes the
    tower off the feed's path, so feed calls cost the server little more than ranking. A row
    matches when its unpadded tokens equal the empty text's (any padding width); every other row
    goes to the wrapped encoder, so the output is what the encoder alone returns.
    """

    def __init__(
        self, encoder: Callable[[np.ndarray, np.ndarray], np.ndarray], empty_ids: np.ndarray, empty_mask: np.ndarray
    ):
        self.encoder = encoder
        length = int(empty_mask.sum())
        self.tokens = np.asarray(empty_ids[:length], dtype=np.int64)
        self.embedding = encoder(empty_ids[None, :], empty_mask[None, :])[0]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        n = len(self.tokens)
        if input_ids.shape[1] < n:
            return self.encoder(input_ids, attention_mask)
        hit = (
            (attention_mask.sum(axis=1) == n)
            & attention_mask[:, :n].all(axis=1)
            & (input_ids[:, :n] == self.tokens).all(axis=1)
        )
        if not hit.any():
            return self.encoder(input_ids, attention_mask)
        out = np.empty((input_ids.shape[0], len(self.embedding)), dtype=self.embedding.dtype)
        out[hit] = self.embedding
        if not hit.all():
            out[~hit] = self.encoder(input_ids[~hit], attention_mask[~hit])
        return out
