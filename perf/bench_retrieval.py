"""Retrieval at catalog scale: faiss IVF (``aisle_server.ann``) against exact inner product.

Synthetic, clustered, L2-normalized vectors stand in for item embeddings (real catalogs cluster by
category; uniform random vectors would make any ANN look bad and any exact scan look good).
Clusters overlap (item noise as large as the spread of the centers), and each query is the mean of
three random catalog items plus noise — an interest vector mixing several categories, as a
shopper's session does — so queries fall between clusters, the hard case for an inverted file.

For each ``nprobe`` it reports p50/p95 latency of retrieving 200 candidates for one query and
recall@200 against exact search, plus the exact scan's own latency — side by side, one run.

    .venv/bin/python -m perf.bench_retrieval --items 1000000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from aisle_server.ann import AnnIndex
from perf.lib.synthetic_catalog import synthetic
from perf.lib.timing import timed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--out", type=Path, default=Path("perf/results"))
    args = parser.parse_args(argv)

    vectors = synthetic(args.items, args.dim, args.clusters)
    rng = np.random.default_rng(1)
    picks = rng.integers(0, args.items, (args.queries, 3))
    noise = 0.5 * rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    queries = vectors[picks].mean(axis=1) + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    n = args.candidates
    exact, exact_ms = timed(lambda q: np.argpartition(-(vectors @ q), n)[:n], queries)
    t = time.perf_counter()
    print(f"building IVF over {args.items} vectors ...", flush=True)
    ann = AnnIndex.build(vectors)
    build_s = time.perf_counter() - t
    nlist = ann.index.nlist
    rows = []
    for nprobe in args.nprobe:
        ann = AnnIndex(ann.index, nprobe)
        found, ms = timed(lambda q: ann.search(q, n), queries)  # noqa: B023 - timed() calls it now
        recall = float(np.mean([len(set(f.tolist()) & set(e.tolist())) / n for f, e in zip(found, exact)]))
        rows.append(
            {
                "nprobe": nprobe,
                "p50_ms": float(np.median(ms)),
                "p95_ms": float(np.percentile(ms, 95)),
                "recall@200": recall,
            }
        )
        print(rows[-1], flush=True)
    result = {
        "items": args.items,
        "dim": args.dim,
        "nlist": nlist,
        "build_s": round(build_s, 1),
        "exact_p50_ms": float(np.median(exact_ms)),
        "ivf": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval_1m.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"IVF-Flat over {args.items:,} × {args.dim} vectors (nlist {nlist}, built in {build_s:.0f} s); "
        f"exact scan p50 {result['exact_p50_ms']:.1f} ms.",
        "",
        "| nprobe | p50 ms | p95 ms | recall@200 vs exact | speed-up vs exact (p50) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['nprobe']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall@200']:.3f} | "
            f"{result['exact_p50_ms'] / r['p50_ms']:.1f}× |"
        )
    (args.out / "retrieval_1m.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
