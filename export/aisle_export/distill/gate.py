"""The figures a distilled query tower is judged by, each against its teacher, all under ONNX Runtime.

- cosine to the teacher's vector on held-out text (never trained on);
- top-10 agreement: the student's query against the *teacher's* catalog vectors (the index it will
  serve against) vs the teacher's query against the same vectors;
- served search nDCG@10 on the BigBasket proxy (:mod:`aisle_export.judge.search`: the served ``rank`` code over
  the teacher's item index) for the teacher's query tower and the student's, hybrid at the served
  default (the gate: what shoppers get) and dense alone (the encoder alone decides; reported).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aisle_export.build.precision_gate import cosines, top_k, top_k_agreement
from aisle_export.core.encoding import encode_texts
from aisle_export.core.spaces import DENSE_SYSTEM, SERVED_SYSTEM, judge
from aisle_export.data.catalog import read_catalog
from aisle_export.data.movielens import fetch_movielens, title_search_queries, write_catalog_csv
from aisle_export.index.writing import catalog_index
from aisle_export.judge.search import evaluate, write_proxy_catalog
from aisle_server.encoder import OnnxEncoder
from aisle_server.lexical import LexicalIndex
from aisle_server.ranking import RankingConfig
from aisle_server.tokenization import TextTokenizer

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


#: the two served search modes every student is scored in (the gate judges the served default)
SYSTEMS = {
    DENSE_SYSTEM: RankingConfig(search_mode="dense"),
    SERVED_SYSTEM: RankingConfig(search_mode="hybrid", lexical_weight=0.5),
}


def search_ndcg(
    index_dir: Path,
    query_dirs: dict[str, Path],
    catalog_csv: Path,
    queries: dict[str, list[str]],
    systems: dict[str, RankingConfig] = SYSTEMS,
) -> dict[str, dict[str, float]]:
    """nDCG@10 (all queries) of each query tower over the index ``index_dir``'s graph builds of ``catalog_csv``.

    Ranking is the served ``rank`` code (:func:`aisle_export.judge.search.evaluate`), dense alone and
    hybrid; the index vectors are cached beside ``index_dir``.
    """

    catalog = read_catalog(catalog_csv)
    texts = catalog.texts()
    items = onnx_vectors(index_dir, texts, cache_dir=index_dir)
    index = catalog_index(catalog, items, lexical=LexicalIndex.build(texts))
    return {
        name: {
            system: round(r["all"]["ndcg@10"], 4) for system, r in evaluate(index, queries, d, systems=systems).items()
        }
        for name, d in query_dirs.items()
    }


def search_figures(teacher_dir: Path, student_dir: Path, catalog_csv: Path, queries: dict[str, list[str]]) -> dict:
    """nDCG@10 of one search benchmark: the teacher; the student's queries over the teacher's index (a
    query tower); the student on both sides over its own index (an item tower); retention of each."""
    figures: dict = {"queries": len(queries)}
    figures |= search_ndcg(teacher_dir, {"teacher": teacher_dir, "student": student_dir}, catalog_csv, queries)
    figures |= search_ndcg(student_dir, {"student_both_towers": student_dir}, catalog_csv, queries)
    figures["retention"] = {
        side: {system: round(figures[name][system] / max(figures["teacher"][system], 1e-9), 4) for system in SYSTEMS}
        for side, name in (("query", "student"), ("both_towers", "student_both_towers"))
    }
    return figures


def search_benchmarks(products: Path | None, workdir: Path) -> dict[str, tuple[Path, dict[str, list[str]]]]:
    """The gate's search benchmarks: (catalog CSV, queries → relevant ids) of the BigBasket proxy (when
    its data is there) and of MovieLens title search (fetched from the recbole wheel)."""

    workdir = Path(workdir)
    benchmarks = {}
    if products is not None and Path(products).is_file():
        benchmarks["search_bigbasket"] = write_proxy_catalog(Path(products), workdir / "bigbasket_catalog.csv")
    movies = fetch_movielens(workdir / "data")
    benchmarks["search_movielens"] = (
        write_catalog_csv(movies, workdir / "movielens_catalog.csv"),
        title_search_queries(movies),
    )
    return benchmarks


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
    """Every figure of one student against its teacher, and the verdicts (:func:`aisle_export.core.spaces.judge`).

    ``verdict`` judges the student as a query tower (over the teacher's index), ``item_verdict`` as
    an item tower (on both sides, over its own index): the served default's nDCG@10 retention, the
    worst over the benchmarks, with the BigBasket proxy required (without it: not measured, failed).
    """
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
    for name, (catalog_csv, queries) in search_benchmarks(products, workdir).items():
        figures[name] = search_figures(teacher_dir, student_dir, catalog_csv, queries)
    measured = "search_bigbasket" in figures
    for verdict, side in (("verdict", "student"), ("item_verdict", "student_both_towers")):
        worst_name = min(
            (n for n in figures if n.startswith("search_")),
            key=lambda n: figures[n][side][SERVED_SYSTEM] / max(figures[n]["teacher"][SERVED_SYSTEM], 1e-9),
        )
        search = figures[worst_name] if measured else None
        figures[verdict] = judge(
            kind,
            search["teacher"][SERVED_SYSTEM] if search else None,
            search[side][SERVED_SYSTEM] if search else None,
        ) | {"benchmark": worst_name if measured else None}
    return figures
