"""Soak test (not a unit test): minutes of moderate load, memory and latency sampled, trends fitted.

    .venv/bin/python -m perf.soak [--minutes 10] [--rps 20] [--repo DIR]

Starts its own tritonserver (loopback, free ports) over ``--repo`` (exported and indexed first if it
has no index; default: the benchmarks' own, ``build/perf/model_repository``) and sends ``--rps`` ``recommend`` calls per second from a few threads through the SDK —
searches, personalized feeds, ranking knobs, different ``k`` — with caches off. Every
``--sample-s`` seconds it records the RSS of tritonserver and of its Python-backend stubs, the
window's latency percentiles, and the shared-memory regions the server maps. At the end it fits a
least-squares slope (MB/min, ms/min) over the samples after the warm-up, stops the server and
checks that every region it mapped is gone from /dev/shm. Writes ``perf/results/soak.json`` and
``perf/results/soak.md``; exits 1 on any failed call or leaked region.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from aisle import RecClient
from aisle_server.tritonserver import TritonServer
from perf.lib import repository
from perf.lib.procstats import mapped_shm_regions, shm_regions, slope_per_minute, tree_rss
from perf.lib.run_info import RESULTS

QUERIES = [
    "star wars",
    "romantic comedy in paris",
    "space adventure",
    "animated movie for kids",
    "film noir",
    "horror in a cabin",
    "courtroom drama",
    "heist",
    "musical",
    "war documentary",
    "",
]


def request_for(i: int) -> dict:
    """A varied but deterministic request: search, feed, both, knobs."""
    history = [(str(1 + (i * 7 + j * 13) % 1682), 1.7e9 - 3600.0 * j) for j in range(i % 12)]
    kwargs: dict = {
        "query": f"{QUERIES[i % len(QUERIES)]} {i % 97}" if i % 5 else QUERIES[i % len(QUERIES)],
        "history": history,
        "k": 1 + i % 20,
        "now": 1.7e9,
        "cache": False,
    }
    if not kwargs["query"].strip() and not history:
        kwargs["query"] = "anything"
    if i % 4 == 1:
        kwargs["diversity"] = 0.3
    if i % 6 == 2:
        kwargs["search_mode"] = "dense"
    return kwargs


class Load:
    """``rps`` calls per second spread over ``threads`` threads, each paced on its own schedule."""

    def __init__(self, client: RecClient, rps: float, threads: int) -> None:
        self.client, self.rps, self.threads = client, rps, threads
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []  # this window's, in seconds
        self.sent = 0
        self.ok = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_examples: list[str] = []

    def worker(self, n: int) -> None:
        period = self.threads / self.rps
        next_at = time.monotonic() + n * period / self.threads
        i = n
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            next_at = max(next_at + period, time.monotonic() - period)  # no catch-up storm after a stall
            t0 = time.perf_counter()
            try:
                self.client.recommend(**request_for(i))
                elapsed = time.perf_counter() - t0
                with self.lock:
                    self.sent += 1
                    self.ok += 1
                    self.latencies.append(elapsed)
            except Exception as exc:  # noqa: BLE001 - counted by kind and reported
                with self.lock:
                    self.sent += 1
                    self.errors[type(exc).__name__] += 1
                    if len(self.error_examples) < 5:
                        self.error_examples.append(repr(exc)[:300])
            i += self.threads

    def take_window(self) -> list[float]:
        with self.lock:
            window, self.latencies = self.latencies, []
        return window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="samples before this are not fitted")
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="exported and indexed first if it has no index (default: the benchmarks' own, build/perf/model_repository)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "soak")
    args = parser.parse_args(argv)
    args.repo = repository.cached() if args.repo is None else repository.ensure(args.repo)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    warmup_s = min(args.warmup_s, args.minutes * 60 / 4)

    shm_before = shm_regions()
    log = args.out.with_name(args.out.name + "_tritonserver.log")
    log.unlink(missing_ok=True)
    samples = []
    ours: set[str] = set()
    server = TritonServer(args.repo, log_file=log).start()
    try:
        with RecClient(server.grpc_url, timeout_s=10, embed_cache_size=0) as client:
            for i in range(20):
                client.recommend(**request_for(i))
            load = Load(client, args.rps, args.threads)
            threads = [threading.Thread(target=load.worker, args=(n,), daemon=True) for n in range(args.threads)]
            started = time.monotonic()
            for t in threads:
                t.start()
            end = started + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
                window = load.take_window()
                regions = mapped_shm_regions(server.pid)
                ours |= regions
                rss = tree_rss(server.pid)
                sample = {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_total_mb": round(rss["total"] / 2**20, 1),
                    "rss_server_mb": round(rss["server"] / 2**20, 1),
                    "rss_stubs_mb": round(rss["stubs"] / 2**20, 1),
                    "calls": len(window),
                    "p50_ms": round(float(np.percentile(window, 50)) * 1e3, 2) if window else None,
                    "p99_ms": round(float(np.percentile(window, 99)) * 1e3, 2) if window else None,
                    "shm_regions_mapped": len(regions),
                    "errors_so_far": sum(load.errors.values()),
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
            load.stop.set()
            for t in threads:
                t.join(timeout=30)
            elapsed = time.monotonic() - started
    finally:
        code = server.stop()
    time.sleep(1.0)
    leaked = sorted(ours & shm_regions())
    fitted = [s for s in samples if s["t_s"] >= warmup_s and s["p50_ms"] is not None]
    times = [s["t_s"] for s in fitted]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "minutes": round(elapsed / 60, 2),
        "target_rps": args.rps,
        "achieved_rps": round(load.sent / elapsed, 1),
        "requests_sent": load.sent,
        "ok": load.ok,
        "failures": load.sent - load.ok,
        "errors_by_kind": dict(load.errors),
        "error_examples": load.error_examples,
        "warmup_s_excluded_from_fit": warmup_s,
        "rss_total_mb_first_last": [fitted[0]["rss_total_mb"], fitted[-1]["rss_total_mb"]] if fitted else None,
        "rss_slope_mb_per_min": round(slope_per_minute(times, [s["rss_total_mb"] for s in fitted]), 3),
        "rss_server_slope_mb_per_min": round(slope_per_minute(times, [s["rss_server_mb"] for s in fitted]), 3),
        "rss_stubs_slope_mb_per_min": round(slope_per_minute(times, [s["rss_stubs_mb"] for s in fitted]), 3),
        "p50_slope_ms_per_min": round(slope_per_minute(times, [s["p50_ms"] for s in fitted]), 3),
        "p99_slope_ms_per_min": round(slope_per_minute(times, [s["p99_ms"] for s in fitted]), 3),
        "p50_ms_median_of_windows": float(np.median([s["p50_ms"] for s in fitted])) if fitted else None,
        "p99_ms_median_of_windows": float(np.median([s["p99_ms"] for s in fitted])) if fitted else None,
        "shm_regions_mapped_first_last": [samples[0]["shm_regions_mapped"], samples[-1]["shm_regions_mapped"]]
        if samples
        else None,
        "shm_regions_ours_total": len(ours),
        "shm_regions_leaked_after_stop": leaked,
        "shm_regions_in_dev_shm_before_after": [len(shm_before), len(shm_regions())],
        "tritonserver_exit_code": code,
        "samples": samples,
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0 if result["failures"] == 0 and not leaked else 1


def _markdown(r: dict) -> str:
    lines = [
        f"# Soak: {r['minutes']} min at {r['achieved_rps']} recommend/s ({r['machine']})",
        "",
        f"- requests sent {r['requests_sent']}, failures {r['failures']}, errors by kind {r['errors_by_kind']}",
        f"- RSS (tritonserver + stubs) {r['rss_total_mb_first_last']} MB first/last fitted sample; "
        f"slope {r['rss_slope_mb_per_min']} MB/min (server {r['rss_server_slope_mb_per_min']}, "
        f"stubs {r['rss_stubs_slope_mb_per_min']})",
        f"- latency p50 {r['p50_ms_median_of_windows']} ms, p99 {r['p99_ms_median_of_windows']} ms (median of "
        f"windows); slope p50 {r['p50_slope_ms_per_min']} ms/min, p99 {r['p99_slope_ms_per_min']} ms/min",
        f"- shared-memory regions mapped first/last {r['shm_regions_mapped_first_last']}; "
        f"left in /dev/shm after stop: {len(r['shm_regions_leaked_after_stop'])}",
        "",
        "| t (s) | RSS total MB | server MB | stubs MB | calls | p50 ms | p99 ms | shm regions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in r["samples"]:
        lines.append(
            f"| {s['t_s']} | {s['rss_total_mb']} | {s['rss_server_mb']} | {s['rss_stubs_mb']} | "
            f"{s['calls']} | {s['p50_ms']} | {s['p99_ms']} | {s['shm_regions_mapped']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
