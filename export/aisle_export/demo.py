"""``aisle demo``: export → index MovieLens-100K → serve → search and personalized feeds → stop.

Everything runs on real data: the MovieLens items (titles, genres, release years, rating counts)
and real users' most recent ratings as their session history. The printed latency is the p50 of
single ``recommend`` calls at k=10 over the whole catalog, through the SDK and gRPC.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from aisle import RecClient
from aisle_server.index import INDEX_DIRNAME, CatalogIndex
from aisle_server.tritonserver import TritonServer

from .catalog import read_catalog
from .indexing import write_index
from .movielens import fetch_movielens, load_interactions, user_histories, write_catalog_csv
from .pipeline import REPORT_FILE, export_repository

SEARCHES = ("toy story", "space adventure with aliens", "romantic comedy in new york", "scary haunted house horror")
DEMO_USERS = ("1", "100", "405")
HISTORY_LEN = 5


def _section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def run_demo(workdir: Path = Path("build"), latency_calls: int = 50) -> dict:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    repo = workdir / "model_repository"

    _section("export towers to ONNX")
    t = time.perf_counter()
    report = export_repository(repo)
    timings["export_s"] = time.perf_counter() - t
    parity = {m: r["parity"]["min_cosine"] for m, r in report.items()}
    print(f"parity (min cosine vs PyTorch): {parity}; report: {repo / REPORT_FILE}")

    _section("index MovieLens-100K")
    t = time.perf_counter()
    data_dir = fetch_movielens(workdir / "data")
    catalog_csv = write_catalog_csv(data_dir, workdir / "data" / "movielens_catalog.csv")
    write_index(read_catalog(catalog_csv), repo, source=catalog_csv)
    timings["index_s"] = time.perf_counter() - t

    titles = dict(zip(*(a.tolist() for a in _titles(repo))))
    histories = user_histories(load_interactions(data_dir))

    _section("serve")
    t = time.perf_counter()
    server_log = workdir / "tritonserver.log"
    with TritonServer(repo, log_file=server_log) as server, RecClient(server.grpc_url, timeout_s=10) as client:
        timings["server_start_s"] = time.perf_counter() - t
        print(f"tritonserver ready on {server.grpc_url} in {timings['server_start_s']:.1f}s (log: {server_log})")
        for query in SEARCHES:
            _section(f"search: {query!r}")
            for rec in client.recommend(query=query, k=5):
                print(f"  {rec.score:6.3f}  {titles[rec.item_id]}")
        for user in DEMO_USERS:
            history = histories[user][-HISTORY_LEN:]
            now = history[-1][1] + 60.0
            _section(f"feed for user {user}; recently rated: " + "; ".join(titles[i] for i, _ in history))
            for rec in client.recommend(history=history, k=5, now=now):
                print(f"  {rec.score:6.3f}  {titles[rec.item_id]}")
        _section("cold start (no query, no history): popular and fresh")
        for rec in client.recommend(k=5):
            print(f"  {rec.score:6.3f}  {titles[rec.item_id]}")

        latencies = []
        for i in range(latency_calls):
            t = time.perf_counter()
            client.recommend(query=SEARCHES[i % len(SEARCHES)], k=10)
            latencies.append((time.perf_counter() - t) * 1000)
        timings["recommend_p50_ms"] = statistics.median(latencies)
    timings["total_s"] = time.perf_counter() - started
    _section("summary")
    summary = {**{k: round(v, 2) for k, v in timings.items()}, "parity_min_cosine": parity}
    print(json.dumps(summary, indent=2))
    (workdir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _titles(repo: Path):
    index = CatalogIndex.load(repo / "rerank" / "1" / INDEX_DIRNAME)
    return index.item_ids, index.titles
