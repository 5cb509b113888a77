"""Run the exported time-aware user encoder (``aisle_export.learn.user_encoder``) with ONNX Runtime.

The feed's interest vector can come from this encoder instead of the recency-weighted mean of the
history's embeddings (``ranking.session_interest``): it reads the shopper's most recent items —
their item-tower embeddings, timestamps and event types — plus "now", and returns an L2-normalized
vector in the item tower's space, scored against the catalog by inner product as before.

Plain numpy + onnxruntime (no torch), so it runs inside Triton's Python backend. The graph does
the time arithmetic itself from raw float64 unix seconds; this module only validates, keeps the
most recent ``max_len`` items, left-pads a batch to its longest history and runs it in one call.
Everything that could make the graph fail or silently misbehave is refused here with a
``ValueError`` that names the request row: an empty history, non-finite times, wrong widths,
event ids outside the vocabulary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
FORMAT = "aisle-user-encoder/1"
INPUT_NAMES = ("item_embeddings", "timestamps", "event_ids", "mask", "now")
OUTPUT_NAME = "user_embedding"
_REQUIRED_KEYS = ("format", "dim", "max_len", "event_vocabulary")


class UserEncoder:
    """A loaded user encoder: ``encode`` histories into user vectors, one ``session.run`` per batch."""

    def __init__(self, session, config: dict, directory: Path):
        self.session = session
        self.config = config
        self.directory = directory
        self.max_len: int = int(config["max_len"])
        self.dim: int = int(config["dim"])
        self.item_tower_sha256: str | None = config.get("item_tower_sha256")
        self.vocabulary: list[str] = [str(e) for e in config["event_vocabulary"]]
        self._event_of = {name: i for i, name in enumerate(self.vocabulary) if i > 0}

    @classmethod
    def load(cls, directory: Path, intra_op_threads: int = 1) -> UserEncoder:
        """Read ``model.onnx`` and ``config.json`` from ``directory`` and check that they agree.

        One intra-op thread by default: the graph is tiny (a few 64-wide layers over ≤ 50 items)
        and Triton runs several model instances side by side, so extra threads only contend.
        """
        import onnxruntime as ort  # heavy import kept out of module import

        directory = Path(directory)
        config = _read_config(directory)
        model_path = directory / MODEL_FILE
        if not model_path.is_file():
            raise FileNotFoundError(
                f"{model_path}: missing (a user encoder directory holds {MODEL_FILE} and {CONFIG_FILE})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        _check_graph(session, config, model_path)
        return cls(session, config, directory)

    def event_ids(self, events: Sequence[str]) -> np.ndarray:
        """Event type names → int64 ids; types not seen in training map to 0 (unknown)."""
        return np.array([self._event_of.get(str(e), 0) for e in events], dtype=np.int64)

    def encode(
        self,
        histories: Sequence[np.ndarray],
        timestamps: Sequence[np.ndarray],
        events: Sequence[np.ndarray | None],
        now: Sequence[float],
    ) -> np.ndarray:
        """(B, dim) float32 L2-normalized user vectors.

        ``histories[i]``: (h_i, dim) item embeddings, oldest → newest, h_i ≥ 1 (only the most recent
        ``max_len`` are read); ``timestamps[i]``: (h_i,) unix seconds; ``events[i]``: (h_i,) int ids
        or None (all unknown); ``now[i]``: unix seconds of the recommendation.
        """
        batch = len(histories)
        if not (len(timestamps) == len(events) == len(now) == batch):
            raise ValueError(
                f"histories, timestamps, events and now differ in length: "
                f"{batch}, {len(timestamps)}, {len(events)}, {len(now)}"
            )
        if batch == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = [self._row(i, h, t, e, n) for i, (h, t, e, n) in enumerate(zip(histories, timestamps, events, now))]
        width = max(len(r[0]) for r in rows)
        feeds = {
            "item_embeddings": np.zeros((batch, width, self.dim), np.float32),
            "timestamps": np.zeros((batch, width), np.float64),
            "event_ids": np.zeros((batch, width), np.int64),
            "mask": np.zeros((batch, width), np.int64),
            "now": np.array([r[3] for r in rows], np.float64),
        }
        for i, (items, ts, ids, _) in enumerate(rows):
            k = len(items)  # left padding: the newest item is always the last column
            feeds["item_embeddings"][i, width - k :] = items
            feeds["timestamps"][i, width - k :] = ts
            feeds["event_ids"][i, width - k :] = ids
            feeds["mask"][i, width - k :] = 1
        out = np.asarray(self.session.run([OUTPUT_NAME], feeds)[0], dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    def _row(
        self, i: int, history: np.ndarray, ts: np.ndarray, events: np.ndarray | None, now: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Validate request row ``i`` and cut it to its most recent ``max_len`` items."""
        history = np.asarray(history)
        if history.ndim != 2 or history.shape[1] != self.dim:
            raise ValueError(f"histories[{i}]: expected shape (h, {self.dim}), got {history.shape}")
        h = history.shape[0]
        if h == 0:
            raise ValueError(f"histories[{i}] is empty: a shopper without history needs the fallback, not the encoder")
        if not np.isfinite(history).all():
            raise ValueError(f"histories[{i}] contains non-finite embedding values")
        ts = np.asarray(ts, dtype=np.float64)
        if ts.shape != (h,):
            raise ValueError(f"timestamps[{i}]: expected shape ({h},), got {ts.shape}")
        if not np.isfinite(ts).all():
            raise ValueError(f"timestamps[{i}] contains non-finite values")
        if not math.isfinite(float(now)):
            raise ValueError(f"now[{i}]={now!r} is not finite")
        ids = np.zeros(h, np.int64) if events is None else np.asarray(events)
        if ids.shape != (h,) or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"events[{i}]: expected {h} integer ids, got shape {ids.shape} dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.vocabulary)):
            raise ValueError(f"events[{i}]: ids must be in [0, {len(self.vocabulary)}) (use event_ids())")
        keep = slice(max(0, h - self.max_len), h)
        return history[keep].astype(np.float32, copy=False), ts[keep], ids[keep].astype(np.int64), float(now)


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a user encoder directory holds {MODEL_FILE} and {CONFIG_FILE})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    missing = [key for key in _REQUIRED_KEYS if key not in config]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    if config["format"] != FORMAT:
        raise ValueError(f"{path}: format {config['format']!r}, this server reads {FORMAT!r}")
    if int(config["max_len"]) < 1 or int(config["dim"]) < 1 or not config["event_vocabulary"]:
        raise ValueError(f"{path}: max_len, dim and event_vocabulary must be positive/non-empty")
    return config


def _check_graph(session, config: dict, model_path: Path) -> None:
    """The graph's inputs/output must be the ones this module feeds, at the configured width."""
    names = tuple(i.name for i in session.get_inputs())
    if sorted(names) != sorted(INPUT_NAMES):
        raise ValueError(f"{model_path}: inputs {names}, expected {INPUT_NAMES}")
    outputs = session.get_outputs()
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME:
        raise ValueError(f"{model_path}: expected one output {OUTPUT_NAME!r}, got {[o.name for o in outputs]}")
    width = outputs[0].shape[-1]
    if isinstance(width, int) and width != int(config["dim"]):
        raise ValueError(f"{model_path}: outputs {width}-d vectors but config.json says dim={config['dim']}")
    embed_width = next(i.shape[-1] for i in session.get_inputs() if i.name == "item_embeddings")
    if isinstance(embed_width, int) and embed_width != int(config["dim"]):
        raise ValueError(
            f"{model_path}: takes {embed_width}-d item embeddings but config.json says dim={config['dim']}"
        )
