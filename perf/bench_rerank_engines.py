"""Today's ``rerank`` ranking stage against candidates from top-k engines, side by side in one run.

Today (``exact_retrieval``): every request scans every item's embedding (faiss IVF above 100,000
items, as ``aisle index`` builds it), scores BM25 for every item and builds its filters as a mask
over the whole catalog. The engines: an HNSW graph (``aisle_server.hnsw``), the query terms' BM25
postings (``LexicalIndex.matches``) and filters asked of the candidates (``aisle_server.row_filter``).
The two run on the same index object, alternating in blocks of :data:`BLOCK` batches, so load on
the shared machine falls on both alike.

Per catalog — BigBasket (27,554 products, the search proxy's query texts) and a synthetic catalog
(``--items``, default 1,000,000, ``perf.lib.synthetic_catalog``) — and per scenario (search, feed,
search + history, cold: no query and no history; a batch of 1 and a dynamic batch of 16): ``rank_many``'s time per request, p50
and p99 (what Triton counts as ``rerank``'s compute, less tensor parsing). Then candidate
recall@200 of the graph against the exact scan (the available items' 200 best by inner product), and
quality in the same run: BigBasket hybrid nDCG@10 and MovieLens title search (the served defaults,
``aisle_export.distill.gate.search_benchmarks``) through both paths, with the graph built on both
catalogs (MovieLens' 1,682 items are below ``--dense-engine auto``'s size: forced here), and the typo
set's nDCG@10 beside the clean set's (``aisle_export.judge.search.evaluate_typos``).

    .venv/bin/python -m perf.bench_rerank_engines [--items 1000000] [--hnsw-dir DIR] [--build-graph 16 40]
        [--rounds 200]

``--hnsw-dir``: the synthetic catalog's faiss IVF saved by an earlier run (built when missing, then
saved there) and, when it holds one, an HNSW graph of it (``HnswIndex.save``): above
``HNSW_MAX_ITEMS`` the engines' dense candidates are IVF's, as ``aisle index`` builds it; the graph
is measured beside it. Writes ``perf/results/bench_rerank_engines.{md,json,png}``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `aisle serve` runs Triton; before numpy loads OpenBLAS

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from aisle_contract import RankingConfig
from aisle_export.index.writing import use_hnsw_for
from aisle_server.hnsw import HnswIndex, serve_single_threaded
from aisle_server.index import CatalogIndex
from aisle_server.lexical import LexicalIndex
from aisle_server.ranking import RankRequest, allowed_mask, dense_scored, rank_many
from perf.bench_rerank_profile import BATCHES, SCENARIOS, bigbasket_index, requests_for
from perf.lib.run_info import RESULTS, ROOT, command_line, machine, save_figure, write_report
from perf.lib.synthetic_catalog import catalog_index, item_fields, queries_for, query_like, synthetic, title_queries
from perf.lib.timing import percentile

REPO = ROOT / "build" / "model_repository"
PATHS = {"today (exact scan, BM25 of every item, catalog-wide mask)": True, "top-k engines": False}
RECALL_AT = 200
#: BigBasket real queries' median cosine to their nearest item (perf/results/bench_ivf_nprobe.md):
#: ``query_like``'s distance when this run does not embed the proxy's queries (``--no-quality``)
REAL_QUERY_COSINE = 0.707
#: Batches each path runs in turn: alternating blocks share the load on the machine alike, and a
#: block is long enough that the exact scan streaming the catalog through the caches does not
#: decide the engines' figures (a served index runs one path, not both).
BLOCK = 20


def _load() -> float:
    return float(os.getloadavg()[0])


def with_exact(requests: Sequence[RankRequest], exact: bool) -> list[RankRequest]:
    return [replace(r, config=replace(r.config, exact_retrieval=exact)) for r in requests]


def set_nprobe(index: CatalogIndex, nprobe: int | None) -> None:
    """IVF's ``nprobe`` on the shared faiss index (and the ``AnnIndex`` over it); ``None``: as it is."""
    import faiss

    if nprobe is not None and index.ann is not None:
        index.ann.nprobe = nprobe
        faiss.extract_index_ivf(index.ann.index).nprobe = nprobe


def time_paths(
    index: CatalogIndex, texts: Sequence[str], label: str, rounds: int, nprobes: dict[str, int] | None = None
) -> list[dict]:
    """Per scenario and batch size: ms per request of each path, batches alternating between them.
    ``nprobes``: IVF's ``nprobe`` per path (today's as indexes were built before calibration, the
    engines' as ``aisle index`` builds them now), set before each of the path's blocks."""
    nprobes = nprobes or {}
    out = []
    for scenario in SCENARIOS:
        for size in BATCHES:
            count = rounds if size == 1 else max(2, rounds // 4) * size
            requests = requests_for(index, texts, scenario, count)
            batches = [requests[i : i + size] for i in range(0, len(requests), size)]
            ms: dict[str, list[float]] = {name: [] for name in PATHS}
            cpu: dict[str, list[float]] = {name: [] for name in PATHS}
            for name, exact in PATHS.items():  # warm-up: first touches of the mapped files and graph
                set_nprobe(index, nprobes.get(name))
                rank_many(index, with_exact(batches[0], exact))
            load = [_load()]
            for start in range(0, len(batches), BLOCK):
                for name, exact in PATHS.items():
                    set_nprobe(index, nprobes.get(name))
                    for batch in batches[start : start + BLOCK]:
                        batch_of = with_exact(batch, exact)
                        started, started_cpu = time.perf_counter(), time.thread_time()
                        rank_many(index, batch_of)
                        ms[name].append((time.perf_counter() - started) * 1000 / len(batch))
                        cpu[name].append((time.thread_time() - started_cpu) * 1000 / len(batch))
            load.append(_load())
            row = {"catalog": label, "items": len(index), "scenario": scenario, "batch": size, "load": load}
            if nprobes:
                row["nprobe"] = dict(nprobes)
            for name in PATHS:
                row[name] = {
                    "p50": percentile(ms[name], 50),
                    "p99": percentile(ms[name], 99),
                    "cpu_p50": percentile(cpu[name], 50),
                    "cpu_p99": percentile(cpu[name], 99),
                    "n": len(ms[name]),
                }
            today, new = (row[name]["p50"] for name in PATHS)
            today_cpu, new_cpu = (row[name]["cpu_p50"] for name in PATHS)
            print(
                f"{label:10s} {scenario:17s} batch {size:2d}: today p50 {today:.2f} ms (CPU {today_cpu:.2f}), "
                f"engines p50 {new:.2f} ms (CPU {new_cpu:.2f}); load {load[0]:.1f}-{load[1]:.1f}",
                flush=True,
            )
            out.append(row)
    return out


def candidate_recall(index: CatalogIndex, vectors: np.ndarray, n: int = RECALL_AT) -> float:
    """Mean share of the exact scan's ``n`` best available items that the engines' dense candidates
    hold (the graph's, or IVF's at its current ``nprobe`` where the index has no graph)."""
    config = RankingConfig()
    available = np.flatnonzero(index.available)
    found = []
    for vector in np.asarray(vectors, dtype=np.float32):
        request = RankRequest(vector, [], np.zeros(0), 10, 0.0, config)
        allowed = allowed_mask(index, request, np.zeros(0, dtype=np.int64))
        graph = dense_scored(index, vector, allowed, n, engines=True)[0]
        scores = np.asarray(index.embeddings @ vector, dtype=np.float32)[available]  # no copy of the catalog
        exact = available[np.argpartition(-scores, n - 1)[:n]]
        found.append(len(np.intersect1d(graph, exact)) / n)
    return float(np.mean(found))


def quality(index: CatalogIndex, queries: dict[str, list[str]], query_dir: Path) -> dict[str, float]:
    """Hybrid (the served default) and dense nDCG@10 through each path."""
    from aisle_export.judge.search import evaluate

    systems = {}
    for name, exact in PATHS.items():
        systems[f"hybrid, {name}"] = RankingConfig(exact_retrieval=exact)
        systems[f"dense, {name}"] = RankingConfig(search_mode="dense", exact_retrieval=exact)
    results = evaluate(index, queries, query_dir, systems=systems)
    return {system: round(r["all"]["ndcg@10"], 4) for system, r in results.items()}


def typo_quality(index: CatalogIndex, queries: dict[str, list[str]], query_dir: Path) -> dict:
    from aisle_export.judge import search

    held_out = dict(list(queries.items())[1::2])  # the half the speller's rules were not chosen on
    out = {}
    for name, exact in PATHS.items():
        systems = {"hybrid": RankingConfig(exact_retrieval=exact)}
        saved, search.TYPO_SYSTEMS = search.TYPO_SYSTEMS, systems
        try:
            result = search.evaluate_typos(index, held_out, query_dir)
        finally:
            search.TYPO_SYSTEMS = saved
        out[name] = result["systems"]["hybrid"]
    return out


def movielens_index(workdir: Path) -> tuple[CatalogIndex, dict[str, list[str]]]:
    from aisle_export.data.catalog import read_catalog
    from aisle_export.distill.gate import onnx_vectors, search_benchmarks
    from aisle_export.index.writing import catalog_index

    catalog_csv, queries = search_benchmarks(None, workdir)["search_movielens"]
    catalog = read_catalog(catalog_csv)
    texts = catalog.texts()
    items = onnx_vectors(REPO / "item_encoder" / "1", texts, cache_dir=workdir)
    index = catalog_index(catalog, items, lexical=LexicalIndex.build(texts), hnsw=HnswIndex.build(items))
    return index, queries


SWEEP_STORAGES = ("flat", "fp16", "sq8")
SWEEP_EF = (200, 250, 300, 400, 600)


def graph_sweep(embeddings: np.ndarray, vectors: np.ndarray, n: int = RECALL_AT) -> list[dict]:
    """The graph's settings on one catalog: per vector storage and ``ef_search``, one query's search
    time (p50 / p99, one thread) and recall@``n`` of its ``n`` neighbours against the exact scan —
    how ``aisle_server.hnsw``'s defaults were chosen (the smallest breadth at recall ≥ 0.98)."""
    import faiss

    embeddings = np.asarray(embeddings, dtype=np.float32)
    exact = [set(np.argpartition(-(embeddings @ v), n - 1)[:n].tolist()) for v in vectors]
    rows = []
    for storage in SWEEP_STORAGES:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        started = time.perf_counter()
        graph = HnswIndex.build(embeddings, storage=storage)
        built = time.perf_counter() - started
        serve_single_threaded()
        for ef in SWEEP_EF:
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            ms, recall = [], []
            for v, truth in zip(vectors, exact):
                started = time.perf_counter()
                _, found = graph.index.search(v[None].astype(np.float32), n, params=params)  # type: ignore[attr-defined]
                ms.append((time.perf_counter() - started) * 1000)
                recall.append(len(truth & set(found[0].tolist())) / n)
            row = {
                "storage": storage,
                "ef_search": ef,
                "p50_ms": percentile(ms, 50),
                "p99_ms": percentile(ms, 99),
                "recall": float(np.mean(recall)),
                "build_s": built,
                "load": _load(),
            }
            print(f"graph {storage:4s} ef {ef}: p50 {row['p50_ms']:.2f} ms, recall@{n} {row['recall']:.3f}", flush=True)
            rows.append(row)
    ms = []
    for v in vectors:
        started = time.perf_counter()
        scores = embeddings @ v
        np.argpartition(-scores, n - 1)[:n]
        ms.append((time.perf_counter() - started) * 1000)
    rows.append(
        {
            "storage": "exact scan",
            "ef_search": 0,
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "recall": 1.0,
            "build_s": 0.0,
            "load": _load(),
        }
    )
    return rows


def breadth_sweep(index: CatalogIndex, vectors: dict[str, np.ndarray]) -> list[dict]:
    """The served graph's breadth: per ``ef_search`` of :data:`SWEEP_EF`, candidate recall@200 as
    ``dense_scored`` serves it (the neighbours re-scored exactly) for each set of query vectors, and
    that call's time per query (p50, one thread) — how ``aisle_server.hnsw.DEFAULT_EF_SEARCH`` was
    chosen: the smallest breadth at recall ≥ 0.98 for every set."""
    assert index.hnsw is not None, "the sweep needs the catalog's graph"
    own, rows = index.hnsw.ef_search, []
    request = RankRequest(None, [], np.zeros(0), 10, 0.0)
    allowed = allowed_mask(index, request, np.zeros(0, dtype=np.int64))
    try:
        for ef in SWEEP_EF:
            index.hnsw.ef_search = ef
            row: dict = {"ef_search": ef, "recall": {}, "load": _load()}
            ms = []
            for name, queries in vectors.items():
                row["recall"][name] = candidate_recall(index, queries)
                for vector in np.asarray(queries, dtype=np.float32):
                    started = time.perf_counter()
                    dense_scored(index, vector, allowed, RECALL_AT)
                    ms.append((time.perf_counter() - started) * 1000)
            row["p50_ms"] = percentile(ms, 50)
            print(f"served graph ef {ef}: {row['p50_ms']:.2f} ms, recall@{RECALL_AT} {row['recall']}", flush=True)
            rows.append(row)
    finally:
        index.hnsw.ef_search = own
    return rows


def synthetic_catalog(
    items: int, saved: Path | None, graph_build: tuple[int, int] | None = None
) -> tuple[CatalogIndex, list[str], HnswIndex | None, dict]:
    """``perf.bench_rerank_profile``'s synthetic catalog with faiss IVF (what ``aisle index`` builds
    above ``HNSW_MAX_ITEMS``), and an HNSW graph of it when ``saved`` holds one (the measurement
    behind that limit; ``graph_build``: (M, ef_construction) to build one when ``saved`` has none);
    IVF is loaded from ``saved`` when an earlier run left it there (its build is minutes), else
    built (on every core) and saved. The last item: IVF's ``nprobe`` per path — today's, lists / 32
    as ``aisle index`` built it before calibration, and the engines', calibrated as it builds it
    now (``ann.calibrate_nprobe``, run here on a loaded index) — and the calibration's figures."""
    import faiss

    from aisle_server.ann import AnnIndex, calibrate_nprobe, default_nprobe

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    vectors = synthetic(items, 384, clusters=max(16, items // 1000))
    ann = AnnIndex.load(saved) if saved is not None else None
    if ann is None:
        print("synthetic catalog: faiss IVF …", flush=True)
        ann = AnnIndex.build(vectors)
        if saved is not None:
            saved.mkdir(parents=True, exist_ok=True)
            ann.save(saved)
    started = time.perf_counter()
    nprobe, recall, curve = calibrate_nprobe(ann.index, vectors)
    calibration = {"nprobe": nprobe, "recall": recall, "curve": curve, "seconds": time.perf_counter() - started}
    nlist = int(ann.index.nlist)  # type: ignore[attr-defined]
    today, engines = PATHS
    nprobes = {today: default_nprobe(nlist), engines: nprobe}
    print(f"synthetic catalog: nprobe today {nprobes[today]}, calibrated {nprobe} of {nlist} lists", flush=True)
    graph = HnswIndex.load(saved) if saved is not None else None
    if graph is None and graph_build is not None:
        print(f"synthetic catalog: HNSW graph (M, ef_construction = {graph_build}) …", flush=True)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        graph = HnswIndex.build(vectors, m=graph_build[0], ef_construction=graph_build[1], progress=True)
        if saved is not None:
            graph.save(saved)
    serve_single_threaded()
    fields = item_fields(items)
    print(f"synthetic catalog: BM25 over {items:,} titles …", flush=True)
    index = catalog_index(vectors, fields, ann=ann, hnsw=graph if use_hnsw_for(items, "auto") else None)
    words = title_queries(fields["titles"])
    return index, words, graph, {"paths": nprobes, "nlist": nlist, "calibration": calibration}


def graph_at_scale(index: CatalogIndex, graph: HnswIndex, vectors: np.ndarray) -> dict:
    """A graph of a catalog above ``HNSW_MAX_ITEMS``: its candidate recall@200 and search time
    beside IVF's, through ``dense_scored`` (the engines' path)."""
    out: dict = {}
    for name, hnsw in (("faiss IVF (as served)", None), ("HNSW graph", graph)):
        trial = replace(index, hnsw=hnsw)
        request = RankRequest(None, [], np.zeros(0), 10, 0.0)
        allowed = allowed_mask(trial, request, np.zeros(0, dtype=np.int64))
        ms = []
        for vector in np.asarray(vectors, dtype=np.float32):
            started = time.perf_counter()
            dense_scored(trial, vector, allowed, RECALL_AT)
            ms.append((time.perf_counter() - started) * 1000)
        out[name] = {"recall": candidate_recall(trial, vectors), "p50_ms": percentile(ms, 50), "load": _load()}
    params = graph.index.hnsw  # type: ignore[attr-defined]  # faiss's HNSW struct
    out["graph"] = {
        "M": int(params.nb_neighbors(1)),
        "ef_construction": int(params.efConstruction),
        "ef_search": graph.ef_search,
        "storage": graph.storage,
    }
    return out


def to_markdown(results: dict) -> str:
    names = list(PATHS)
    lines = [
        "# `rerank`'s ranking stage: today's exact scan against the top-k engines",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']}.",
        "",
        "Milliseconds of `ranking.rank_many` per request, p50 / p99: wall clock, and the thread's CPU "
        "time (on a loaded machine a batch's wall time includes waiting for a core: the CPU time is the "
        "work), the two paths alternating in blocks "
        f"of {BLOCK} batches on one index; the 1-minute load average before and after each row.",
        "",
        "| catalog | items | scenario | batch | today wall | engines wall | today CPU | engines CPU | "
        "speed-up (wall / CPU p50) | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["timings"]:
        a, b = row[names[0]], row[names[1]]
        lines.append(
            f"| {row['catalog']} | {row['items']:,} | {row['scenario']} | {row['batch']} | "
            f"{a['p50']:.2f} / {a['p99']:.2f} | {b['p50']:.2f} / {b['p99']:.2f} | "
            f"{a['cpu_p50']:.2f} / {a['cpu_p99']:.2f} | {b['cpu_p50']:.2f} / {b['cpu_p99']:.2f} | "
            f"{a['p50'] / b['p50']:.1f}× / {a['cpu_p50'] / b['cpu_p50']:.1f}× | "
            f"{row['load'][0]:.1f}–{row['load'][1]:.1f} |"
        )
    if results.get("graph_at_scale"):
        scale = results["graph_at_scale"]
        lines += [
            "",
            f"The synthetic catalog's dense candidates from IVF and from an HNSW graph ({scale['graph']}):",
            "",
        ]
        lines += [
            f"- {name}: recall@200 {row['recall']:.3f}, p50 {row['p50_ms']:.2f} ms (load {row['load']:.1f})"
            for name, row in scale.items()
            if name != "graph"
        ]
    if results.get("nprobe"):
        ivf = results["nprobe"]
        today, engines = (ivf["paths"][name] for name in names)
        cal = ivf["calibration"]
        lines += [
            "",
            f"The synthetic catalog's IVF ({ivf['nlist']} lists) answers both paths' dense candidates: today's probes "
            f"{today} lists (lists / 32, as `aisle index` built it before), the engines' {engines} (calibrated as "
            f"`aisle index` builds it now: the smallest step reaching recall@200 {cal['recall']:.4f} ≥ 0.99 on the "
            f"catalog's own sample queries, {cal['seconds']:.1f} s on this loaded index).",
        ]
    lines += [
        "",
        "Candidate recall@200 of the dense candidates (the graph below 100,000 items, IVF above) against the "
        "exact scan (available items):",
        "",
    ]
    lines += [f"- {label}: **{value:.4f}**" for label, value in results["recall"].items()]
    if results.get("sweep"):
        lines += [
            "",
            "The graph's settings on BigBasket (mixed-item query vectors; one query, one thread): "
            "the search alone, and recall@200 of its 200 neighbours against the exact scan:",
            "",
            "| vectors | ef_search | p50 / p99 ms | recall@200 | build s | load |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['storage']} | {r['ef_search'] or '—'} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['recall']:.3f} | "
            f"{r['build_s']:.0f} | {r['load']:.1f} |"
            for r in results["sweep"]
        ]
    if results.get("breadth"):
        sets = list(results["breadth"][0]["recall"])
        lines += [
            "",
            "The served graph's breadth on BigBasket (`sq8`, M 32): candidate recall@200 as `dense_scored` "
            "serves it (the neighbours re-scored exactly) against the exact scan, and that call's p50 per query "
            "(one thread). `aisle index` builds with the smallest breadth at recall ≥ 0.98 for every set:",
            "",
            "| ef_search | " + " | ".join(f"recall@200, {name}" for name in sets) + " | p50 ms | load |",
            "|---|" + "---|" * len(sets) + "---|---|",
        ]
        lines += [
            f"| {r['ef_search']} | "
            + " | ".join(f"{r['recall'][name]:.4f}" for name in sets)
            + f" | {r['p50_ms']:.2f} | {r['load']:.1f} |"
            for r in results["breadth"]
        ]
    if results.get("quality"):
        lines += ["", "nDCG@10 through each path (served defaults; `dense` for reference):", ""]
        lines += ["| benchmark | system | nDCG@10 |", "|---|---|---|"]
        for bench, systems in results["quality"].items():
            lines += [f"| {bench} | {system} | {value:.4f} |" for system, value in systems.items()]
    if results.get("typos"):
        lines += ["", "BigBasket typo set (odd-numbered proxy queries, one edit in one word), hybrid nDCG@10:", ""]
        columns = ["clean, tolerance off", "clean, tolerance on", "typos, tolerance off", "typos, tolerance on"]
        lines += ["| path | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for name, row in results["typos"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["timings"]
    names = list(PATHS)
    labels = [f"{r['catalog']}\n{r['scenario']}\nbatch {r['batch']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(rows)), 4.5))
    for i, name in enumerate(names):
        ax.bar(x + (i - 0.5) * 0.4, [r[name]["p50"] for r in rows], 0.4, label=name)
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("ms per request (p50, log scale)")
    ax.set_title("rerank's ranking stage: exact scan vs top-k engines")
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic catalog size (0: skip it)")
    parser.add_argument(
        "--hnsw-dir",
        type=Path,
        help="the synthetic catalog's IVF (loaded if there, else saved there) and a graph of it to measure",
    )
    parser.add_argument("--rounds", type=int, default=200, help="requests per scenario at batch 1")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "bench_rerank_engines")
    parser.add_argument("--no-quality", action="store_true", help="timings and recall only")
    parser.add_argument(
        "--build-graph",
        type=int,
        nargs=2,
        metavar=("M", "EF_CONSTRUCTION"),
        help="build an HNSW graph of the synthetic catalog when --hnsw-dir has none (saved there), to measure "
        "beside IVF; the results' graph: --build-graph 16 40 (13 minutes on the loaded 2-core machine)",
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the graph settings sweep on BigBasket")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    shown = sys.argv[1:] if argv is None else argv
    results: dict = {"command": command_line("perf.bench_rerank_engines", shown), "timings": [], "recall": {}}
    load_before = os.getloadavg()

    embeddings = ROOT / "build" / "search_eval" / "embeddings.npy"
    bigbasket, texts = bigbasket_index(embeddings)
    bigbasket.hnsw = HnswIndex.build(np.asarray(bigbasket.embeddings, dtype=np.float32))
    serve_single_threaded()  # as a served index loads (HnswIndex.load); the builds above used every core
    results["timings"] += time_paths(bigbasket, texts, "bigbasket", args.rounds)
    if not args.no_quality:
        from aisle_export.distill.gate import onnx_vectors
        from aisle_export.judge.search import DEFAULT_CSV, write_proxy_catalog

        _, queries = write_proxy_catalog(DEFAULT_CSV, args.workdir / "bigbasket_catalog.csv")
        query_dir = REPO / "query_encoder" / "1"
        vectors = onnx_vectors(query_dir, list(queries), cache_dir=args.workdir)
        results["recall"]["bigbasket, the proxy's query vectors"] = candidate_recall(bigbasket, vectors)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        results["real_query_cosine"] = float(np.median(np.max(bigbasket.embeddings @ unit.T, axis=0)))
        results["quality"] = {"BigBasket proxy": quality(bigbasket, queries, query_dir)}
        results["typos"] = typo_quality(bigbasket, queries, query_dir)
        movies, movie_queries = movielens_index(args.workdir)
        results["quality"]["MovieLens titles (graph forced on)"] = quality(movies, movie_queries, query_dir)
    mixed = queries_for(bigbasket.embeddings, 300, seed=3)
    results["recall"]["bigbasket, mixed-item vectors"] = candidate_recall(bigbasket, mixed)
    if not args.no_sweep:
        sets = {"mixed-item vectors": mixed}
        if not args.no_quality:
            sets = {"the proxy's query vectors": vectors, **sets}
        results["breadth"] = breadth_sweep(bigbasket, sets)
        results["sweep"] = graph_sweep(bigbasket.embeddings, mixed)
    del bigbasket

    if args.items:
        index, words, graph, ivf = synthetic_catalog(args.items, args.hnsw_dir, args.build_graph)
        results["nprobe"] = ivf
        results["timings"] += time_paths(index, words, "synthetic", args.rounds, ivf["paths"])
        vectors = queries_for(index.embeddings, 100, seed=3)
        like = query_like(index.embeddings, 100, results.get("real_query_cosine", REAL_QUERY_COSINE), seed=4)
        for name, nprobe in ivf["paths"].items():
            set_nprobe(index, nprobe)
            path = f"IVF nprobe {nprobe}, {name.split(' (')[0]}"
            results["recall"][f"synthetic {args.items:,}, mixed-item vectors, {path}"] = candidate_recall(
                index, vectors
            )
            results["recall"][f"synthetic {args.items:,}, query-like vectors, {path}"] = candidate_recall(index, like)
        if graph is not None:
            results["graph_at_scale"] = graph_at_scale(index, graph, vectors)
    results["machine"] = machine(load_before)
    for label, value in results["recall"].items():
        print(f"recall@{RECALL_AT} {label}: {value:.4f}")
    write_report(args.out, "bench_rerank_engines", results, to_markdown, plot)
    return results


if __name__ == "__main__":
    main()
