"""Judge a reduced-precision encoder against the FP32 one: cosine on held-out text, top-10 retrieval.

Why both figures: cosine says how far each vector moved; top-10 agreement says whether the move
changes what a user sees. Retrieval is scored end to end — the variant's query tower against an
index built by the variant's item tower, FP32 against FP32 — because that is how a variant is
deployed (both sides switch together). Everything runs under ONNX Runtime on CPU, so the gates
hold on any machine; for FP16 this runs ORT's CPU kernels on FP16 tensors (no TensorRT), which
checks the graph's numerics, not a GPU's.

A failed gate raises :class:`PrecisionGateError` after the figures are written, so a bad variant
never ships silently and its numbers are still there to look at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aisle_export.build.precision_texts import GateTexts
from aisle_export.core.encoding import encode_texts
from aisle_server.encoder import OnnxEncoder
from aisle_server.tokenization import TextTokenizer

MIN_COSINE = 0.98
MEAN_COSINE = 0.99
MIN_TOP10_AGREEMENT = 0.9
TOP_K = 10
EMBED_BATCH = 32
BATCH_COMPANIONS = 15


class PrecisionGateError(ValueError):
    """A precision variant moved embeddings or retrieval results too far from FP32."""


@dataclass(frozen=True)
class GateReport:
    """The figures of one variant against FP32 (both towers pooled) and whether they pass."""

    variant: str
    n_texts: int
    min_cosine: float
    mean_cosine: float
    worst_text: str
    n_queries: int
    n_items: int
    top10_agreement: float
    min_cosine_required: float
    mean_cosine_required: float
    top10_required: float
    passed: bool
    seconds: float
    #: the same query encoded alone and among :data:`BATCH_COMPANIONS` others (as dynamic batching
    #: serves it): the share of queries whose top-10 list is identical, and the mean top-10 overlap.
    #: Reported, not gated: FP32 is batch-invariant; dynamic INT8 quantizes each batch's activations
    #: with one scale, so a query's vector (and top-10) depends on the queries batched with it.
    batch_top10_identical: float | None = None
    batch_top10_overlap: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Row-wise cosine in float64, so the figures are not float32 rounding noise."""
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def top_k(queries: np.ndarray, items: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """Indices of the k best items per query by inner product (embeddings are L2-normalized)."""
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def top_k_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over queries of |top-k(candidate) ∩ top-k(reference)| / k (order inside top-k ignored)."""
    k = reference.shape[1]
    return float(np.mean([len(set(r) & set(c)) / k for r, c in zip(reference.tolist(), candidate.tolist())]))


def batch_invariance(
    encoder: OnnxEncoder, tokenizer: TextTokenizer, queries: Sequence[str], items: np.ndarray, k: int = TOP_K
) -> tuple[float, float]:
    """(Share of ``queries`` whose top-``k`` over ``items`` is the same list encoded alone as in a batch
    with the :data:`BATCH_COMPANIONS` queries after it, mean overlap of the two top-``k`` sets)."""
    alone = np.concatenate([encoder(*tokenizer([query])) for query in queries])
    batched = np.stack(
        [
            encoder(*tokenizer([query, *(queries[(i + j) % len(queries)] for j in range(1, BATCH_COMPANIONS + 1))]))[0]
            for i, query in enumerate(queries)
        ]
    )
    a, b = top_k(alone, items, k), top_k(batched, items, k)
    return float(np.mean((a == b).all(axis=1))), top_k_agreement(a, b)


@dataclass
class TowerPair:
    """The FP32 graph of a tower and its variant, with the tower's tokenizer."""

    fp32: Path
    variant: Path
    tokenizer_dir: Path


class Fp32Cache:
    """FP32 embeddings computed once per export and reused for every variant's gate."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def get(self, model: Path, tokenizer: TextTokenizer, texts: Sequence[str], what: str) -> np.ndarray:
        key = (str(model), what)
        if key not in self._cache:
            self._cache[key] = encode_texts(OnnxEncoder(model), tokenizer, texts, EMBED_BATCH)
        return self._cache[key]


def evaluate(
    variant: str,
    query: TowerPair,
    item: TowerPair,
    texts: GateTexts,
    cache: Fp32Cache | None = None,
    progress: bool = True,
) -> GateReport:
    """Score one variant of both towers; does not raise (see :func:`check`)."""
    started = time.perf_counter()
    cache = cache or Fp32Cache()
    say = (
        (lambda m: print(f"[aisle export] gate {variant}: {m} ({time.perf_counter() - started:.1f}s)", flush=True))
        if progress
        else (lambda m: None)
    )
    all_cos: list[np.ndarray] = []
    # one tower serving both sides (the default model) is scored once, not twice; a side kept in FP32
    # (the served query tower's gate: INT8 queries against the FP32 index) has nothing to score
    towers = (("query", query),) if query == item else (("query", query), ("item", item))
    towers = tuple((name, pair) for name, pair in towers if pair.variant != pair.fp32) or towers
    for name, pair in towers:
        tokenizer = TextTokenizer.from_directory(pair.tokenizer_dir)
        reference = cache.get(pair.fp32, tokenizer, texts.evaluation, "evaluation")
        candidate = encode_texts(OnnxEncoder(pair.variant), tokenizer, texts.evaluation, EMBED_BATCH)
        all_cos.append(cosines(reference, candidate))
        say(f"{name} tower: min cosine {all_cos[-1].min():.4f} over {len(texts.evaluation)} held-out texts")
    both = np.concatenate(all_cos)
    worst = int(np.argmin(both)) % len(texts.evaluation)

    q_tok = TextTokenizer.from_directory(query.tokenizer_dir)
    i_tok = TextTokenizer.from_directory(item.tokenizer_dir)
    ref_items = cache.get(item.fp32, i_tok, texts.catalog, "catalog")
    if item.variant == item.fp32:  # the index side stays FP32
        var_items = ref_items
    else:
        say(f"embedding {len(texts.catalog)} catalog items with the variant")
        var_items = encode_texts(OnnxEncoder(item.variant), i_tok, texts.catalog, EMBED_BATCH)
    ref_queries = cache.get(query.fp32, q_tok, texts.queries, "queries")
    var_queries = encode_texts(OnnxEncoder(query.variant), q_tok, texts.queries, EMBED_BATCH)
    k = min(TOP_K, len(texts.catalog))
    agreement = top_k_agreement(top_k(ref_queries, ref_items, k), top_k(var_queries, var_items, k))
    min_cos, mean_cos = float(both.min()), float(both.mean())
    identical, overlap = batch_invariance(OnnxEncoder(query.variant), q_tok, texts.queries, var_items, k)
    say(f"alone vs in a batch of {BATCH_COMPANIONS + 1}: {identical:.3f} identical top-10 lists, overlap {overlap:.3f}")
    report = GateReport(
        variant=variant,
        n_texts=len(texts.evaluation),
        min_cosine=min_cos,
        mean_cosine=mean_cos,
        worst_text=texts.evaluation[worst],
        n_queries=len(texts.queries),
        n_items=len(texts.catalog),
        top10_agreement=agreement,
        min_cosine_required=MIN_COSINE,
        mean_cosine_required=MEAN_COSINE,
        top10_required=MIN_TOP10_AGREEMENT,
        passed=min_cos >= MIN_COSINE and mean_cos >= MEAN_COSINE and agreement >= MIN_TOP10_AGREEMENT,
        seconds=round(time.perf_counter() - started, 1),
        batch_top10_identical=identical,
        batch_top10_overlap=overlap,
    )
    say(
        f"min cosine {min_cos:.4f}, mean {mean_cos:.4f}, top-10 agreement {agreement:.3f} → "
        f"{'pass' if report.passed else 'FAIL'}"
    )
    return report


def check(report: GateReport, save_to: Path | None = None) -> GateReport:
    """Write ``report`` to ``save_to`` (JSON) first, then raise :class:`PrecisionGateError` if it failed."""
    if save_to is not None:
        Path(save_to).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not report.passed:
        raise PrecisionGateError(
            f"precision variant {report.variant!r} fails its gate: min cosine {report.min_cosine:.4f} "
            f"(need ≥ {report.min_cosine_required}), mean {report.mean_cosine:.4f} (need ≥ "
            f"{report.mean_cosine_required}), top-10 agreement {report.top10_agreement:.3f} (need ≥ "
            f"{report.top10_required}); worst text: {report.worst_text[:120]!r}"
        )
    return report
