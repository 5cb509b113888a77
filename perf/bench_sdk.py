"""SDK benchmark (not a test): micro-batching throughput and cache-hit cost, side by side in one run.

    .venv/bin/python -m perf.bench_sdk [--workload search|feed] [--max-batch 16] [--seconds 6] [--rounds 2]

Starts its own tritonserver over ``--repo`` (exported and indexed first if it has none:
:func:`perf.lib.repository.ensure`), then
alternates unbatched and micro-batched rounds (32 threads, distinct calls, caches off) so both
modes see the same noise on a shared machine, and times cache hits. ``search`` calls carry a text
query (the query tower runs for each); ``feed`` calls carry only a shopper's history (the home
feed). Writes ``perf/results/bench_sdk.{json,md}`` (search) or ``bench_sdk_feed.{json,md}``. Per-model compute time from
Triton's statistics is recorded for each mode, to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aisle import RecClient
from aisle_server.tritonserver import TritonServer
from perf.lib import repository, triton_stats
from perf.lib.run_info import RESULTS

MODELS = ("tokenizer", "query_encoder", "rerank", "recommend")
#: The counters of each model kept with every round (``rounds[i]["per_model"]``).
COUNTERS = ("inferences", "executions", "requests", "compute_infer_ns")


def model_stats(client: RecClient) -> dict[str, dict[str, int]]:
    return triton_stats.snapshot(client, MODELS, COUNTERS)


def make_call(workload: str, n: int, i: int, tag: str) -> tuple[str, list[tuple[str, float]]]:
    """(query, history) of call ``i`` of thread ``n``: distinct per call, so no cache can help.

    ``search``: a distinct text query, no history (the query tower runs per call).
    ``feed``: no query, a distinct 5-item MovieLens history (the home feed: no text to encode).
    """
    if workload == "search":
        return f"{tag} shopper {n} looks for movie {i}", []
    now = 1.7e9
    return "", [(str(1 + (n * 131 + i * 7 + j * 17) % 1682), now - 3600.0 * (5 - j)) for j in range(5)]


def throughput(
    url: str, batched: bool, concurrency: int, seconds: float, tag: str, max_batch: int = 64, workload: str = "search"
) -> dict:
    """Calls/s of ``concurrency`` threads calling ``recommend`` in a loop for ``seconds``."""
    kwargs = {"max_delay_ms": 2.0, "max_batch": max_batch} if batched else {}
    with RecClient(url, timeout_s=30, embed_cache_size=0, **kwargs) as client:
        client.recommend("warm up", k=10)
        rows: list[int] = []
        counts = [0] * concurrency
        stop = threading.Event()
        start_line = threading.Barrier(concurrency + 1)

        def worker(n: int) -> None:
            start_line.wait()
            i = 0
            while not stop.is_set():
                query, history = make_call(workload, n, i, tag)
                client.recommend(query, history, k=10, cache=False)
                rows.append(client.last_call.batch_rows)
                i += 1
            counts[n] = i

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
        for t in threads:
            t.start()
        before = model_stats(client)
        start_line.wait()
        t0 = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        per_model = triton_stats.diff(model_stats(client), before)
    calls = sum(counts)
    enc = per_model["query_encoder"]
    return {
        "calls": calls,
        "seconds": round(elapsed, 3),
        "calls_per_s": round(calls / elapsed, 1),
        "mean_rows_per_triton_request": round(statistics.fmean(rows), 1) if rows else 0,
        "encoder_executions": enc["executions"],
        "encoder_mean_batch": round(enc["inferences"] / enc["executions"], 1) if enc["executions"] else 0,
        "encoder_busy_share": round(triton_stats.busy_ns(per_model["query_encoder"]) / 1e9 / elapsed, 2),
        "per_model": per_model,
    }


def cache_hit_cost(url: str, n: int = 20000) -> dict:
    with RecClient(url, timeout_s=30, recommend_cache_size=1000) as client:
        history = [("50", 1.7e9 - 600), ("181", 1.7e9 - 60)]
        client.recommend("a popular query", history, k=10)
        client.embed(["a popular query"])
        out = {}
        for name, call in (
            ("recommend_hit", lambda: client.recommend("a popular query", history, k=10)),
            ("embed_hit", lambda: client.embed(["a popular query"])),
        ):
            samples = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                call()
                samples.append(time.perf_counter_ns() - t0)
            samples.sort()
            out[name] = {"p50_us": round(samples[n // 2] / 1e3, 1), "p99_us": round(samples[int(n * 0.99)] / 1e3, 1)}
        out["stats"] = {k: v.__dict__ if v else None for k, v in client.cache_stats().items()}
        client.recommend("a popular query", history, k=10, cache=False)
        out["miss_ms"] = round(client.last_call.elapsed_s * 1e3, 2)
        return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_sdk", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=repository.DEMO)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="the micro-batcher's rows per Triton request (16: two batches in flight from 32 callers)",
    )
    parser.add_argument(
        "--workload",
        choices=("search", "feed"),
        default="search",
        help="search: distinct text queries; feed: distinct histories, no query",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    repository.ensure(args.repo)
    args.out.mkdir(parents=True, exist_ok=True)
    rounds = []
    with TritonServer(args.repo, log_file=args.out / "bench_sdk_tritonserver.log") as server:
        for r in range(args.rounds):
            for batched in (False, True):
                result = throughput(
                    server.grpc_url,
                    batched,
                    args.concurrency,
                    args.seconds,
                    f"r{r}{batched}",
                    args.max_batch,
                    args.workload,
                )
                result["mode"] = "micro-batched" if batched else "unbatched"
                print(json.dumps({k: v for k, v in result.items() if k != "per_model"}), flush=True)
                rounds.append(result)
        cache = cache_hit_cost(server.grpc_url)
    unbatched = round(statistics.median(r["calls_per_s"] for r in rounds if r["mode"] == "unbatched"), 1)
    batched = round(statistics.median(r["calls_per_s"] for r in rounds if r["mode"] == "micro-batched"), 1)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "workload": args.workload,
        "concurrency": args.concurrency,
        "max_batch": args.max_batch,
        "unbatched_calls_per_s": unbatched,
        "micro_batched_calls_per_s": batched,
        "speedup": round(batched / unbatched, 2),
        "speedup_target": 3.0,
        "recommend_cache_hit_p50_us": cache["recommend_hit"]["p50_us"],
        "embed_cache_hit_p50_us": cache["embed_hit"]["p50_us"],
        "cache_hit_target_us": 50,
        "cache": cache,
        "rounds": rounds,
    }
    stem = "bench_sdk" if args.workload == "search" else f"bench_sdk_{args.workload}"
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "| what | figure |",
        "| --- | --- |",
        f"| unbatched single `recommend` {args.workload} calls, {args.concurrency} threads | {unbatched} calls/s |",
        f"| micro-batched (max_delay_ms=2, max_batch={args.max_batch}), {args.concurrency} threads | {batched} calls/s |",
        f"| speedup (target ≥ 3×) | {summary['speedup']}× |",
        f"| `recommend` cache hit p50 / p99 (target ≤ 50 µs p50) | {cache['recommend_hit']['p50_us']} / {cache['recommend_hit']['p99_us']} µs |",
        f"| `embed` cache hit p50 / p99 | {cache['embed_hit']['p50_us']} / {cache['embed_hit']['p99_us']} µs |",
        f"| `recommend` miss, one call | {cache['miss_ms']} ms |",
        "",
        "| round | mode | calls/s | rows per Triton request | encoder executions | encoder mean batch | encoder busy share |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(rounds):
        lines.append(
            f"| {i // 2} | {r['mode']} | {r['calls_per_s']} | {r['mean_rows_per_triton_request']} | "
            f"{r['encoder_executions']} | {r['encoder_mean_batch']} | {r['encoder_busy_share']} |"
        )
    (args.out / f"{stem}.md").write_text(
        f"# SDK benchmark, {args.workload} calls ({summary['machine']})\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
