"""Text → vectors through an exported ONNX tower, with the server's own tokenizer.

Offline item vectors (indexing, evaluation, distillation gates, precision gates) and online query
vectors come from the same graphs and the same tokenization code. Texts are embedded longest-first
in batches: similar lengths share padding, which is most of the cost of a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aisle_export.core.towers import load_tower
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import TextTokenizer


def encode_in_batches(
    encode: Callable[[list[str]], np.ndarray],
    texts: Sequence[str],
    dim: int,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "embedding",
) -> np.ndarray:
    """``encode`` over ``texts`` in batches, longest first (similar lengths share padding); rows in input order."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), dim), dtype=np.float32)
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = encode([texts[r] for r in rows])
            bar.update(len(rows))
    return out


def encode_texts(
    encoder: OnnxEncoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "embedding",
) -> np.ndarray:
    """ONNX-tower embeddings (float32, L2-normalized) of ``texts``, in their order."""
    return encode_in_batches(lambda batch: encoder(*tokenizer(batch)), texts, encoder.dim, batch_size, progress, desc)


def embed_texts(texts: list[str], encoder_dir: Path, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Item-tower embeddings of ``texts`` from the exported ``<encoder_dir>/model.onnx``."""
    encoder = OnnxEncoder(Path(encoder_dir) / "model.onnx")
    return encode_texts(
        encoder, TextTokenizer.from_directory(encoder_dir), texts, batch_size, progress, "embedding items"
    )


def embed_catalog(
    texts: Sequence[str], tower: str | Path | None, progress: bool = True, desc: str = "embedding"
) -> np.ndarray:
    """L2-normalized embeddings of ``texts`` by a tower as trained (sentence-transformers, float32): for
    offline evaluation and training, where no ONNX export of the tower exists yet (parity ≥ 0.9999)."""
    from sentence_transformers import SentenceTransformer  # slow to import: only the callers that embed need it

    model = SentenceTransformer(str(load_tower(tower).path), device="cpu")
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    return encode_in_batches(
        lambda batch: model.encode(batch, normalize_embeddings=True, convert_to_numpy=True),
        texts,
        dim,
        128,
        progress,
        desc,
    )
