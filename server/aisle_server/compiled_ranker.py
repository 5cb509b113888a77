"""The learned ranker as native code: its LightGBM trees compiled by lleaves (LLVM) where it is loaded.

Why: ``rerank`` scores a feed's ~150–200 head candidates per request, and LightGBM's own predict
walks its tree structures through an interpreter loop. lleaves compiles ``model.txt`` into one
function over the rows, with the trees cut into blocks: each block's code is walked for every row
before the next block, so it stays in the instruction cache (``fblocksize``). On a feed's head it
took less than half the time of the TL2cgen library it replaced, whose nested ``if``s for a hundred
trees did not fit that cache (figures: docs/results.md, "Compiled by lleaves"). The scores are
LightGBM's but for the order in which the blocks' sums are added (a few 1e-15 here); a probe checks
them at load.

Compiled at load, for the CPU it will run on (~2 s for 100 trees here): nothing compiled travels
with the model, so an instruction set one machine has and another lacks never reaches the wrong
machine, and no C compiler is needed anywhere. Where lleaves is missing, or the compiled scores
differ from LightGBM's on the probe, LightGBM's native predict serves, with a warning. Tree-SHAP
contributions (``explain=True``) always come from LightGBM.

The call keeps the GIL: the compiled function is called through a ``ctypes.PYFUNCTYPE`` over its
address, not through lleaves' ``predict``, whose ``CFUNCTYPE`` lets go of the GIL. A thread that lets
go of it for a fraction of a millisecond waits, at concurrency 16, for the thread that took it to
give it back — up to Python's 5 ms switch interval, the whole added latency at concurrency 16 here
(``perf.bench_ranker``); the predict itself is shorter than that wait. The function reads only its
arguments, so any number of threads may call it at once.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger("aisle.ranker")
#: rows of the probe the compiled trees must score as LightGBM does
PROBE_ROWS = 256
_PROBE_TOLERANCE = 1e-9
#: the compiled function's name in lleaves' module (its ``froot_func_name``)
ENTRY = "forest_root"
_DOUBLES = ctypes.POINTER(ctypes.c_double)
#: (rows, scores out, first row, end row): lleaves' entry point, called with the GIL held
_ENTRY_TYPE = ctypes.PYFUNCTYPE(None, _DOUBLES, _DOUBLES, ctypes.c_int32, ctypes.c_int32)


def probe_rows(n_features: int, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """float64 rows spread over small and large values, some missing: many paths through the trees."""
    rng = np.random.default_rng(seed)
    probe = rng.standard_normal((rows, n_features)) * rng.choice([0.1, 1.0, 10.0, 300.0], (rows, n_features))
    probe[rng.random(probe.shape) < 0.1] = np.nan
    return probe


class CompiledRanker:
    """Scores float64 rows with the trees of a LightGBM model file, compiled by lleaves at construction."""

    def __init__(self, model_file: Path) -> None:
        import lleaves

        self.model_file = Path(model_file)
        self._model = lleaves.Model(model_file=str(model_file))  # holds the compiled code while this lives
        if self._model.num_model_per_iteration() != 1:
            raise ValueError(f"{model_file}: not a single-output model")
        self._model.compile(raw_score=True, froot_func_name=ENTRY)
        # lleaves keeps its LLVM engine here; its own predict reaches the function the same way
        self._entry = _ENTRY_TYPE(self._model._execution_engine.get_function_address(ENTRY))
        self.num_feature = int(self._model.num_feature())

    def score(self, features: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(features, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.num_feature:
            raise ValueError(f"features must be [n, {self.num_feature}], got {rows.shape}")
        scores = np.zeros(len(rows), dtype=np.float64)
        if len(rows):
            self._entry(rows.ctypes.data_as(_DOUBLES), scores.ctypes.data_as(_DOUBLES), 0, len(rows))
        return scores


def load_compiled(model_file: Path, booster: Any) -> CompiledRanker | None:
    """``model_file``'s trees compiled, when lleaves is there and they score a probe as ``booster`` does."""
    try:
        ranker = CompiledRanker(model_file)
        probe = probe_rows(booster.num_feature())
        gap = float(np.max(np.abs(ranker.score(probe) - booster.predict(probe, num_threads=1))))
    except ImportError as error:
        LOG.warning("learned ranker not compiled (%s): LightGBM's native predict serves it", error)
        return None
    except Exception as error:  # noqa: BLE001 - a model lleaves cannot compile: serve natively
        LOG.warning("%s cannot be compiled (%s): LightGBM's native predict serves it", model_file, error)
        return None
    if not gap <= _PROBE_TOLERANCE:
        LOG.warning(
            "%s compiled scores differ from LightGBM's by %g: LightGBM's native predict serves it", model_file, gap
        )
        return None
    return ranker
