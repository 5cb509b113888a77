"""The figures a distilled query tower is judged by, each against its teacher, all under ONNX Runtime.

- cosine to the teacher's vector on held-out text (never trained on);
- top-10 agreement: the student's query against the *teacher's* catalog vectors (the index it will
  serve against) vs the teacher's query against the same vectors;
- served search nDCG@10 on the BigBasket proxy (:mod:`.search_eval`: the served ``rank`` code over
  the teacher's item index) for the teacher's query tower and the student's, dense alone (the
  gate: the encoder alone decides) and hybrid at the served default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aisle_server.encoder import OnnxEncoder
from aisle_server.ranking import RankingConfig
from aisle_server.tokenization import TextTokenizer

from .distill import GATE_SYSTEM, SERVED_SYSTEM, judge
from .indexing import encode_texts
from .precision_gate import cosines, top_k, top_k_agreement

EMBED_BATCH = 64


def onnx_vectors(onnx_dir: Path, texts: Sequence[str], cache_dir: Path | None = None) -> np.ndarray:
    """Embeddings of ``texts`` by ``onnx_dir/model.onnx``; cached in ``cache_dir`` by the texts' checksum."""
    key = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    cache = Path(cache_dir) / f"vectors-{key}.npy" if cache_dir is not None else None
    if cache is not None and cache.exists():
        return np.load(cache)
    vectors = encode_texts(
        OnnxEncoder(Path(onnx_dir) / "model.onnx"),
        TextTokenizer.from_directory(onnx_dir),
        list(texts),
        EMBED_BATCH,
        progress=len(texts) > 2000,
        desc=f"embedding with {Path(onnx_dir).name}",
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
    return vectors


def agreement(teacher_dir: Path, student_dir: Path, queries: Sequence[str], items: np.ndarray) -> float:
    """Top-10 agreement of the student's queries with the teacher's over the teacher's item vectors."""
    if not queries:
        return float("nan")
    k = min(10, len(items))
    reference = top_k(onnx_vectors(teacher_dir, queries), items, k)
    return top_k_agreement(reference, top_k(onnx_vectors(student_dir, queries), items, k))


def search_figures(teacher_dir: Path, student_dir: Path, products: Path, workdir: Path) -> dict:
    """nDCG@10 (all queries) of teacher and student query towers on the BigBasket proxy, teacher's index."""
    from aisle_server.lexical import LexicalIndex

    from .catalog import read_catalog
    from .indexing import catalog_index
    from .search_eval import evaluate, write_proxy_catalog

    catalog_csv, queries = write_proxy_catalog(products, Path(workdir) / "bigbasket_catalog.csv")
    catalog = read_catalog(catalog_csv)
    texts = catalog.texts()
    items = onnx_vectors(teacher_dir, texts, cache_dir=teacher_dir)
    index = catalog_index(catalog, items, lexical=LexicalIndex.build(texts))
    systems = {
        GATE_SYSTEM: RankingConfig(search_mode="dense"),
        SERVED_SYSTEM: RankingConfig(search_mode="hybrid", lexical_weight=0.5),
    }
    figures: dict = {"queries": len(queries), "items": len(texts)}
    for name, tower in (("teacher", teacher_dir), ("student", student_dir)):
        results = evaluate(index, queries, tower, systems=systems)
        figures[name] = {system: round(results[system]["all"]["ndcg@10"], 4) for system in systems}
    figures["proxy_query_top10_agreement"] = round(agreement(teacher_dir, student_dir, list(queries), items), 4)
    return figures


def gate(
    kind: str,
    teacher_dir: Path,
    student_dir: Path,
    held_out: Sequence[str],
    held_out_queries: Sequence[str],
    items: np.ndarray,
    products: Path | None,
    workdir: Path,
) -> dict:
    """Every figure of one student against its teacher, and the verdict (:func:`aisle_export.distill.judge`)."""
    cos = cosines(onnx_vectors(teacher_dir, held_out), onnx_vectors(student_dir, held_out))
    worst = int(np.argmin(cos))
    figures: dict = {
        "held_out": {
            "texts": len(held_out),
            "min_cosine": round(float(cos.min()), 4),
            "mean_cosine": round(float(cos.mean()), 4),
            "worst_text": held_out[worst],
        },
        "top10_agreement": {
            "queries": len(held_out_queries),
            "items": len(items),
            "agreement": round(agreement(teacher_dir, student_dir, held_out_queries, items), 4),
        },
    }
    teacher_ndcg = student_ndcg = None
    if products is not None and Path(products).is_file():
        figures["search_bigbasket"] = search = search_figures(teacher_dir, student_dir, Path(products), workdir)
        teacher_ndcg, student_ndcg = search["teacher"][GATE_SYSTEM], search["student"][GATE_SYSTEM]
        search["served_retention"] = round(search["student"][SERVED_SYSTEM] / search["teacher"][SERVED_SYSTEM], 4)
    figures["verdict"] = judge(kind, teacher_ndcg, student_ndcg)
    return figures
