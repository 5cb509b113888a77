"""The learned second stage, served: a LightGBM LambdaMART model over ``aisle_server.features``.

``aisle finetune`` trains it on the store's own log (``aisle_export.learn.ranker``) and writes it
to ``<repo>/rerank/learned/ranker/`` (``model.txt``, LightGBM's own text format, and
``manifest.json``) only when it beat the hand-weighted stack on the validation cut. ``rerank``
then orders a feed's candidate union by its score; a request can switch it off
(``learned_ranker=False``). Scores come from the model compiled to native code when it is loaded
(``aisle_server.compiled_ranker``: lleaves; well under LightGBM's predict time on a feed's head,
``perf.bench_ranker``), or from LightGBM's predict where it cannot be compiled; both give the same
scores. Contributions come from LightGBM's ``pred_contrib``: the exact tree-SHAP values an
explanation needs, summing to the score.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .compiled_ranker import CompiledRanker, load_compiled
from .features import FEATURE_NAMES, FROM_HISTORY, HAND_RANK, scored_rows

MODEL_FILE = "model.txt"
MANIFEST_FILE = "manifest.json"
#: How many of a feed's candidates the ranker scores: the hand-weighted stack's best ``DEPTH``
#: plus every buy-again candidate (the rest follow in hand-weighted order). Why not all of them:
#: LightGBM's predict costs ~2 µs per row and hundred trees, and the hand-weighted order already
#: puts the next items almost always inside its top 150; training sees exactly these rows.
DEPTH = 150
HAND_SCORE = FEATURE_NAMES.index("hand_score")
#: manifest key: the weight of ``hand_score`` in the score the trees were boosted from (LightGBM's
#: ``init_score``, which the model file does not hold): the score is the trees' sum plus it
BASE_WEIGHT = "base_weight"
LOG = logging.getLogger("aisle.ranker")


def reranked_rows(features: np.ndarray, depth: int = DEPTH) -> np.ndarray:
    """bool per feature row: the hand-weighted top ``depth`` and the buy-again candidates."""
    return scored_rows(features[:, HAND_RANK], features[:, FROM_HISTORY], depth)


@dataclass(frozen=True, eq=False)
class LearnedRanker:
    """A LightGBM booster over :data:`aisle_server.features.FEATURE_NAMES`, or over some of them:
    a model trained before a feature was added keeps serving, on the columns it knows, until
    ``aisle finetune`` trains it again (an upgrade must not take a store's feed down)."""

    booster: Any  # lightgbm.Booster
    manifest: dict = field(default_factory=dict)
    compiled: CompiledRanker | None = None  # the same trees as native code; None: LightGBM's predict
    #: the model's columns as positions in FEATURE_NAMES; None: all of them, in that order
    columns: np.ndarray | None = None

    @classmethod
    def load(cls, directory: Path) -> LearnedRanker:
        """Load ``directory``; a model over other features than this server computes is refused."""
        import lightgbm  # only where a ranker is installed

        directory = Path(directory)
        if not (directory / MODEL_FILE).exists():
            raise FileNotFoundError(f"{directory / MODEL_FILE} is missing")
        booster = lightgbm.Booster(model_file=str(directory / MODEL_FILE))
        manifest_path = directory / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        names = tuple(booster.feature_name())
        if not set(names) <= set(FEATURE_NAMES) or len(set(names)) != len(names):
            raise ValueError(
                f"{directory}: the ranker was trained on features {list(names)}, "
                f"this server computes {list(FEATURE_NAMES)}: re-run `aisle finetune`"
            )
        columns = None
        if names != FEATURE_NAMES:
            columns = np.array([FEATURE_NAMES.index(name) for name in names], dtype=np.int64)
            LOG.warning(
                "%s was trained without features %s: it serves on the %d it knows; re-run `aisle finetune` to use them",
                directory,
                [name for name in FEATURE_NAMES if name not in names],
                len(names),
            )
        return cls(booster, manifest, load_compiled(directory / MODEL_FILE, booster), columns)

    def save(self, directory: Path) -> Path:
        """Write the model and its manifest (compiled where it is loaded: :meth:`load`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / MODEL_FILE))
        (directory / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        return directory

    @property
    def depth(self) -> int:
        return int(self.manifest.get("depth", DEPTH))

    def reranks(self, features: np.ndarray) -> np.ndarray:
        """bool per row of ``features``: whether the ranker scores it (see :data:`DEPTH`)."""
        return reranked_rows(features, self.depth)

    @property
    def base_weight(self) -> float:
        """The weight of ``hand_score`` in the score the trees were boosted from (0: from nothing)."""
        return float(self.manifest.get(BASE_WEIGHT, 0.0))

    def score(self, features: np.ndarray) -> np.ndarray:
        """float64 score per row (higher first): the trees' sum, plus ``base_weight`` × ``hand_score``."""
        if not len(features):
            return np.zeros(0)
        own = self._own(features)
        if self.compiled is not None:
            trees = self.compiled.score(own)
        else:
            trees = np.asarray(self.booster.predict(own, num_threads=1), dtype=np.float64)
        return trees + self.base_weight * features[:, HAND_SCORE] if self.base_weight else trees

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """float64 [n, F + 1]: each feature's tree-SHAP contribution and the bias, summing to :meth:`score`
        (the boosting's start, ``base_weight`` × ``hand_score``, is ``hand_score``'s besides its trees')."""
        if not len(features):
            return np.zeros((0, len(FEATURE_NAMES) + 1))
        parts = np.asarray(
            self.booster.predict(self._own(features), pred_contrib=True, num_threads=1), dtype=np.float64
        )
        if self.columns is not None:  # a feature the model does not know contributes nothing
            known, parts = parts, np.zeros((len(features), len(FEATURE_NAMES) + 1))
            parts[:, self.columns], parts[:, -1] = known[:, :-1], known[:, -1]
        parts[:, HAND_SCORE] += self.base_weight * features[:, HAND_SCORE]
        return parts

    def _own(self, features: np.ndarray) -> np.ndarray:
        """``features``' columns the model was trained on, in its order."""
        return features if self.columns is None else np.ascontiguousarray(features[:, self.columns])
