"""The learned ranker as native code: its LightGBM trees compiled by TL2cgen into a shared library.

Why: ``rerank`` scores a feed's ~150–200 head candidates per request, and LightGBM's own predict
walks its tree structures through an interpreter loop; TL2cgen turns each tree into nested
``if``s and the compiled library answers the same rows in about half the time, with the same
float64 thresholds and leaf values summed in the same tree order (equal scores: checked at load).
``LearnedRanker.save`` compiles ``model.so`` beside ``model.txt`` (a C compiler is needed there,
at ``aisle finetune`` time, not at serving); ``LearnedRanker.load`` uses it when it was compiled
from that very ``model.txt`` (its sha256 is in the manifest) and scores a probe exactly as
LightGBM does, else LightGBM's native predict serves, with a warning. Tree-SHAP contributions
(``explain=True``) always come from LightGBM.

TL2cgen's predictor "may be called by only one thread at a time": a request takes one from a
pool (:data:`POOL` of them) and gives it back; the calls keep the GIL (see :class:`CompiledRanker`).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import queue
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger("aisle.ranker")
COMPILED_FILE = "model.so"
#: rows of the probe a loaded library must score exactly as LightGBM does
PROBE_ROWS = 256
_PROBE_TOLERANCE = 1e-9
#: predictors per loaded library: requests scoring at once (more wait their turn, on 2–16 cores)
POOL = max(2, min(16, os.cpu_count() or 1))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def compile_model(model_file: Path, target: Path) -> dict[str, Any] | None:
    """Compile ``model_file`` (LightGBM text) into ``target``; what the manifest records, or None
    (with a warning) where TL2cgen or a C compiler is missing: LightGBM's predict then serves."""
    try:
        import tl2cgen
        import treelite
    except ImportError as error:
        LOG.warning("learned ranker not compiled (%s): LightGBM's native predict will serve it", error)
        return None
    model = treelite.frontend.load_lightgbm_model(str(model_file))
    units = max(1, min(8, model.num_tree // 25))  # translation units: gcc's time grows faster than a unit's size
    # quantize: each feature's thresholds become integer bins (one search per value, then integer
    # compares in the trees): the same branches taken, ~30% less time on a feed's head here
    params = {"quantize": 1} | ({"parallel_comp": units} if units > 1 else {})
    try:
        tl2cgen.export_lib(
            model,
            toolchain=os.environ.get("AISLE_RANKER_CC", "gcc"),
            libpath=str(target),
            params=params,
            nthread=min(units, os.cpu_count() or 1),
        )
    except Exception as error:  # noqa: BLE001 - no compiler, or it failed: serving still works, natively
        LOG.warning("learned ranker not compiled (%s): LightGBM's native predict will serve it", error)
        Path(target).unlink(missing_ok=True)
        return None
    return {
        "file": Path(target).name,
        "model_sha256": sha256(model_file),
        "tl2cgen": tl2cgen.__version__,
        "params": params,
    }


def probe_rows(n_features: int, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """float64 rows spread over small and large values, some missing: many paths through the trees."""
    rng = np.random.default_rng(seed)
    probe = rng.standard_normal((rows, n_features)) * rng.choice([0.1, 1.0, 10.0, 300.0], (rows, n_features))
    probe[rng.random(probe.shape) < 0.1] = np.nan
    return probe


class CompiledRanker:
    """Scores rows with a TL2cgen library, from a pool of predictors opened at load.

    All opened at load from a private copy of the library, never later: ``aisle finetune`` may
    rewrite it under a running server, and the dynamic loader hands out an already open library by
    its path (a reload would get the old model's code).

    The scoring calls go through TL2cgen's C API with the GIL held (``ctypes.PyDLL`` over its own
    library), not through its Python wrapper, whose ``ctypes.CDLL`` calls release it: a thread that
    lets go of the GIL for a fraction of a millisecond waits, at concurrency 16, for the thread that
    took it to give it back — up to Python's 5 ms switch interval, the whole added latency at
    concurrency 16 here (``perf.bench_ranker``). The predict itself is shorter than that wait.
    """

    def __init__(self, library: Path, predictors: int = POOL) -> None:
        import tl2cgen

        self.library = Path(library)
        self._lib = ctypes.PyDLL(tl2cgen.libloader._LIB._name)  # the loaded libtl2cgen; calls keep the GIL
        self._check = tl2cgen.libloader._check_call
        self._missing = np.array([np.nan])
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with tempfile.TemporaryDirectory(prefix="aisle-ranker-") as private:
            copy = Path(private) / COMPILED_FILE
            shutil.copyfile(self.library, copy)
            for _ in range(predictors):  # the loaded code stays mapped once the copy is gone
                predictor = tl2cgen.Predictor(str(copy), nthread=1)
                if (predictor.num_target, list(predictor.num_class), predictor.leaf_output_type) != (1, [1], "float64"):
                    raise ValueError(f"{library}: not a single-output float64 model")
                self._pool.put(predictor)

    def score(self, features: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(features, dtype=np.float64)
        n, columns = rows.shape
        doubles = ctypes.POINTER(ctypes.c_double)
        scores = np.zeros(n, dtype=np.float64)
        matrix = ctypes.c_void_p()
        self._check(
            self._lib.TL2cgenDMatrixCreateFromMat(
                rows.ctypes.data_as(doubles),
                b"float64",
                ctypes.c_size_t(n),
                ctypes.c_size_t(columns),
                self._missing.ctypes.data_as(doubles),
                ctypes.byref(matrix),
            )
        )
        predictor = self._pool.get()  # waits while every predictor is busy (each call is a fraction of a ms)
        try:
            self._check(
                self._lib.TL2cgenPredictorPredictBatch(
                    predictor.handle, matrix, ctypes.c_int(0), ctypes.c_int(0), scores.ctypes.data_as(doubles)
                )
            )
        finally:
            self._pool.put(predictor)
            self._check(self._lib.TL2cgenDMatrixFree(matrix))
        return scores


def load_compiled(directory: Path, manifest: dict, booster: Any) -> CompiledRanker | None:
    """The compiled form of ``booster`` in ``directory``, when it is there, current and exact."""
    compiled = manifest.get("compiled") or {}
    library = Path(directory) / str(compiled.get("file", COMPILED_FILE))
    if not library.exists():
        return None
    if compiled.get("model_sha256") != sha256(Path(directory) / "model.txt"):
        LOG.warning("%s was compiled from another model.txt: LightGBM's native predict serves", library)
        return None
    try:
        ranker = CompiledRanker(library)
        probe = probe_rows(booster.num_feature())
        gap = float(np.max(np.abs(ranker.score(probe) - booster.predict(probe, num_threads=1))))
    except Exception as error:  # noqa: BLE001 - another machine's library, a missing runtime: serve natively
        LOG.warning("%s cannot be used (%s): LightGBM's native predict serves", library, error)
        return None
    if not gap <= _PROBE_TOLERANCE:
        LOG.warning("%s scores differ from LightGBM's by %g: LightGBM's native predict serves", library, gap)
        return None
    return ranker
