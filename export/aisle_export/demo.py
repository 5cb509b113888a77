"""``aisle demo``: learn from MovieLens-100K → export → index → serve → search and learned feeds → stop.

Everything runs on real data, the way a store would run it on its own log: MovieLens' ratings are
written as an interaction log (ratings as event types) and its movies as a catalog, ``aisle
finetune`` learns from the period before a temporal cut (the transformer user encoder, popularity
and co-occurrence, knobs and the stack to serve, picked on a validation cut), ``aisle export
--finetuned`` serves all of it. Each feed is for a real shopper at the cut, from their last ratings before it,
and marks (✓) the films that shopper went on to rate after the cut — what the learned feed is for.
The printed latency is the p50 of single ``recommend`` calls at k=10 through the SDK and gRPC.

The demo learns on a smaller budget than ``aisle finetune`` (:data:`DEMO_BUDGET`: pretrained
towers, fewer encoder epochs, a coarser knob grid), so a first run takes minutes; ``make eval``
runs the full budget. At the end it judges the served feed, through the server, on every held-out
shopper against the training period's popularity, and says plainly whether it beat it.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from aisle import RecClient
from aisle_export.build.pipeline import REPORT_FILE, export_repository
from aisle_export.data.catalog import read_catalog
from aisle_export.data.movielens import movielens_files
from aisle_export.data.splits import LogData, load_log
from aisle_export.index.writing import write_index
from aisle_export.judge.feed import KnobGrid, against_popularity
from aisle_export.judge.rankers import Ranker
from aisle_export.learn.finetune import finetune_log
from aisle_export.learn.user_encoder import UserEncoderConfig
from aisle_server.index import INDEX_DIRNAME, CatalogIndex
from aisle_server.tritonserver import TritonServer

SEARCHES = ("toy story", "space adventure with aliens", "romantic comedy in new york", "scary haunted house horror")
DEMO_SHOPPERS = 3
HISTORY_LEN = 5
#: The demo's learning budget, against ``aisle finetune``'s defaults (tower fine-tuning, 20 encoder
#: epochs, a 6 × 6 knob grid): the towers stay pretrained (on ML-100K, fine-tuned towers only pay
#: off beside a fully trained user encoder: docs/results.md), the rest is learned, each shorter.
DEMO_BUDGET = {
    "tune_towers": False,
    "encoder": UserEncoderConfig(epochs=4),
    "grid": KnobGrid(popularity=(0.0, 0.5, 1.0, 2.0), cooccurrence=(0.0, 0.1, 0.5)),
}


def _section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def run_demo(workdir: Path = Path("build"), latency_calls: int = 50) -> dict:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    repo = workdir / "model_repository"

    _section("learn from MovieLens-100K's training period (user encoder, log signals, knobs; towers pretrained)")
    t = time.perf_counter()
    interactions, catalog_file = movielens_files(workdir)
    data = load_log(interactions, catalog_file)
    finetuned = workdir / "finetuned"
    learned = finetune_log(data, finetuned, **DEMO_BUDGET)  # type: ignore[arg-type]
    timings["finetune_s"] = time.perf_counter() - t

    print(f"validation nDCG@10 per stack: {learned['choice']['means']}; served: {learned['served']}")

    _section(f"export the stack chosen on validation ({learned['served']}) to ONNX, with the log signals")
    t = time.perf_counter()
    report = export_repository(repo, finetuned=finetuned)
    timings["export_s"] = time.perf_counter() - t
    parity = {m: r["parity"]["min_cosine"] for m, r in report.items() if m in ("query_encoder", "item_encoder")}
    parity["user_encoder"] = learned["user_encoder"]["parity"]["min_cosine"]
    print(f"parity (min cosine vs PyTorch): {parity}; report: {repo / REPORT_FILE}")

    _section("index MovieLens-100K")
    t = time.perf_counter()
    write_index(read_catalog(catalog_file), repo, source=catalog_file)
    timings["index_s"] = time.perf_counter() - t

    titles = dict(zip(*(a.tolist() for a in _titles(repo))))
    split = data.split

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
        hits = 0
        for user in split.users[:DEMO_SHOPPERS]:
            history = [
                (item, ts, event)
                for (item, ts), event in zip(
                    split.histories[user][-HISTORY_LEN:], split.history_events[user][-HISTORY_LEN:]
                )
            ]
            upcoming = set(split.targets[user])
            _section(
                f"feed for shopper {user} at the cut; recently rated: " + "; ".join(titles[i] for i, _, _ in history)
            )
            for rec in client.recommend(history=history, k=5, now=split.cutoff):
                hit = rec.item_id in upcoming
                hits += hit
                print(f"  {rec.score:6.3f}  {'✓' if hit else ' '} {titles[rec.item_id]}")
        print(f"\n✓ = rated by that shopper after the cut: {hits} of {5 * DEMO_SHOPPERS}")
        _section("cold start (no query, no history): popular in the training period")
        for rec in client.recommend(k=5, now=split.cutoff):
            print(f"  {rec.score:6.3f}  {titles[rec.item_id]}")

        latencies = []
        for i in range(latency_calls):
            t = time.perf_counter()
            client.recommend(query=SEARCHES[i % len(SEARCHES)], k=10)
            latencies.append((time.perf_counter() - t) * 1000)
        timings["recommend_p50_ms"] = statistics.median(latencies)
        _section("judge the served feed on the held-out period against popularity")
        judged = against_popularity(data, served_feed(client, data))
        _say_verdict(judged)
    timings["total_s"] = time.perf_counter() - started
    _section("summary")
    summary = {
        **{k: round(v, 2) for k, v in timings.items()},
        "parity_min_cosine": parity,
        "served": learned["served"],
        "against_popularity": judged,
    }
    print(json.dumps(summary, indent=2))
    (workdir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def served_feed(client: RecClient, data: LogData) -> Ranker:
    """Each held-out shopper's feed as the server answers it: their history before the cut, ``now`` = the cut."""
    split = data.split

    def ranked(user: str, k: int) -> list[str]:
        history = [(item, ts, event) for (item, ts), event in zip(split.histories[user], split.history_events[user])]
        return [rec.item_id for rec in client.recommend(history=history, k=k, now=split.cutoff)]

    return ranked


def _say_verdict(judged: dict) -> None:
    low, high = judged["gain"]["ci95"]
    verdict = (
        "beats popularity" if judged["beats_popularity"] else "does NOT beat popularity (95% interval not above 0)"
    )
    print(
        f"{judged['metric']}: served feed {judged['ranker']:.4f}, popularity {judged['popularity']:.4f}, "
        f"gain {judged['gain']['delta']:+.4f} [{low:+.4f}, {high:+.4f}]: the demo's learned feed {verdict}"
        + ("" if judged["beats_popularity"] else "; `make eval` learns with the full budget")
    )


def _titles(repo: Path):
    index = CatalogIndex.load(repo / "rerank" / "1" / INDEX_DIRNAME)
    return index.item_ids, index.titles
