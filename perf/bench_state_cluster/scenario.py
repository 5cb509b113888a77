"""What ``python -m perf.bench_state_cluster`` runs (see :mod:`perf.bench_state_cluster`): one
redis-server, one local Redis Cluster and three tritonservers, measured in interleaved rounds;
returns the report dict that :mod:`perf.bench_state_cluster.report` renders."""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from perf.bench_realtime.scenario import (
    HISTORY_LEN,
    IngestPhase,
    measure_ingest,
    measure_reads,
    resolve_repo,
    same_answers,
    shopper_histories,
    summarize_pairs,
)
from perf.lib.run_info import machine, stamp
from perf.lib.timing import percentile

#: The stores compared, in the order each round runs them.
STORES = ("single", "cluster", "cluster_wait")
LABELS = {
    "single": "one Redis (redis://, default)",
    "cluster": "Redis Cluster, replicas=0",
    "cluster_wait": "Redis Cluster, replicas=1 (WAIT, default)",
}
PHASE = IngestPhase(64, 4)


def store_urls(single_url: str, cluster_url: str) -> dict[str, str]:
    """The state URL of each store: the single node as ``aisle serve`` runs it, the cluster without
    and with replicated acknowledgement."""
    return {"single": single_url, "cluster": f"{cluster_url}?replicas=0", "cluster_wait": cluster_url}


def timed_ms(call: Callable[[], object], n: int) -> list[float]:
    """Milliseconds of each of ``n`` back-to-back calls."""
    out = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        out.append((time.perf_counter() - began) * 1000.0)
    return out


def measure_ack(client: object, users: Sequence[str], items: Sequence[str], calls: int) -> list[float]:
    """(b) ``track`` of one new event per call, one caller: milliseconds per acknowledged call."""
    rng = random.Random(3)
    now = time.time()
    return timed_ms(
        lambda: client.track(rng.choice(users), rng.choice(items), "view", ts=now),  # type: ignore[attr-defined]
        calls,
    )


def measure_store_calls(state: object, users: Sequence[str], items: Sequence[str], reader: str, calls: int) -> dict:
    """(d) ``ShopperState.store`` of one event and ``recent`` of one shopper, in this process."""
    from aisle_server.state import Event

    rng = random.Random(5)
    now = time.time()
    store = timed_ms(
        lambda: state.store([Event(uuid.uuid4().hex, rng.choice(users), rng.choice(items), "view", now)]),  # type: ignore[attr-defined]
        calls,
    )
    recent = timed_ms(lambda: state.recent([reader], HISTORY_LEN), calls)  # type: ignore[attr-defined]
    return {"store_ms": store, "recent_ms": recent}


def summarize(rounds: Sequence[dict]) -> dict:
    """Per store: medians over rounds (ranges in brackets over rounds)."""

    def spread(values: list[float]) -> dict:
        return {"median": statistics.median(values), "range": [min(values), max(values)]}

    out = {}
    for name in STORES:
        mine = [r[name] for r in rounds]
        out[name] = {
            "label": LABELS[name],
            "events_per_s": spread([r["ingest"]["events_per_s"] for r in mine]),
            "ingest_call_p50_ms": spread([r["ingest"]["result"]["p50_ms"] for r in mine]),
            "ingest_errors": sum(r["ingest"]["result"]["errors"] for r in mine),
            "track_p50_ms": spread([percentile(r["ack_ms"], 50) for r in mine]),
            "track_p95_ms": spread([percentile(r["ack_ms"], 95) for r in mine]),
            "reads": summarize_pairs([r["reads"] for r in mine]),
            "store_p50_ms": spread([percentile(r["direct"]["store_ms"], 50) for r in mine]),
            "recent_p50_ms": spread([percentile(r["direct"]["recent_ms"], 50) for r in mine]),
        }
    wait, plain, single = out["cluster_wait"], out["cluster"], out["single"]
    out["wait_cost"] = {
        "track_p50_added_ms": wait["track_p50_ms"]["median"] - plain["track_p50_ms"]["median"],
        "store_p50_added_ms": wait["store_p50_ms"]["median"] - plain["store_p50_ms"]["median"],
        "events_per_s_ratio": wait["events_per_s"]["median"] / plain["events_per_s"]["median"],
    }
    out["cluster_vs_single"] = {
        "events_per_s_ratio": wait["events_per_s"]["median"] / single["events_per_s"]["median"],
        "added_p50_delta_ms": wait["reads"]["added_p50_ms"] - single["reads"]["added_p50_ms"],
    }
    return out


def _seed(client: object, histories: dict) -> dict:
    for user, history in histories.items():
        client.track_many([{"user_id": user, "item_id": i, "event_type": e, "ts": ts} for i, ts, e in history])  # type: ignore[attr-defined]
    return same_answers(client, histories, time.time())


def run(args: argparse.Namespace, command: str) -> dict:
    """Start the stores and servers, measure every round, return the report dict."""
    from aisle import RecClient
    from aisle_server.redis_cluster import LocalRedisCluster
    from aisle_server.redis_server import RedisServer
    from aisle_server.state import ShopperState
    from aisle_server.tritonserver import TritonServer

    repo, items = resolve_repo(args.repo)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)  # fresh stores each run
    args.workdir.mkdir(parents=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    users = [f"bench-user-{u:06d}" for u in range(args.users)]
    now = time.time()
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        single = stack.enter_context(RedisServer(args.workdir / "single"))
        cluster = stack.enter_context(LocalRedisCluster(args.workdir / "cluster", masters=3, replicas=1))
        urls = store_urls(single.url, cluster.url)
        servers = {
            name: TritonServer(repo, log_file=args.out / f"bench_state_cluster_{name}.log", state_url=url)
            for name, url in urls.items()
        }
        for server in servers.values():
            stack.callback(server.stop)
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(), servers.values()))
        print(f"[{stamp()}] stores and 3 tritonservers up", flush=True)
        clients = {
            name: stack.enter_context(
                RecClient(s.grpc_url, timeout_s=30, retry=None, recommend_cache_size=0, embed_cache_size=0)
            )
            for name, s in servers.items()
        }
        states = {name: ShopperState(url) for name, url in urls.items()}
        histories = {  # shoppers of their own per store: cluster and cluster_wait share the cluster
            name: {
                f"{name}-{user}": h
                for user, h in shopper_histories(rng, items, args.shoppers, HISTORY_LEN, now).items()
            }
            for name in STORES
        }
        checks = {name: _seed(clients[name], histories[name]) for name in STORES}
        readers = {name: sorted(histories[name])[0] for name in STORES}
        for name in STORES:  # warm-up, not kept
            measure_reads(clients[name], histories[name], 30, now)
        rounds = []
        for r in range(args.rounds):
            one = {}
            for name in STORES:
                server = servers[name]
                metrics_url = f"http://{server.host}:{server.metrics_port}/metrics"
                ingest = measure_ingest(server.grpc_url, metrics_url, PHASE, users, items, args.seconds)
                ack = measure_ack(clients[name], users, items, args.calls)
                reads = measure_reads(clients[name], histories[name], args.pairs, now)
                direct = measure_store_calls(states[name], users, items, readers[name], args.calls)
                one[name] = {"ingest": ingest, "ack_ms": ack, "reads": reads, "direct": direct}
                pairs = summarize_pairs([reads])
                print(
                    f"[{stamp()}] round {r} {name}: {ingest['events_per_s']:,.0f} events/s "
                    f"(errors {ingest['result']['errors']}), track p50 {percentile(ack, 50):.2f} ms, "
                    f"added p50 {pairs['added_p50_ms']:+.3f} ms, store p50 {percentile(direct['store_ms'], 50):.3f} ms",
                    flush=True,
                )
            rounds.append(one)
        redis_version = states["single"].redis.info("server").get("redis_version", "?")
    return {
        "command": command,
        "machine": machine(load_before),
        "repo": str(repo),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "setup": {
            "redis_version": redis_version,
            "cluster": "3 masters + 1 replica each, cluster-node-timeout 1000 ms, one machine",
            "shards": 16,
            "replica_timeout_ms": 200,
            "ingest_phase": PHASE.label,
            "calls": args.calls,
            "pairs": args.pairs,
            "shoppers": args.shoppers,
            "same_answers": checks,
        },
        "stores": summarize(rounds),
        "raw_rounds": [
            {
                name: {
                    "events_per_s": one[name]["ingest"]["events_per_s"],
                    "track_p50_ms": percentile(one[name]["ack_ms"], 50),
                    "added_p50_ms": summarize_pairs([one[name]["reads"]])["added_p50_ms"],
                    "store_p50_ms": percentile(one[name]["direct"]["store_ms"], 50),
                    "recent_p50_ms": percentile(one[name]["direct"]["recent_ms"], 50),
                }
                for name in STORES
            }
            for one in rounds
        ],
    }
