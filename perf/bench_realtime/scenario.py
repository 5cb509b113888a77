"""What ``python -m perf.bench_realtime`` runs (see :mod:`perf.bench_realtime`): ingest, state reads
and catalog-update visibility against one tritonserver and one redis-server; returns the report dict
that :mod:`perf.bench_realtime.report` renders."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from perf.lib import loadgen, repository
from perf.lib.run_info import machine, stamp
from perf.lib.timing import percentile

EVENTS_PER_S_TARGET = 5000.0
ADDED_P50_TARGET_MS = 1.0
VISIBILITY_P99_TARGET_MS = 1000.0
EVENT_TYPES = ("view", "view", "view", "click", "click", "add_to_cart", "purchase")
HISTORY_LEN = 20
K = 10


@dataclass(frozen=True)
class IngestPhase:
    """``threads`` closed-loop callers, each ``track_many`` call ``batch`` new events."""

    batch: int
    threads: int

    @property
    def name(self) -> str:
        return f"b{self.batch}_t{self.threads}"

    @property
    def label(self) -> str:
        return f"{self.batch} events per call, {self.threads} threads"


INGEST_PHASES = (IngestPhase(64, 4), IngestPhase(64, 8), IngestPhase(256, 4))


# --------------------------------------------------------------------------- events


def event_batch(
    rng: random.Random,
    users: Sequence[str],
    items: Sequence[str],
    size: int,
    now: float,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[dict]:
    """``size`` new events as ``track_many`` takes them: random shoppers and items, a mix of event
    types weighted like a shop's (mostly views), timestamps in the minute before ``now``, fresh ids."""
    if size < 1 or not users or not items:
        raise ValueError("need size >= 1, users and items")
    return [
        {
            "user_id": rng.choice(users),
            "item_id": rng.choice(items),
            "event_type": rng.choice(EVENT_TYPES),
            "ts": now - rng.uniform(0.0, 60.0),
            "event_id": new_id(),
        }
        for _ in range(size)
    ]


#: (b)'s event type: weight 1 (``DEFAULT_EVENT_WEIGHTS``), as a request's own history items weigh, so
#: ``user_id=`` and ``history=`` must rank alike (checked); other types would cost the same.
READ_EVENT_TYPE = "purchase"


def shopper_histories(
    rng: random.Random, items: Sequence[str], shoppers: int, length: int, now: float
) -> dict[str, list[tuple[str, float, str]]]:
    """``shoppers`` histories of ``length`` distinct items, oldest first, the newest a minute before
    ``now``: what (b) stores for ``user_id`` and passes as ``history``."""
    if length > len(items):
        raise ValueError(f"history of {length} items from a catalog of {len(items)}")
    out = {}
    for s in range(shoppers):
        picked = rng.sample(list(items), length)
        out[f"bench-shopper-{s:05d}"] = [
            (item, now - 60.0 - 30.0 * (length - 1 - i), READ_EVENT_TYPE) for i, item in enumerate(picked)
        ]
    return out


def pair_order(i: int) -> tuple[str, str]:
    """Which side goes first in pair ``i``: A-B, then B-A, so neither always follows the other."""
    return ("user_id", "history") if i % 2 == 0 else ("history", "user_id")


# --------------------------------------------------------------------------- summary


def summarize_ingest(runs: Sequence[dict]) -> dict[str, dict]:
    """Per phase: medians over rounds of events/s (acknowledged, and accepted by the server's counter)."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["phase"] for r in runs):
        mine = [r for r in runs if r["phase"] == name]
        events = [r["events_per_s"] for r in mine]
        out[name] = {
            "rounds": len(mine),
            "events_per_s": statistics.median(events),
            "events_per_s_range": [min(events), max(events)],
            "accepted_per_s": statistics.median(r["accepted_per_s"] for r in mine),
            "calls_per_s": statistics.median(r["result"]["throughput"] for r in mine),
            "call_p50_ms": statistics.median(r["result"]["p50_ms"] for r in mine),
            "call_p95_ms": statistics.median(r["result"]["p95_ms"] for r in mine),
            "errors": sum(r["result"]["errors"] for r in mine),
        }
    return out


def summarize_pairs(rounds: Sequence[Mapping[str, Sequence[float]]]) -> dict:
    """(b): per round, p50 of each side (ms) and their difference; the median of paired differences.

    ``rounds[r] = {"user_id": [ms, ...], "history": [ms, ...]}``, the i-th of each side one pair.
    """
    if not rounds:
        raise ValueError("no rounds")
    per_round = []
    for r in rounds:
        a, b = list(r["user_id"]), list(r["history"])
        if not a or len(a) != len(b):
            raise ValueError("each round needs the same number (> 0) of calls per side")
        p50_a, p50_b = percentile(a, 50), percentile(b, 50)
        per_round.append(
            {
                "pairs": len(a),
                "user_id_p50_ms": p50_a,
                "history_p50_ms": p50_b,
                "user_id_p95_ms": percentile(a, 95),
                "history_p95_ms": percentile(b, 95),
                "added_p50_ms": p50_a - p50_b,
                "paired_median_ms": statistics.median(x - y for x, y in zip(a, b)),
                "ratio_p50": p50_a / p50_b if p50_b else float("nan"),
            }
        )
    added = [r["added_p50_ms"] for r in per_round]
    med = lambda key: statistics.median(r[key] for r in per_round)
    return {
        "rounds": per_round,
        "user_id_p50_ms": med("user_id_p50_ms"),
        "history_p50_ms": med("history_p50_ms"),
        "added_p50_ms": statistics.median(added),
        "added_p50_ms_range": [min(added), max(added)],
        "paired_median_ms": med("paired_median_ms"),
        "ratio_p50": med("ratio_p50"),
    }


def verdict(met: bool) -> str:
    return "met" if met else "**not met**"


# --------------------------------------------------------------------------- servers and repository

#: What ``--repo`` must hold: the event and catalog models, and an index.
REQUIRED = ("track/config.pbtxt", "catalog/config.pbtxt", "rerank/1/index/manifest.json")


def resolve_repo(repo: Path | None) -> tuple[Path, list[str]]:
    """``repo`` (which must have ``track``, ``catalog`` and an index), or the benchmarks' own
    (:func:`perf.lib.repository.cached`); and the item ids of MovieLens-100K's catalog."""
    from aisle_export.data.catalog import read_catalog

    items = [str(i) for i in read_catalog(repository.movielens_catalog()).item_ids]
    if repo is None:
        return repository.cached(), items
    if repository.missing(repo, REQUIRED):
        raise SystemExit(f"error: {repo} has no track or catalog model or no index: `aisle export` + `aisle index` it")
    return repo, items


def scrape(metrics_url: str) -> dict[str, float]:
    """Aisle's series on the metrics endpoint, keyed ``name{labels}`` as written there."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:  # loopback URL of the server we started
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("aisle_"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def series(values: Mapping[str, float], name: str) -> float:
    """The sum over label sets of ``name`` in a ``scrape``."""
    return sum(v for k, v in values.items() if k.split("{", 1)[0] == name)


# --------------------------------------------------------------------------- (a) ingest


def measure_ingest(
    url: str, metrics_url: str, phase: IngestPhase, users: Sequence[str], items: Sequence[str], seconds: float
) -> dict:
    """One ``loadgen.run`` of ``phase`` on one client shared by its threads (one channel, as a backend has)."""
    from aisle import RecClient

    now = time.time()
    local = threading.local()

    with RecClient(url, timeout_s=30, retry=None) as client:

        def make_call() -> Callable[[dict], None]:
            def call(_request: dict) -> None:
                rng = getattr(local, "rng", None) or random.Random(threading.get_ident())
                local.rng = rng
                tracked = client.track_many(event_batch(rng, users, items, phase.batch, now))
                if len(tracked) != phase.batch:
                    raise RuntimeError(f"{len(tracked)} results for {phase.batch} events")

            return call

        before = scrape(metrics_url)
        began = time.perf_counter()
        result = loadgen.run(make_call, [{}], phase.threads, duration_s=seconds)
        elapsed = time.perf_counter() - began
        after = scrape(metrics_url)
    accepted = series(after, "aisle_events_accepted_total") - series(before, "aisle_events_accepted_total")
    return {
        "phase": phase.name,
        "result": result.to_dict(),
        "events_per_s": result.throughput * phase.batch,
        # the server's counter covers the whole run (warm-up and the last calls too): over its whole time
        "accepted_per_s": accepted / elapsed,
    }


# --------------------------------------------------------------------------- (b) state reads


def measure_reads(client: object, histories: Mapping[str, Sequence[tuple]], pairs: int, now: float) -> dict:
    """``pairs`` interleaved pairs over the shoppers, cycled: per side, milliseconds per call."""
    users = sorted(histories)
    times: dict[str, list[float]] = {"user_id": [], "history": []}
    for i in range(pairs):
        user = users[i % len(users)]
        for side in pair_order(i):
            kwargs = {"user_id": user} if side == "user_id" else {"history": list(histories[user])}
            began = time.perf_counter()
            client.recommend(k=K, now=now, cache=False, **kwargs)  # type: ignore[attr-defined]
            times[side].append((time.perf_counter() - began) * 1000.0)
    return times


def same_answers(client: object, histories: Mapping[str, Sequence[tuple]], now: float, n: int = 20) -> dict:
    """Both ways give the same top ``K`` (the stored events are read, and are the same events)."""
    sample = sorted(histories)[:n]
    same = 0
    for user in sample:
        a = [r.item_id for r in client.recommend(user_id=user, k=K, now=now, cache=False)]  # type: ignore[attr-defined]
        b = [r.item_id for r in client.recommend(history=list(histories[user]), k=K, now=now, cache=False)]  # type: ignore[attr-defined]
        same += a == b
    return {"sampled": len(sample), "same": same}


# --------------------------------------------------------------------------- (c) catalog update visibility

#: Words for live items' titles: nonsense, so only the item itself matches its title query.
TITLE_WORDS = ("zorblax", "quibbit", "flangor", "mizzle", "trundok", "wobbin", "glaxo", "pernish", "snurf", "blivet")


def visibility_summary(delays: Mapping[str, Sequence[float]]) -> dict:
    """p50/p99/max (ms) per kind of change and over all, against the p99 ≤ 1 s target."""

    def stats(values: Sequence[float]) -> dict:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return {"n": len(ordered), "p50_ms": statistics.median(ordered), "p99_ms": p99, "max_ms": ordered[-1]}

    every = [d for values in delays.values() for d in values]
    counts = ", ".join(f"{kind} {len(values)}" for kind, values in delays.items() if values)
    kinds = {kind: stats(values) for kind, values in delays.items() if values}
    total = stats(every)
    return {
        "kinds": kinds,
        "all": total,
        "summary": f"p50 {total['p50_ms']:.0f} ms, p99 {total['p99_ms']:.0f} ms, max {total['max_ms']:.0f} ms over "
        f"{total['n']} changes ({counts}); target p99 ≤ "
        f"{VISIBILITY_P99_TARGET_MS:,.0f} ms: {verdict(total['p99_ms'] <= VISIBILITY_P99_TARGET_MS)}",
    }


def measure_catalog_visibility(url: str, metrics_url: str, repo: Path, args: argparse.Namespace) -> dict | None:
    """(c) From ``update_items`` returning to the first ``recommend`` that shows the change.

    Each cycle inserts an item with a unique nonsense title (visible: it is the top result for its
    title), then takes it out of stock or hides it, alternately (visible: it is no longer there).
    One caller polls ``recommend(title, k=1)`` back to back (no sleep: the resolution is one call).
    A random pause before each change keeps the changes out of step with ``rerank``'s poll (sent
    right after a poll found the last one, every change would wait almost a whole interval).
    """
    from aisle import RecClient

    rng = random.Random(11)
    delays: dict[str, list[float]] = {"insert": [], "out_of_stock": [], "hide": []}
    acks: list[float] = []

    def wait(title: str, shown: Callable[[str], bool], since: float) -> float:
        deadline = since + 30.0
        while time.perf_counter() < deadline:
            top = client.recommend(title, k=1, cache=False)[0].item_id
            if shown(top):
                return (time.perf_counter() - since) * 1000.0
        raise RuntimeError(f"change for {title!r} not visible after 30 s")

    with RecClient(url, timeout_s=30, retry=None, recommend_cache_size=0, embed_cache_size=0) as client:
        for i in range(args.changes):
            item = f"bench-live-{uuid.uuid4().hex[:10]}"
            title = " ".join(rng.sample(TITLE_WORDS, 4)) + f" {item}"
            time.sleep(rng.uniform(0.0, 0.25))
            sent = time.perf_counter()
            client.update_items([{"item_id": item, "title": title, "category": "bench"}])
            acked = time.perf_counter()
            acks.append((acked - sent) * 1000.0)
            delays["insert"].append(wait(title, lambda top: top == item, acked))  # noqa: B023 - called at once
            kind, fields = ("out_of_stock", {"in_stock": False}) if i % 2 == 0 else ("hide", {"hidden": True})
            time.sleep(rng.uniform(0.0, 0.25))
            client.update_items([{"item_id": item, **fields}])
            acked = time.perf_counter()
            delays[kind].append(wait(title, lambda top: top != item, acked))  # noqa: B023 - called at once
            if (i + 1) % 10 == 0:
                print(f"[{time.strftime('%H:%M:%S')}] (c) {i + 1}/{args.changes} cycles", flush=True)
    return {**visibility_summary(delays), "delays_ms": delays, "update_call_p50_ms": statistics.median(acks)}


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, command: str) -> dict:
    """(a), (b) and (c) on one tritonserver and one redis-server; the report dict (``command``: as typed)."""
    from aisle import RecClient
    from aisle_server.redis_server import RedisServer
    from aisle_server.state import connect
    from aisle_server.tritonserver import TritonServer

    args.workdir.mkdir(parents=True, exist_ok=True)
    repo, items = resolve_repo(args.repo)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    users = [f"bench-user-{u:06d}" for u in range(args.users)]
    now = time.time()
    histories = shopper_histories(rng, items, args.shoppers, HISTORY_LEN, now)
    state_dir = args.workdir / "state"
    if state_dir.exists():
        shutil.rmtree(state_dir)  # a fresh store each run: the log's length is this run's
    load_before = os.getloadavg()
    log = args.out / "bench_realtime_tritonserver.log"
    with RedisServer(state_dir) as redis_server, TritonServer(repo, log_file=log, state_url=redis_server.url) as server:
        redis = connect(redis_server.url, timeout_s=10)
        config = redis.config_get("append*")
        metrics_url = f"http://{server.host}:{server.metrics_port}/metrics"
        ingest_runs = []
        read_rounds = []
        with RecClient(server.grpc_url, timeout_s=30, recommend_cache_size=0, embed_cache_size=0) as client:
            for user, history in histories.items():
                client.track_many([{"user_id": user, "item_id": i, "event_type": e, "ts": ts} for i, ts, e in history])
            check = same_answers(client, histories, now)
            before_lookups = scrape(metrics_url)
            measure_reads(client, histories, min(50, args.pairs), now)  # warm-up, not kept
            for r in range(args.rounds):
                for phase in INGEST_PHASES:
                    one = {
                        "round": r,
                        **measure_ingest(server.grpc_url, metrics_url, phase, users, items, args.seconds),
                    }
                    ingest_runs.append(one)
                    res = one["result"]
                    print(
                        f"[{stamp()}] round {r} {phase.name}: "
                        f"{one['events_per_s']:,.0f} events/s (accepted {one['accepted_per_s']:,.0f}/s), "
                        f"call p50 {res['p50_ms']:.1f} ms, errors {res['errors']}",
                        flush=True,
                    )
                times = measure_reads(client, histories, args.pairs, now)
                read_rounds.append(times)
                pairs = summarize_pairs([times])
                print(
                    f"[{time.strftime('%H:%M:%S')}] round {r} reads: user_id p50 {pairs['user_id_p50_ms']:.2f} ms, "
                    f"history p50 {pairs['history_p50_ms']:.2f} ms, added {pairs['added_p50_ms']:+.3f} ms",
                    flush=True,
                )
            after_lookups = scrape(metrics_url)
            visibility = measure_catalog_visibility(server.grpc_url, metrics_url, repo, args)
        stream_len = int(redis.xlen("aisle:events"))
        redis_version = redis.info("server").get("redis_version", "?")
    count = series(after_lookups, "aisle_state_lookup_seconds_count") - series(
        before_lookups, "aisle_state_lookup_seconds_count"
    )
    seconds = series(after_lookups, "aisle_state_lookup_seconds_sum") - series(
        before_lookups, "aisle_state_lookup_seconds_sum"
    )
    return {
        "command": command,
        "machine": machine(load_before),
        "repo": str(repo),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "setup": {
            "users": len(users),
            "items": len(items),
            "shoppers": len(histories),
            "redis_version": redis_version,
            "appendonly": config.get("appendonly"),
            "appendfsync": config.get("appendfsync"),
            "stream_len": stream_len,
        },
        "check": check,
        "ingest": summarize_ingest(ingest_runs),
        "ingest_runs": ingest_runs,
        "reads": summarize_pairs(read_rounds),
        "lookup": {"count": count, "mean_ms": seconds / count * 1000.0 if count else float("nan")},
        "catalog_visibility": visibility,
    }
