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


def reranked_rows(features: np.ndarray, depth: int = DEPTH) -> np.ndarray:
    """bool per feature row: the hand-weighted top ``depth`` and the buy-again candidates."""
    return scored_rows(features[:, HAND_RANK], features[:, FROM_HISTORY], depth)


@dataclass(frozen=True, eq=False)
class LearnedRanker:
    """A LightGBM booster whose columns are :data:`aisle_server.features.FEATURE_NAMES`."""

    booster: Any  # lightgbm.Booster
    manifest: dict = field(default_factory=dict)
    compiled: CompiledRanker | None = None  # the same trees as native code; None: LightGBM's predict

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
        if tuple(booster.feature_name()) != FEATURE_NAMES:
            raise ValueError(
                f"{directory}: the ranker was trained on features {booster.feature_name()}, "
                f"this server computes {list(FEATURE_NAMES)}: re-run `aisle finetune`"
            )
        return cls(booster, manifest, load_compiled(directory / MODEL_FILE, booster))

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
        if self.compiled is not None:
            trees = self.compiled.score(features)
        else:
            trees = np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float64)
        return trees + self.base_weight * features[:, HAND_SCORE] if self.base_weight else trees

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """float64 [n, F + 1]: each feature's tree-SHAP contribution and the bias, summing to :meth:`score`
        (the boosting's start, ``base_weight`` × ``hand_score``, is ``hand_score``'s besides its trees')."""
        if not len(features):
            return np.zeros((0, len(FEATURE_NAMES) + 1))
        parts = np.asarray(self.booster.predict(features, pred_contrib=True, num_threads=1), dtype=np.float64)
        parts[:, HAND_SCORE] += self.base_weight * features[:, HAND_SCORE]
        return parts
