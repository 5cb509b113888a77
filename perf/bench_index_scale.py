"""How the IVF-PQ catalog index grows: build time, build memory, serving memory, latency, recall.

For each catalog size, three fresh processes (so each peak is its own):

1. **build** — writes synthetic clustered, L2-normalized 384-d vectors to ``embeddings.npy`` in
   chunks (never the whole matrix in RAM), builds ``AnnIndex(kind="ivf_pq")`` from the
   memory-mapped file and saves it beside them with synthetic item fields (ids, 6–10-word
   titles, categories, times, popularity, stock): a complete ``<repo>/rerank/1/index``;
2. **truth** — exact top-``candidates`` by inner product for every query, by a chunked scan;
3. **serve** — ``CatalogIndex.load`` exactly as the ``rerank`` model loads it (faiss index in
   RAM; vectors, item fields and lookups memory-mapped), then
   - retrieves ``candidates`` rows per query at each ``nprobe`` × ``serve_refine`` (PQ
     candidates re-scored exactly on the mapped vectors), reporting p50/p95 latency and
     recall@candidates;
   - runs whole ``ranking.rank`` calls at the index's own ``nprobe`` and ``refine`` (what
     ``aisle index --ann-kind ivf_pq`` writes): search (a query embedding) and feed (20 history
     ids with times) — what one ``rerank`` row costs.

Memory is read from ``/proc/self/status``: ``VmHWM`` (peak resident), ``RssAnon`` (heap: the faiss
codes, the popularity prior) and ``RssFile`` (pages of the mapped files that requests touched —
mostly ``embeddings.npy`` for re-scoring; page cache the kernel may drop, not heap, but a dropped
page is a disk read on the next request that needs it). The truth phase reads the whole
``embeddings.npy`` just before, so the serve phase runs on a warm page cache where it fits.
Vectors and queries follow ``perf.bench_retrieval``: clusters overlap and each query mixes
three catalog items, so queries fall between clusters.

    .venv/bin/python -m perf.bench_index_scale --sizes 1000000 3000000 10000000 --workdir /tmp/aisle-scale
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aisle_server.ann import AnnIndex
from aisle_server.index import CatalogIndex, save_item_fields
from aisle_server.ranking import RankRequest, rank
from perf.lib.procstats import status_mib
from perf.lib.run_info import RESULTS, ROOT
from perf.lib.synthetic_catalog import CHUNK, item_fields, queries_for, write_vectors
from perf.lib.timing import timed


def phase_build(args: argparse.Namespace) -> dict:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_vectors(directory / "embeddings.npy", args.items, args.dim, args.clusters)
    generate_s = time.perf_counter() - started
    vectors = np.load(directory / "embeddings.npy", mmap_mode="r")
    started = time.perf_counter()
    ann = AnnIndex.build(vectors, kind="ivf_pq", progress=True)  # the defaults `aisle index --ann-kind ivf_pq` uses
    build_s = time.perf_counter() - started
    ann.save(directory)
    started = time.perf_counter()
    save_item_fields(directory, item_fields(args.items), {"dim": args.dim, "lexical": False, "ann": True})
    fields_s = time.perf_counter() - started
    return {
        "item_fields_s": round(fields_s, 1),
        "generate_s": round(generate_s, 1),
        "build_s": round(build_s, 1),
        "nlist": int(ann.index.nlist),
        "pq_m": int(ann.index.pq.M),
        "ann_file_mib": round((directory / "ann.faiss").stat().st_size / 2**20, 1),
        "embeddings_file_mib": round((directory / "embeddings.npy").stat().st_size / 2**20, 1),
        "build_memory_mib": status_mib(),
    }


def phase_truth(args: argparse.Namespace) -> dict:
    directory = Path(args.dir)
    vectors = np.load(directory / "embeddings.npy", mmap_mode="r")
    queries = queries_for(vectors, args.queries)
    n = args.candidates
    best_scores = np.full((len(queries), n), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), n), dtype=np.int64)
    started = time.perf_counter()
    for start in range(0, len(vectors), CHUNK):
        scores = np.asarray(vectors[start : start + CHUNK]) @ queries.T  # (chunk, q)
        top = np.argpartition(-scores, min(n, len(scores) - 1), axis=0)[:n].T  # (q, n)
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores.T, top, axis=1)], axis=1)
        cand_rows = np.concatenate([best_rows, top + start], axis=1)
        keep = np.argpartition(-cand_scores, n - 1, axis=1)[:, :n]
        best_scores = np.take_along_axis(cand_scores, keep, axis=1)
        best_rows = np.take_along_axis(cand_rows, keep, axis=1)
    np.save(directory / "truth.npy", best_rows)
    np.save(directory / "queries.npy", queries)
    return {"exact_scan_s_per_query": round((time.perf_counter() - started) / len(queries), 3)}


def phase_serve(args: argparse.Namespace) -> dict:
    directory = Path(args.dir)
    before = status_mib()
    started = time.perf_counter()
    index = CatalogIndex.load(directory)
    load_s = time.perf_counter() - started
    after_load = status_mib()
    default = index.ann
    queries = np.load(directory / "queries.npy")
    truth = np.load(directory / "truth.npy")
    rows = []
    for refine in args.serve_refine:
        for nprobe in args.nprobe:
            ann = AnnIndex(default.index, nprobe, default.kind, refine, default.vectors)
            ann.search(queries[0], args.candidates)  # warm-up
            found, ms = timed(lambda q: ann.search(q, args.candidates), queries)  # noqa: B023 - timed() calls it now
            recall = np.mean([len(set(f.tolist()) & set(e.tolist())) / args.candidates for f, e in zip(found, truth)])
            rows.append({"nprobe": nprobe, "refine": refine, **percentiles(ms), "recall": round(float(recall), 3)})
            print(rows[-1], flush=True)
    # the sweep left its last nprobe on the shared faiss index: back to the index's own settings
    index.ann = AnnIndex(default.index, default.nprobe, default.kind, default.refine, default.vectors)
    rank_rows = rank_latency(index, queries)
    return {
        "rank": rank_rows,
        "nprobe": default.nprobe,
        "refine": default.refine,
        "load_s": round(load_s, 2),
        "memory_before_load_mib": before,
        "memory_after_load_mib": after_load,
        "memory_after_queries_mib": status_mib(),
        "queries": rows,
    }


def percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def rank_latency(index: CatalogIndex, queries: np.ndarray, k: int = 10) -> dict:
    """p50/p95 ms of whole ``ranking.rank`` calls: search (query embedding) and feed (20 history ids)."""
    rng = np.random.default_rng(3)
    now = 1.7e9
    requests = {
        "search": [RankRequest(query, [], np.zeros(0), k, now) for query in queries],
        "feed": [
            RankRequest(
                None,
                [str(index.item_ids[r]) for r in rng.integers(0, len(index), 20)],
                now - np.sort(rng.uniform(0, 7 * 86400, 20))[::-1],
                k,
                now,
            )
            for _ in queries
        ],
    }
    out = {}
    for name, batch in requests.items():
        rank(index, batch[0])  # warm-up
        results, ms = timed(lambda request: rank(index, request), batch)
        assert all(len(result.item_ids) == k for result in results), name
        out[name] = percentiles(ms)
        print(name, out[name], flush=True)
    return out


def run_phase(phase: str, args: argparse.Namespace, items: int, directory: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "perf.bench_index_scale",
        "--phase",
        phase,
        "--items",
        str(items),
        "--dir",
        str(directory),
        "--dim",
        str(args.dim),
        "--clusters",
        str(args.clusters),
        "--queries",
        str(args.queries),
        "--candidates",
        str(args.candidates),
        "--nprobe",
        *map(str, args.nprobe),
        "--serve-refine",
        *map(str, args.serve_refine),
    ]
    started = time.perf_counter()
    # from any working directory (its paths are the caller's): the repository root makes ``perf`` importable
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    sys.stderr.write(out.stderr[-2000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_index_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 128])
    parser.add_argument(
        "--serve-refine",
        type=int,
        nargs="+",
        default=[4, 16],
        help="re-scoring factors to sweep (the index itself keeps ann.DEFAULT_REFINE)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/aisle-index-scale"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the generated indexes")
    parser.add_argument("--phase", choices=("build", "truth", "serve"), help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        result = {"build": phase_build, "truth": phase_truth, "serve": phase_serve}[args.phase](args)
        print(json.dumps(result))
        return result

    results = []
    for items in args.sizes:
        directory = args.workdir / f"n{items}"
        shutil.rmtree(directory, ignore_errors=True)
        print(f"== {items:,} items", flush=True)
        row = {"items": items, "dim": args.dim, "build": run_phase("build", args, items, directory)}
        print(json.dumps(row["build"]), flush=True)
        row["truth"] = run_phase("truth", args, items, directory)
        row["serve"] = run_phase("serve", args, items, directory)
        print(json.dumps(row["serve"]), flush=True)
        results.append(row)
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        write_results(results, args)
    return {"sizes": results}


def write_results(results: list[dict], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "note": "2 shared cores; other jobs ran concurrently", "sizes": results}
    (args.out / "index_scale.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [
        f"IVF-PQ (faiss, inner product) over synthetic {args.dim}-d catalogs, {args.candidates} candidates per "
        f"query, PQ candidates re-scored exactly on the memory-mapped vectors (refine ×, swept below); "
        f"{args.queries} queries; recall@{args.candidates} against an exact scan. Machine: 2 shared CPU cores.",
        "",
        "| items | nlist × pq_m | build s | build peak RSS MiB | ann.faiss MiB | embeddings.npy MiB | "
        "replica heap after load (RssAnon) MiB | replica heap after queries MiB | replica peak RSS MiB | load s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b, s = r["build"], r["serve"]
        lines.append(
            f"| {r['items']:,} | {b['nlist']} × {b['pq_m']} | {b['build_s']} | {b['build_memory_mib']['VmHWM']:,} | "
            f"{b['ann_file_mib']:,} | {b['embeddings_file_mib']:,} | {s['memory_after_load_mib']['RssAnon']:,} | "
            f"{s['memory_after_queries_mib']['RssAnon']:,} | "
            f"{s['memory_after_queries_mib']['VmHWM']:,} | {s['load_s']} |"
        )
    lines += ["", "| items | nprobe | refine | p50 ms | p95 ms | recall |", "|---|---|---|---|---|---|"]
    for r in results:
        for q in r["serve"]["queries"]:
            lines.append(
                f"| {r['items']:,} | {q['nprobe']} | {q['refine']} | {q['p50_ms']} | {q['p95_ms']} | {q['recall']} |"
            )
    lines += [
        "",
        "Whole `ranking.rank` calls on the loaded replica index (k=10, 200 candidates, the index's own "
        "nprobe and refine):",
        "",
        "| items | nprobe | refine | search p50 / p95 ms | feed (20 history ids) p50 / p95 ms |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        rk = r["serve"]["rank"]
        lines.append(
            f"| {r['items']:,} | {r['serve']['nprobe']} | {r['serve']['refine']} | "
            f"{rk['search']['p50_ms']} / {rk['search']['p95_ms']} | "
            f"{rk['feed']['p50_ms']} / {rk['feed']['p95_ms']} |"
        )
    (args.out / "index_scale.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
