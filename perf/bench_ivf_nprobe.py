"""faiss IVF's ``nprobe`` dial: recall@200 against the exact scan and the time per search, one run.

``aisle index`` builds IVF-Flat above ``EXACT_MAX_ITEMS`` and saves its ``nprobe`` with it,
calibrated on the catalog's own sample queries (``aisle_server.ann.calibrate_nprobe``); this
measures each ``nprobe`` on two catalogs, and what calibration chooses on each:

- a synthetic catalog (``--items``, default 1,000,000; ``perf.lib.synthetic_catalog``, the IVF
  ``perf.bench_rerank_engines`` serves) with two kinds of query vector: ``queries_for``'s mixtures
  of three items (an interest vector between clusters) and ``query_like``: one item moved off the
  catalog until its nearest item is as close as a real search query's is on BigBasket (the median
  top-1 cosine of the proxy's query vectors, measured in the same run);
- BigBasket (27,554 products, below the size where IVF is built: forced here, at its default
  ``nlist``) with the search proxy's real query vectors and the mixed-item ones: how real text
  embeddings spread over IVF's lists.

Each search asks for 200 candidates as ``rank_many`` does (the available items, 5% out of stock
in the synthetic catalog: ``AnnIndex.search`` over-fetches 2·200), one query at a time on one
faiss thread as a served ``rerank`` instance runs it; wall and thread CPU time per search, and
recall@200 against the exact scan of the available items. The queries are split in two:
``nprobe`` is chosen on the even-numbered ones (the smallest reaching :data:`TARGET` +
:data:`MARGIN` on every set), recall is reported on the odd-numbered ones; calibration's choice
(made on neither) is read against both.

    .venv/bin/python -m perf.bench_ivf_nprobe [--items 1000000] [--ivf-dir DIR] [--queries 300]

``--ivf-dir``: the synthetic catalog's IVF saved by an earlier run (of this benchmark or of
``perf.bench_rerank_engines --hnsw-dir``; built and saved when missing). Writes
``perf/results/bench_ivf_nprobe.{md,json,png}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `aisle serve` runs Triton; before numpy loads OpenBLAS

import argparse
import time
from pathlib import Path

import numpy as np

from aisle_server.ann import AnnIndex, calibrate_nprobe
from perf.lib.run_info import ROOT, benchmark_parser, machine, run_benchmark, save_figure, stamp
from perf.lib.synthetic_catalog import item_fields, queries_for, query_like, synthetic
from perf.lib.timing import percentile

RECALL_AT = 200
#: issue #26's floor on candidate recall@200, and the margin the chosen ``nprobe`` keeps above it
TARGET, MARGIN = 0.98, 0.01
NPROBES = (4, 8, 12, 16, 24, 32, 48, 64, 125, 250)
BIGBASKET_NPROBES = (4, 8, 16, 32, 64, 96, 128, 192, 256)
EXACT_CHUNK = 100_000


def exact_top(embeddings: np.ndarray, queries: np.ndarray, available: np.ndarray, n: int = RECALL_AT) -> list[set]:
    """Each query's ``n`` best available rows by inner product: the catalog read in chunks, one
    matrix product per chunk for every query."""
    queries = np.asarray(queries, dtype=np.float32)
    best_rows = np.zeros((len(queries), 0), dtype=np.int64)
    best_scores = np.zeros((len(queries), 0), dtype=np.float32)
    for start in range(0, len(embeddings), EXACT_CHUNK):
        rows = np.arange(start, min(len(embeddings), start + EXACT_CHUNK))
        rows = rows[available[rows]]
        scores = queries @ np.asarray(embeddings[rows], dtype=np.float32).T  # (queries, rows)
        top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        best_rows = np.concatenate([best_rows, rows[top]], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        keep = np.argpartition(-best_scores, n - 1, axis=1)[:, :n]
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
    return [set(row.tolist()) for row in best_rows]


def top1_cosine(embeddings: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each (unit) query's cosine to its nearest item."""
    return np.max(np.asarray(embeddings, dtype=np.float32) @ np.asarray(queries, dtype=np.float32).T, axis=0)


def sweep(
    ann: AnnIndex, available: np.ndarray, sets: dict[str, np.ndarray], truth: dict[str, list[set]], nprobes: tuple
) -> list[dict]:
    """Per ``nprobe`` and query set: wall and CPU ms per search (p50 / p99) and recall@200 on the
    validation (even) and test (odd) queries. The index's own ``nprobe`` is restored after."""
    own = ann.nprobe
    rows = []
    for nprobe in nprobes:
        trial = AnnIndex(ann.index, min(nprobe, ann.index.nlist), ann.kind, ann.refine, ann.vectors)  # type: ignore[attr-defined]
        for name, queries in sets.items():
            trial.search(queries[0], RECALL_AT, available)  # warm-up
            wall, cpu, recall = [], [], []
            for query, exact in zip(queries, truth[name]):
                started, started_cpu = time.perf_counter(), time.thread_time()
                found = trial.search(query, RECALL_AT, available)
                cpu.append((time.thread_time() - started_cpu) * 1000)
                wall.append((time.perf_counter() - started) * 1000)
                recall.append(len(exact.intersection(found.tolist())) / RECALL_AT)
            row = {
                "nprobe": trial.nprobe,
                "nlist": int(ann.index.nlist),  # type: ignore[attr-defined]
                "queries": name,
                "wall_p50": percentile(wall, 50),
                "wall_p99": percentile(wall, 99),
                "cpu_p50": percentile(cpu, 50),
                "cpu_p99": percentile(cpu, 99),
                "recall_validation": float(np.mean(recall[0::2])),
                "recall_test": float(np.mean(recall[1::2])),
                "recall_test_min": float(np.min(recall[1::2])),
                "load": os.getloadavg()[0],
            }
            print(
                f"{stamp()}  nprobe {row['nprobe']:4d}/{row['nlist']} {name:28s}: CPU p50 {row['cpu_p50']:.2f} ms, "
                f"wall p50 {row['wall_p50']:.2f} ms, recall@200 {row['recall_validation']:.4f} (validation) "
                f"{row['recall_test']:.4f} (test)",
                flush=True,
            )
            rows.append(row)
    AnnIndex(ann.index, own, ann.kind, ann.refine, ann.vectors)  # the faiss index's nprobe back to its own
    return rows


def chosen(rows: list[dict]) -> int | None:
    """The smallest ``nprobe`` whose validation recall reaches ``TARGET + MARGIN`` on every query set."""
    by_nprobe: dict[int, list[float]] = {}
    for row in rows:
        by_nprobe.setdefault(row["nprobe"], []).append(row["recall_validation"])
    good = [nprobe for nprobe, recalls in sorted(by_nprobe.items()) if min(recalls) >= TARGET + MARGIN]
    return good[0] if good else None


def calibrated(ann: AnnIndex, embeddings: np.ndarray) -> dict:
    """What ``AnnIndex.build`` saves as ``nprobe`` for this catalog (its calibration, on every core as
    ``aisle index`` runs it), its recall on the calibration's own queries, and the seconds it took."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    nprobe, recall, curve = calibrate_nprobe(ann.index, embeddings)
    seconds = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    print(f"{stamp()}  calibration: nprobe {nprobe} (recall@200 {recall:.4f}) in {seconds:.1f} s", flush=True)
    return {"calibrated": nprobe, "calibration_recall": recall, "calibration_curve": curve, "calibration_s": seconds}


def bigbasket(workdir: Path, count: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """BigBasket's item embeddings (the search proxy's cache) and query vectors: the proxy's real
    queries through the query tower, and as many mixed-item vectors."""
    from aisle_export.distill.gate import onnx_vectors
    from aisle_export.judge.search import DEFAULT_CSV, write_proxy_catalog

    embeddings = np.load(ROOT / "build" / "search_eval" / "embeddings.npy")
    _, queries = write_proxy_catalog(DEFAULT_CSV, workdir / "bigbasket_catalog.csv")
    real = onnx_vectors(ROOT / "build" / "model_repository" / "query_encoder" / "1", list(queries), cache_dir=workdir)
    real = np.asarray(real, dtype=np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    return embeddings, {"real queries (proxy)": real, "mixed-item vectors": queries_for(embeddings, count, seed=7)}


def synthetic_ivf(items: int, saved: Path | None) -> tuple[np.ndarray, AnnIndex]:
    """``perf.bench_rerank_engines``' synthetic catalog and its IVF (loaded from ``saved`` when an
    earlier run left it there, else built on every core and saved)."""
    import faiss

    vectors = synthetic(items, 384, clusters=max(16, items // 1000))
    ann = AnnIndex.load(saved) if saved is not None else None
    if ann is None:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        print(f"{stamp()}  synthetic catalog: faiss IVF …", flush=True)
        ann = AnnIndex.build(vectors, progress=True)
        if saved is not None:
            saved.mkdir(parents=True, exist_ok=True)
            ann.save(saved)
    return vectors, ann


def run(args: argparse.Namespace, command: str) -> dict:
    import faiss

    args.workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    result: dict = {"command": command, "target": TARGET, "margin": MARGIN, "catalogs": {}}

    bb, bb_sets = bigbasket(args.workdir, args.queries)
    cosine = float(np.median(top1_cosine(bb, bb_sets["real queries (proxy)"])))
    result["real_query_top1_cosine"] = cosine
    result["mixed_query_top1_cosine_bigbasket"] = float(np.median(top1_cosine(bb, bb_sets["mixed-item vectors"])))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    bb_ann = AnnIndex.build(bb)
    faiss.omp_set_num_threads(1)  # one query, one thread: as a served rerank instance
    everything = np.ones(len(bb), dtype=bool)
    truth = {name: exact_top(bb, queries, everything) for name, queries in bb_sets.items()}
    rows = sweep(bb_ann, everything, bb_sets, truth, BIGBASKET_NPROBES)
    result["catalogs"]["bigbasket"] = {"items": len(bb), "rows": rows, "chosen": chosen(rows), **calibrated(bb_ann, bb)}
    del bb, bb_ann

    if args.items:
        vectors, ann = synthetic_ivf(args.items, args.ivf_dir)
        faiss.omp_set_num_threads(1)
        available = item_fields(args.items)["in_stock"]
        sets = {
            "mixed-item vectors": queries_for(vectors, args.queries, seed=11),
            "query-like vectors": query_like(vectors, args.queries, cosine, seed=12),
        }
        result["query_like_top1_cosine"] = float(np.median(top1_cosine(vectors, sets["query-like vectors"])))
        print(f"{stamp()}  synthetic catalog: exact top-{RECALL_AT} of {2 * args.queries} queries …", flush=True)
        truth = {name: exact_top(vectors, queries, available) for name, queries in sets.items()}
        rows = sweep(ann, available, sets, truth, NPROBES)
        result["catalogs"]["synthetic"] = {
            "items": args.items,
            "rows": rows,
            "chosen": chosen(rows),
            "index_nprobe": ann.nprobe,
            **calibrated(ann, vectors),
        }
    for label, catalog in result["catalogs"].items():
        print(f"{label}: chosen on validation {catalog['chosen']}, calibrated {catalog['calibrated']}", flush=True)
    result["machine"] = machine(load_before)
    return result


def to_markdown(result: dict) -> str:
    lines = [
        "# faiss IVF's `nprobe`: recall@200 against the exact scan, and the time per search",
        "",
        f"Command: `{result['command']}`. Machine: {result['machine']}.",
        "",
        "One query at a time, one faiss thread (as a served `rerank` instance), 200 candidates from the "
        "available items as `rank_many` asks them; wall and thread CPU ms per search, p50 / p99. Recall@200 "
        "against the exact scan: mean over the even-numbered queries (validation: `nprobe` is chosen on "
        f"them, the smallest reaching {result['target']} + {result['margin']} on every set) and over the "
        "odd-numbered ones (test; their worst query beside it). Median cosine of a query to its nearest item: "
        f"BigBasket real queries {result['real_query_top1_cosine']:.3f}, BigBasket mixed-item vectors "
        f"{result['mixed_query_top1_cosine_bigbasket']:.3f}"
        + (
            f", synthetic query-like vectors {result['query_like_top1_cosine']:.3f}"
            if "query_like_top1_cosine" in result
            else ""
        )
        + ".",
    ]
    for label, catalog in result["catalogs"].items():
        lines += [
            "",
            f"## {label}, {catalog['items']:,} items (nlist {catalog['rows'][0]['nlist']})",
            "",
            f"Chosen on validation: nprobe **{catalog['chosen']}**; calibration (`ann.calibrate_nprobe`, what "
            f"`aisle index` now saves) chose **{catalog['calibrated']}** (recall@200 "
            f"{catalog['calibration_recall']:.4f} on its own sample queries, {catalog['calibration_s']:.1f} s)"
            + (
                f"; the saved index's own, lists / 32 as `aisle index` built it before: {catalog['index_nprobe']}"
                if "index_nprobe" in catalog
                else ""
            )
            + ".",
            "",
            "| nprobe | queries | CPU p50 / p99 ms | wall p50 / p99 ms | recall@200 validation | recall@200 test "
            "(worst query) | load |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['nprobe']} | {r['queries']} | {r['cpu_p50']:.2f} / {r['cpu_p99']:.2f} | "
            f"{r['wall_p50']:.2f} / {r['wall_p99']:.2f} | {r['recall_validation']:.4f} | "
            f"{r['recall_test']:.4f} ({r['recall_test_min']:.3f}) | {r['load']:.1f} |"
            for r in catalog["rows"]
        ]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["catalogs"]), figsize=(6 * len(result["catalogs"]), 4.5), squeeze=False)
    for ax, (label, catalog) in zip(axes[0], result["catalogs"].items()):
        for name in dict.fromkeys(r["queries"] for r in catalog["rows"]):
            rows = [r for r in catalog["rows"] if r["queries"] == name]
            ax.plot([r["cpu_p50"] for r in rows], [r["recall_test"] for r in rows], "o-", label=name)
            for r in rows:
                ax.annotate(str(r["nprobe"]), (r["cpu_p50"], r["recall_test"]), fontsize=7)
        ax.axhline(result["target"], color="grey", linestyle="--", linewidth=1, label=f"target {result['target']}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("CPU ms per search (p50, log scale)")
        ax.set_ylabel("recall@200, test queries")
        ax.set_title(f"{label}, {catalog['items']:,} items (labels: nprobe)")
        ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = benchmark_parser("bench_ivf_nprobe", __doc__)
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic catalog size (0: BigBasket only)")
    parser.add_argument(
        "--ivf-dir", type=Path, help="the synthetic catalog's IVF: loaded if there, else built and saved"
    )
    parser.add_argument("--queries", type=int, default=300, help="query vectors per synthetic set (half validation)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench_ivf_nprobe")
    return run_benchmark("bench_ivf_nprobe", parser, argv, run, to_markdown, plot)


if __name__ == "__main__":
    main()
