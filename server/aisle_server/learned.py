"""What a store's own log taught Aisle, attached to the served catalog index.

``aisle finetune --interactions`` (or ``aisle index --interactions``) writes, and ``aisle export
--finetuned`` copies, into ``<repo>/rerank/learned/``:

- ``log_signals/``  popularity (time-decayed counts of the log's interactions) and co-occurrence
  neighbour lists, keyed by item id (``item_ids.npy``, ``popularity.npy``, ``neighbors.npy``,
  ``weights.npy``, ``manifest.json``);
- ``user_encoder/`` the transformer user encoder (``aisle_server.user_encoder``), tied to the item
  tower it was trained on;
- ``ranker/``       the learned second stage (``aisle_server.ranker``): a LightGBM LambdaMART model
  over ``aisle_server.features``, written only when it beat the hand-weighted stack on validation.

``log_signals/`` may also hold ``item_stats.npy`` (``ITEM_STAT_NAMES`` per item: windowed counts,
buyers, how often and how regularly the item is bought again), which the ranker's features read;
signals written before it load without them.

It sits beside the version directories, not inside them: every catalog version the model loads
(a hot swap included) gets the same learned signals, aligned to its own rows by item id at load.
Items the log never saw get no popularity and no neighbours; ids of the log missing from the
catalog are dropped. Without ``learned/`` everything behaves as before it existed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .cooccurrence import Cooccurrence
from .features import ITEM_STAT_NAMES
from .index import CatalogIndex

LOG = logging.getLogger("aisle.learned")
LEARNED_DIRNAME = "learned"
LOG_SIGNALS_DIRNAME = "log_signals"
USER_ENCODER_DIRNAME = "user_encoder"
RANKER_DIRNAME = "ranker"
_ARRAYS = ("item_ids", "popularity", "neighbors", "weights")
ITEM_STATS = "item_stats"


@dataclass(frozen=True, eq=False)
class LogSignals:
    """Popularity and co-occurrence of a log, over its own item vocabulary (``item_ids``)."""

    item_ids: np.ndarray  # str (V,)
    popularity: np.ndarray  # float64 (V,), ≥ 0
    neighbors: np.ndarray  # int32 (V, M): positions in ``item_ids``, -1 = none
    weights: np.ndarray  # float32 (V, M)
    manifest: dict = field(default_factory=dict)
    item_stats: np.ndarray | None = None  # float64 (V, len(ITEM_STAT_NAMES)); None: signals from before them

    def __post_init__(self) -> None:
        v = len(self.item_ids)
        if self.item_stats is not None and self.item_stats.shape != (v, len(ITEM_STAT_NAMES)):
            raise ValueError(f"item_stats {self.item_stats.shape}: expected ({v}, {len(ITEM_STAT_NAMES)})")
        if len(self.popularity) != v or self.neighbors.shape != self.weights.shape or len(self.neighbors) != v:
            raise ValueError(
                f"log signals disagree in size: {v} ids, popularity {self.popularity.shape}, "
                f"neighbors {self.neighbors.shape}, weights {self.weights.shape}"
            )

    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(directory / f"{name}.npy", np.asarray(getattr(self, name)), allow_pickle=False)
        if self.item_stats is not None:
            np.save(directory / f"{ITEM_STATS}.npy", np.asarray(self.item_stats, dtype=np.float64), allow_pickle=False)
        (directory / "manifest.json").write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path) -> LogSignals:
        directory = Path(directory)
        missing = [name for name in _ARRAYS if not (directory / f"{name}.npy").exists()]
        if missing:
            raise FileNotFoundError(f"{directory}: log signals incomplete, missing {missing}")
        arrays = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
        manifest_path = directory / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        stats_path = directory / f"{ITEM_STATS}.npy"
        stats = np.load(stats_path, allow_pickle=False) if stats_path.exists() else None
        return cls(manifest=manifest, item_stats=stats, **arrays)

    def aligned_stats(self, index: CatalogIndex) -> np.ndarray | None:
        """``item_stats`` per catalog row (NaN for items the log never saw); None without stats."""
        if self.item_stats is None:
            return None
        rows = index.rows_of(self.item_ids.tolist())
        known = rows >= 0
        stats = np.full((len(index), len(ITEM_STAT_NAMES)), np.nan)
        stats[rows[known]] = self.item_stats[known]
        return stats

    def aligned(self, index: CatalogIndex) -> tuple[np.ndarray, Cooccurrence]:
        """Per catalog row: the log's popularity, and the co-occurrence lists as catalog rows."""
        rows = index.rows_of(self.item_ids.tolist())
        known = rows >= 0
        popularity = np.zeros(len(index))
        popularity[rows[known]] = self.popularity[known]
        neighbors = np.full((len(index), self.neighbors.shape[1]), -1, dtype=np.int32)
        weights = np.zeros(neighbors.shape, dtype=np.float32)
        mapped = np.where(self.neighbors >= 0, rows[np.maximum(self.neighbors, 0)], -1)
        mapped_weights = np.where(mapped >= 0, self.weights, 0.0).astype(np.float32)
        neighbors[rows[known]] = mapped[known]
        weights[rows[known]] = mapped_weights[known]
        return popularity, Cooccurrence(neighbors, weights)


def attach_learned(index: CatalogIndex, directory: Path, intra_op_threads: int = 1) -> CatalogIndex:
    """``index`` with the learned signals under ``directory`` (if any) in place of the defaults.

    A user encoder trained on another item tower than the one that embedded the index would score
    in the wrong space: it is refused with the two checksums, instead of serving wrong answers.
    """
    directory = Path(directory)
    signals_dir, encoder_dir = directory / LOG_SIGNALS_DIRNAME, directory / USER_ENCODER_DIRNAME
    if signals_dir.is_dir():
        signals = LogSignals.load(signals_dir)
        popularity, cooccurrence = signals.aligned(index)
        index = replace(
            index, cooccurrence=cooccurrence, log_popularity=popularity, item_stats=signals.aligned_stats(index)
        )
        LOG.info("log signals: %d of %d catalog items seen in the log", int((popularity > 0).sum()), len(index))
    if encoder_dir.is_dir():
        from .user_encoder import UserEncoder  # onnxruntime only when an encoder is there

        encoder = UserEncoder.load(encoder_dir, intra_op_threads=intra_op_threads)
        served = index.manifest.get("item_encoder_sha256")
        if encoder.item_tower_sha256 and served and encoder.item_tower_sha256 != served:
            raise ValueError(
                f"{encoder_dir} was trained on the item tower {encoder.item_tower_sha256[:12]}…, "
                f"but the index was embedded by {served[:12]}…: re-run `aisle export --finetuned` "
                "with the towers it was trained with, or remove the user encoder"
            )
        if encoder.dim != index.dim:
            raise ValueError(f"{encoder_dir}: user vectors have {encoder.dim} dims, the index {index.dim}")
        index = replace(index, user_encoder=encoder)
    if (directory / RANKER_DIRNAME).is_dir():
        from .ranker import LearnedRanker  # lightgbm only when a ranker is there

        index = replace(index, ranker=LearnedRanker.load(directory / RANKER_DIRNAME))
        LOG.info("learned ranker: %s", directory / RANKER_DIRNAME)
    return index
